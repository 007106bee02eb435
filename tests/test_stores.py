from __future__ import annotations

import pytest
from tests.store_contract import StoreContract

from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock


class TestMemoryStore(StoreContract):
    """MemoryStore passes the Store contract, with its clock driven by a FakeClock."""

    controls_time = True

    @pytest.fixture
    def store(self) -> MemoryStore:
        self._clock = FakeClock()
        return MemoryStore(clock=self._clock)

    def advance(self, seconds: float) -> None:
        self._clock.advance(seconds)


def test_repr_counts_contents() -> None:
    """The repr shows how much the store holds."""
    store = MemoryStore(clock=FakeClock())
    store.set("a", "k", 1)
    store.increment("c", {"x": 1})
    store.take_tokens("b", 1, rate=1, capacity=5)
    assert repr(store) == "<MemoryStore namespaces=1 counters=1 buckets=1>"


def test_full_bucket_is_forgotten() -> None:
    """A bucket refilled to capacity is dropped: memory stays bounded by busy buckets."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.take_tokens("b", 1, rate=1, capacity=5)
    clock.advance(1)
    store.take_tokens("b", 0, rate=1, capacity=5)
    assert "buckets=0" in repr(store)


def test_clock_going_backwards_refills_nothing() -> None:
    """A clock that steps back refills nothing, and does not move the refill origin back."""

    class Jumpy(FakeClock):
        def monotonic(self) -> float:
            return self.value

    clock = Jumpy()
    clock.value = 100.0
    store = MemoryStore(clock=clock)
    store.take_tokens("b", 5, rate=1, capacity=5)
    clock.value = 50.0
    assert not store.take_tokens("b", 1, rate=1, capacity=5).admitted
    clock.value = 101.0
    assert store.take_tokens("b", 1, rate=1, capacity=5).admitted
    assert not store.take_tokens("b", 1, rate=1, capacity=5).admitted


def test_increment_refuses_non_numbers() -> None:
    """A counter amount that is not a number (or is a bool) raises TypeError naming it."""
    store = MemoryStore()
    with pytest.raises(TypeError, match="c/x"):
        store.increment("c", {"x": "1"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="c/y"):
        store.increment("c", {"y": True})
