"""A thread-safe LRU cache bounded in bytes, with single-flight computation of missing entries."""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Dict, Generic, Hashable, TypeVar

V = TypeVar("V")


class ByteLRUCache(Generic[V]):
    """Maps keys to values whose ``nbytes`` attribute counts their memory.

    Guarantees: the bytes held never exceed ``max_bytes`` (a value larger than the whole budget is returned to its
    callers but not kept); least recently used entries are evicted first; concurrent ``get_or_compute`` calls for the
    same missing key run ``compute`` once and all receive its value or its exception (exceptions are not cached).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: "OrderedDict[Hashable, V]" = OrderedDict()
        self._sizes: Dict[Hashable, int] = {}
        self._inflight: Dict[Hashable, Future] = {}
        self._bytes = 0
        self._counts = {"hits": 0, "misses": 0, "waits": 0, "computations": 0, "failures": 0,
                        "evictions": 0, "too_large": 0, "clears": 0}

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value for ``key``, or ``compute()``'s result (computed once however many threads ask)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._counts["hits"] += 1
                return self._entries[key]
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._inflight[key] = future
                self._counts["misses"] += 1
                self._counts["computations"] += 1
            else:
                self._counts["waits"] += 1
        if not owner:
            return future.result()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
                self._counts["failures"] += 1
            future.set_exception(exc)
            raise
        with self._lock:
            del self._inflight[key]
            self._store(key, value)
        future.set_result(value)
        return value

    def _store(self, key: Hashable, value: V) -> None:
        size = int(value.nbytes)
        if size > self.max_bytes:
            self._counts["too_large"] += 1
            return
        self._entries[key] = value
        self._sizes[key] = size
        self._bytes += size
        self._evict()

    def _evict(self) -> None:
        """Drop least recently used entries until the budget holds (the newest one last of all)."""
        while self._bytes > self.max_bytes:
            old_key, _ = self._entries.popitem(last=False)
            self._bytes -= self._sizes.pop(old_key)
            self._counts["evictions"] += 1

    def remeasure(self, key: Hashable) -> None:
        """Re-read the entry's ``nbytes`` (it may have grown), mark it recently used, and evict to fit."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                return
            size = int(value.nbytes)
            self._bytes += size - self._sizes[key]
            self._sizes[key] = size
            self._entries.move_to_end(key)
            self._evict()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        """Drop every entry (computations in flight still finish and are stored)."""
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._bytes = 0
            self._counts["clears"] += 1

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "inflight": len(self._inflight), **self._counts}
