"""Breaker windows: value objects, and the live ring and time buckets they build."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tipkit.breaker import CountWindow, TimeWindow


@pytest.mark.parametrize(
    ("make_window", "error", "match"),
    [
        (lambda: CountWindow(0), ValueError, "size must be >= 1"),
        (lambda: CountWindow(2.0), TypeError, "size must be an int"),
        (lambda: TimeWindow(0), ValueError, "seconds must be >= 1"),
        (lambda: TimeWindow(1.5), TypeError, "whole number of seconds"),
        (lambda: TimeWindow(timedelta(milliseconds=1500)), TypeError, "whole number"),
    ],
)
def test_invalid_windows_are_named(make_window, error, match):
    """Window sizes must be positive whole numbers."""
    with pytest.raises(error, match=match):
        make_window()


def test_windows_compare_and_print():
    """Windows are value objects with a readable repr."""
    assert CountWindow(5) == CountWindow(5)
    assert hash(TimeWindow(3)) == hash(TimeWindow(timedelta(seconds=3)))
    assert (
        f"{CountWindow(5)!r} {TimeWindow(3)!r}"
        == "CountWindow(5) TimeWindow(seconds=3)"
    )


def test_count_ring_replaces_the_oldest_outcome():
    """A full ring drops its oldest outcome for each new one."""
    ring = CountWindow(3)._new()
    for failed, slow in ((1, 0), (1, 1), (0, 1)):
        ring.add(0.0, failed, slow)
    assert (ring.calls, ring.failures, ring.slows) == (3, 2, 2)
    ring.add(0.0, 0, 0)  # replaces the oldest outcome: the first failure
    assert (ring.calls, ring.failures, ring.slows) == (3, 1, 2)


def test_count_ring_add_success_returns_the_code_it_replaced():
    """add_success returns 0 for a new slot, else the outcome it overwrote."""
    ring = CountWindow(2)._new()
    ring.add(0.0, 1, 1)
    replaced = [ring.add_success(), ring.add_success(), ring.add_success()]
    assert replaced == [0, 4 | 1 | 2, 4]
    assert (ring.calls, ring.failures, ring.slows) == (2, 0, 0)


def test_count_ring_add_successes_folds_many_at_once():
    """Folding n successes equals adding them one by one, and saturates at the size."""
    one_by_one, folded = CountWindow(4)._new(), CountWindow(4)._new()
    for ring in (one_by_one, folded):
        ring.add(0.0, 1, 0)
        ring.add(0.0, 1, 1)
    for _ in range(3):
        one_by_one.add_success()
    folded.add_successes(3)
    assert (one_by_one.calls, one_by_one.failures, one_by_one.slows) == (
        folded.calls,
        folded.failures,
        folded.slows,
    )
    folded.add_successes(100)
    assert (folded.calls, folded.failures, folded.slows) == (4, 0, 0)


def test_time_buckets_expire_whole_seconds():
    """A time window holds the current partial second and the seconds - 1 before it."""
    window = TimeWindow(3)._new()
    window.add(0.2, 1, 0)
    window.add(1.5, 0, 1)
    window.add(2.9, 0, 0)
    assert (window.calls, window.failures, window.slows) == (3, 1, 1)
    window.expire(3.0)  # second 0 leaves
    assert (window.calls, window.failures, window.slows) == (2, 0, 1)
    window.expire(3.99)  # still second 3: nothing more leaves
    assert window.calls == 2
    window.expire(100.0)
    assert (window.calls, window.failures, window.slows) == (0, 0, 0)


def test_clear_empties_both_windows():
    """clear() forgets every outcome."""
    ring, buckets = CountWindow(2)._new(), TimeWindow(2)._new()
    for window in (ring, buckets):
        window.add(0.0, 1, 1)
        window.clear()
    assert [(w.calls, w.failures, w.slows) for w in (ring, buckets)] == [(0, 0, 0)] * 2
