"""Thread-safe request/stage counters and latency summaries for ``GET /metrics`` (per worker process)."""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Deque, Dict, Optional

import numpy as np

_WINDOW = 512  #: latency percentiles are over the latest this many observations per name


class _Series:
    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.status: Counter = Counter()
        self.total = 0.0
        self.max = 0.0
        self.recent: Deque[float] = deque(maxlen=_WINDOW)

    def snapshot(self) -> Dict[str, object]:
        recent = np.asarray(self.recent, dtype=np.float64)
        p50, p95 = (np.percentile(recent, [50, 95]) if recent.size else (0.0, 0.0))
        out: Dict[str, object] = {
            "count": self.count, "seconds_total": round(self.total, 6), "seconds_max": round(self.max, 6),
            "seconds_mean": round(self.total / self.count, 6) if self.count else 0.0,
            "seconds_p50": round(float(p50), 6), "seconds_p95": round(float(p95), 6)}
        if self.status:
            out["errors"] = self.errors
            out["status"] = {str(k): v for k, v in sorted(self.status.items())}
        return out


class LatencyStats:
    """Counts and latency summaries (mean, max, p50/p95 of the latest 512) per name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: Dict[str, _Series] = {}

    def observe(self, name: str, seconds: float, status: Optional[int] = None) -> None:
        with self._lock:
            s = self._series.setdefault(name, _Series())
            s.count += 1
            s.total += seconds
            s.max = max(s.max, seconds)
            s.recent.append(seconds)
            if status is not None:
                s.status[status] += 1
                s.errors += status >= 400

    def snapshot(self) -> Dict[str, Dict[str, object]]:
        with self._lock:
            return {name: s.snapshot() for name, s in sorted(self._series.items())}
