"""The byte-bounded LRU cache with single-flight computation."""
import threading
import time
from dataclasses import dataclass

import pytest

from backend.cache import ByteLRUCache


@dataclass
class Blob:
    nbytes: int
    tag: str = ""


def test_evicts_least_recently_used_by_bytes():
    cache = ByteLRUCache(100)
    for key in "abc":
        cache.get_or_compute(key, lambda k=key: Blob(40, k))
    assert "a" not in cache and "b" in cache and "c" in cache       # a evicted: 120 > 100
    cache.get_or_compute("b", lambda: Blob(40))                    # b becomes most recent
    cache.get_or_compute("d", lambda: Blob(40, "d"))
    assert "c" not in cache and "b" in cache and "d" in cache
    stats = cache.stats()
    assert stats["bytes"] == 80 and stats["evictions"] == 2 and stats["hits"] == 1


def test_recomputes_after_eviction():
    cache, calls = ByteLRUCache(50), []
    compute = lambda: calls.append(1) or Blob(30)  # noqa: E731
    cache.get_or_compute("a", compute)
    cache.get_or_compute("b", lambda: Blob(30))
    cache.get_or_compute("a", compute)
    assert len(calls) == 2


def test_value_larger_than_budget_is_returned_not_kept():
    cache = ByteLRUCache(10)
    assert cache.get_or_compute("big", lambda: Blob(11, "x")).tag == "x"
    assert "big" not in cache and cache.stats()["too_large"] == 1 and cache.stats()["bytes"] == 0


def test_single_flight_runs_one_computation_for_concurrent_callers():
    cache, calls, gate = ByteLRUCache(1000), [], threading.Event()

    def compute():
        calls.append(1)
        gate.wait(5)
        return Blob(10, "v")

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute))) for _ in range(8)]
    for t in threads:
        t.start()
    while cache.stats()["waits"] < 7:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)


def test_failure_reaches_every_waiter_and_is_not_cached():
    cache, gate = ByteLRUCache(1000), threading.Event()

    def fail():
        gate.wait(5)
        raise RuntimeError("boom")

    errors = []

    def call():
        try:
            cache.get_or_compute("k", fail)
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    while cache.stats()["waits"] < 3:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(5)
    assert errors == ["boom"] * 4
    assert cache.get_or_compute("k", lambda: Blob(1, "ok")).tag == "ok"
    assert cache.stats()["failures"] == 1


def test_clear_drops_everything():
    cache = ByteLRUCache(100)
    cache.get_or_compute("a", lambda: Blob(10))
    cache.clear()
    assert "a" not in cache and cache.stats()["bytes"] == 0


def test_rejects_non_positive_budget():
    with pytest.raises(ValueError):
        ByteLRUCache(0)


def test_remeasure_accounts_for_growth_and_evicts_older_entries():
    cache = ByteLRUCache(100)
    a = cache.get_or_compute("a", lambda: Blob(30))
    b = cache.get_or_compute("b", lambda: Blob(30))
    b.nbytes = 80
    cache.remeasure("b")
    assert "a" not in cache and "b" in cache and cache.stats()["bytes"] == 80
    b.nbytes = 120
    cache.remeasure("b")
    assert "b" not in cache and cache.stats()["bytes"] == 0 and a.nbytes == 30
