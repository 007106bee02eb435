"""Retry budgets: the bound over any arrival sequence, every retry face, the fleet."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.test_async_store_paths import AsyncOnlyStore
from tests.test_retry import WAYS, Flaky, Way

from tipkit.errors import ConfigError, StoreError
from tipkit.experiment import irreversible
from tipkit.retry import RetryBudget, RetryGaveUp, retry
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock, capture_events

EPS = 1e-6

# A run: each event is a first attempt, a retry request, or time passing.
events = st.lists(
    st.one_of(
        st.tuples(st.just("first"), st.integers(1, 30)),
        st.tuples(st.just("retry"), st.integers(1, 30)),
        st.tuples(st.just("advance"), st.floats(0, 4, allow_nan=False)),
    ),
    max_size=80,
)


@given(
    run=events,
    ratio=st.sampled_from([0.0, 0.05, 0.1, 0.5, 1.0]),
    floor=st.sampled_from([0.0, 0.5, 2.0, 10.0]),
    window=st.sampled_from([1.0, 2.5, 10.0]),
)
def test_retries_stay_within_ratio_of_first_attempts_plus_floor(
    run: list[tuple[str, float]], ratio: float, floor: float, window: float
) -> None:
    """Over any run: retries <= ratio x firsts + floor x (elapsed + window); per window too."""
    clock = FakeClock()
    budget = RetryBudget(ratio=ratio, min_per_second=floor, window=window, clock=clock)
    width = window / 10
    firsts: list[float] = []
    retries: list[float] = []
    for kind, n in run:
        if kind == "advance":
            clock.advance(n)
            continue
        for _ in range(int(n)):
            now = clock.monotonic()
            if kind == "first":
                budget.record_first(now)
                firsts.append(now)
            elif budget.try_retry(now):
                retries.append(now)
    elapsed = clock.monotonic()
    assert len(retries) <= ratio * len(firsts) + floor * (elapsed + window) + EPS
    for t in retries:
        in_window = sum(1 for r in retries if t - (window - width) < r <= t)
        firsts_before = sum(1 for f in firsts if t - window < f <= t)
        assert in_window <= ratio * firsts_before + floor * window + EPS


def test_a_dead_dependency_gets_at_most_ratio_more_load(clock: FakeClock) -> None:
    """At 100% failure, a 3-attempt retry adds ~ratio x first attempts, not 2x."""
    budget = RetryBudget(ratio=0.1, min_per_second=0, window=10, clock=clock)
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        clock.advance(0.01)
        raise ConnectionError

    policy = retry(
        on=ConnectionError, attempts=3, budget=budget, clock=clock, wait_jitter=0
    )
    for _ in range(1000):
        with pytest.raises(ConnectionError):
            policy(down)()
    assert 1000 + 100 + 1 >= calls
    assert calls >= 1000 + 90


@pytest.mark.parametrize("way", WAYS, indirect=False)
def test_every_retry_face_spends_and_respects_the_budget(
    way: str, clock: FakeClock
) -> None:
    """Each way: a spent budget raises the original error at once, evented, unslept."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10, clock=clock)
    # The floor allows one retry in the window (0.1/s x 10 s).
    flaky = Flaky(ConnectionError("a"), clock=clock)
    assert "ok" == Way(way).run(
        flaky, on=ConnectionError, budget=budget, clock=clock, wait_jitter=0
    )
    assert 2 == flaky.calls
    sleeps_before = list(clock.sleeps)
    error = ConnectionError("b")
    with capture_events(RetryGaveUp) as seen, pytest.raises(ConnectionError) as info:
        Way(way).run(
            Flaky(error, clock=clock),
            on=ConnectionError,
            budget=budget,
            clock=clock,
        )
    assert error is info.value
    assert sleeps_before == clock.sleeps
    assert ["budget"] == [e.reason for e in seen]
    assert 1 == budget.denied


def test_the_budget_is_shared_by_every_policy_naming_it(clock: FakeClock) -> None:
    """Two policies, one budget: the second finds it spent by the first."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10, clock=clock)
    a = retry(on=ConnectionError, budget=budget, clock=clock, wait_jitter=0)
    b = retry(on=ConnectionError, budget=budget, clock=clock, wait_jitter=0)
    assert "ok" == a(Flaky(ConnectionError()))()
    with pytest.raises(ConnectionError):
        b(Flaky(ConnectionError()))()


def test_the_floor_refills_with_time(clock: FakeClock) -> None:
    """The floor's retries come back once the window has moved past the spent ones."""
    budget = RetryBudget(ratio=0.0, min_per_second=1, window=2, clock=clock)
    assert [True, True, False] == [budget.try_retry(0.0) for _ in range(3)]
    assert [False] == [budget.try_retry(1.0)]  # the window still holds two
    assert [True, True, False] == [budget.try_retry(2.0) for _ in range(3)]


def test_threads_never_overspend(clock: FakeClock) -> None:
    """Many threads racing for retries get exactly what the budget holds."""
    budget = RetryBudget(ratio=0.5, min_per_second=0, window=10, clock=clock)
    for _ in range(100):
        budget.record_first(0.0)
    barrier = threading.Barrier(8)
    got: list[bool] = []

    def worker() -> None:
        barrier.wait()
        got.extend(budget.try_retry(0.0) for _ in range(20))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 50 == sum(got)


def test_a_fleet_shares_the_window_through_a_store(clock: FakeClock) -> None:
    """Two processes' budgets see each other's first attempts and retries."""
    store = MemoryStore(clock=clock)
    a = RetryBudget(
        "fleet", ratio=0.1, min_per_second=0, window=10, store=store, clock=clock
    )
    b = RetryBudget(
        "fleet", ratio=0.1, min_per_second=0, window=10, store=store, clock=clock
    )
    for _ in range(100):
        a.record_first(0.0)
        b.record_first(0.0)
    a.exchange_if_due(0.0)
    b.exchange_if_due(0.0)
    # b alone holds a balance of 10; the fleet's window allows 20 in all.
    assert 10 == sum(b.try_retry(0.0) for _ in range(15))
    clock.advance(1.0)
    a.exchange_if_due(1.0)
    assert 10 == sum(a.try_retry(1.0) for _ in range(15))
    a.exchange_if_due(2.0)
    b.exchange_if_due(2.0)
    assert {"firsts": 100.0, "retries": 10.0} == {
        "firsts": b._fleet.firsts,  # type: ignore[union-attr]  # store given
        "retries": b._fleet.retries,  # type: ignore[union-attr]
    }


def test_async_retries_exchange_through_the_store_async_methods(
    clock: FakeClock,
) -> None:
    """An async retry with a fleet budget awaits aincrement, never increment."""
    inner = MemoryStore(clock=clock)
    store = AsyncOnlyStore(inner)
    budget = RetryBudget(
        "fleet-async",
        ratio=0.0,
        min_per_second=1,
        window=10,
        store=store,
        clock=clock,
    )
    flaky = Flaky(ConnectionError())

    async def work() -> str:
        return flaky()

    assert "ok" == asyncio.run(
        retry(on=ConnectionError, budget=budget, clock=clock)(work)()
    )
    assert [] == store.sync_on_loop
    assert ["aincrement"] == store.async_calls
    assert {"f0": 1.0} == inner.counters("tipkit:retry_budget:fleet-async:0")


def test_bad_arguments_are_named() -> None:
    """Invalid budgets say which argument is wrong."""
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=-1)
    with pytest.raises(ValueError, match="window"):
        RetryBudget(window=0)
    with pytest.raises(TypeError, match="budget"):
        retry(on=ConnectionError, budget=0.1)  # type: ignore[arg-type]  # the wrong type on purpose


def test_repr_shows_configuration_and_denials(clock: FakeClock) -> None:
    """The repr names the budget, its configuration and refusals."""
    budget = RetryBudget("api", min_per_second=0, clock=clock)
    budget.try_retry(0.0)
    assert "<RetryBudget 'api' ratio=0.1 min_per_second=0 window=10s denied=1>" == repr(
        budget
    )


# -- irreversible functions -----------------------------------------------------------------
@irreversible(reason="charges a card")
def charge(amount: int, key: str = "") -> str:
    return f"charged {amount} {key}"


def test_retry_refuses_an_irreversible_function() -> None:
    """retry() on an @irreversible function is a ConfigError naming the ways out."""
    with pytest.raises(
        ConfigError, match=r"charges a card.*compensate=.*idempotency_key="
    ):
        retry(on=ConnectionError)(charge)
    with pytest.raises(ConfigError):
        retry(on=ConnectionError).call(charge, 1)


def test_an_idempotency_key_or_compensation_makes_it_retriable() -> None:
    """Naming the key's parameter, or a compensation, lets retry wrap it."""
    assert "charged 1 k" == retry(on=ConnectionError, idempotency_key="key")(charge)(
        1, key="k"
    )
    assert "charged 2 " == retry(on=ConnectionError, compensate=print)(charge)(2)
    with pytest.raises(TypeError, match="names no parameter"):
        retry(on=ConnectionError, idempotency_key="nope")(charge)


def test_compensate_runs_after_each_failed_attempt(clock: FakeClock) -> None:
    """compensate(exc) undoes each failed attempt before the next one."""
    undone: list[str] = []
    flaky = Flaky(ConnectionError("1"), ConnectionError("2"))
    policy = retry(
        on=ConnectionError, compensate=lambda e: undone.append(str(e)), clock=clock
    )
    assert "ok" == policy(flaky)()
    assert ["1", "2"] == undone


def test_a_failing_compensation_stops_retrying(clock: FakeClock) -> None:
    """If the undo fails, the attempt is not repeated: its error is raised."""

    def undo(exc: Exception) -> None:
        raise RuntimeError("cannot undo")

    flaky = Flaky(ConnectionError("1"))
    with pytest.raises(RuntimeError, match="cannot undo"):
        retry(on=ConnectionError, compensate=undo, clock=clock)(flaky)()
    assert 1 == flaky.calls


class _FlakyCounters(MemoryStore):
    """A MemoryStore whose increment and aincrement raise StoreError while down."""

    down = False

    def increment(self, key, amounts, *, ttl=None):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreError("down")
        return super().increment(key, amounts, ttl=ttl)

    async def aincrement(self, key, amounts, *, ttl=None):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreError("down")
        return await super().aincrement(key, amounts, ttl=ttl)


@pytest.mark.parametrize("way", ["sync", "async"])
def test_a_failing_store_keeps_the_last_fleet_counts_and_resends(
    clock: FakeClock, way: str
) -> None:
    """A store failure keeps the last fleet counts, raises nothing, and resends later."""
    store = _FlakyCounters(clock=clock)
    other = RetryBudget("f", ratio=0.1, window=10, store=store, clock=clock)
    mine = RetryBudget("f", ratio=0.1, window=10, store=store, clock=clock)

    def exchange(budget: RetryBudget, now: float) -> None:
        if way == "sync":
            budget.exchange_if_due(now)
        else:
            asyncio.run(budget.aexchange_if_due(now))

    for _ in range(10):
        other.record_first(0.0)
    exchange(other, 0.0)
    exchange(mine, 0.0)
    store.down = True
    for _ in range(5):
        other.record_first(0.0)
    exchange(other, 1.0)
    exchange(mine, 1.0)
    seen_down = mine._fleet.firsts  # type: ignore[union-attr]  # store given
    store.down = False
    exchange(other, 2.0)
    exchange(mine, 2.0)
    assert (10.0, 15.0) == (seen_down, mine._fleet.firsts)  # type: ignore[union-attr]
