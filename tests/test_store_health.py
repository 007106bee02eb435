"""A store known not to answer is waited once, not once per primitive (StoreHealth).

Unit tests drive :class:`~tipkit.stores._events.StoreHealth` with a FakeClock
and real threads; the fleet tests put flags, a rollout, a limiter and the
audit log on one RedisStore behind a FaultProxy blackhole.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fault_proxy import FaultProxy
from tests.redis_fixtures import _executable, machine_timeout
from tests.redis_server import RedisServer
from tests.test_outages_safety import until

from tipkit.errors import StoreError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.ratelimit import TokenBucket
from tipkit.rollout import Rollout
from tipkit.stores import RedisStore
from tipkit.stores._durable import flush_all
from tipkit.stores._events import StoreHealth, StoreRecovered, StoreUnavailable
from tipkit.stores._redis_health import Gate
from tipkit.testing import FakeClock, capture_events

PROBE = 0.5


def health() -> tuple[StoreHealth, FakeClock]:
    """A StoreHealth probing every PROBE seconds on a FakeClock."""
    clock = FakeClock()
    return StoreHealth(PROBE, clock=clock), clock


def test_up_admits_every_call_and_other_failures_do_not_mark_it_down() -> None:
    """Up: every call goes; a refused connection (not a timeout) leaves it up."""
    h, _ = health()
    h.failed()
    assert [True, True] == [h.admit(), h.admit()]
    assert h.down is False


def test_a_timeout_refuses_calls_until_one_probe_is_due() -> None:
    """After a timeout: refused for PROBE seconds, then exactly one probe is admitted."""
    h, clock = health()
    cause = TimeoutError("no answer")
    h.timed_out(cause)
    assert (True, cause) == (h.down, h.cause)
    assert [False, False] == [h.admit(), h.admit()]
    clock.advance(PROBE)
    assert [True, False] == [h.admit(), h.admit()]  # one probe, no herd


def test_a_failed_probe_rearms_and_an_answer_ends_the_outage() -> None:
    """A probe that fails waits PROBE again; the first answer admits everyone."""
    h, clock = health()
    h.timed_out(TimeoutError())
    clock.advance(PROBE)
    assert h.admit()
    clock.advance(0.1)
    h.failed()  # refused, say: still down, next probe one interval on
    assert h.admit() is False
    clock.advance(PROBE)
    assert h.admit()
    h.answered()
    assert (False, None) == (h.down, h.cause)
    assert [True, True] == [h.admit(), h.admit()]


def test_a_reply_to_a_call_sent_while_up_reopens_a_store_marked_down() -> None:
    """A late answer ends the outage: the gate must agree with the primitive it served.

    The call was sent while the store was up; another one timed out meanwhile
    (its reply held up, say by a proxy, then let through). Left down, the gate
    would refuse the next call of the primitive that just reported itself
    recovered: a second, spurious outage.
    """
    gate = Gate(PROBE, clock=FakeClock())
    with gate.watching("get", "k"):
        gate.timed_out(TimeoutError("another call"))
        assert gate.down
    assert (False, None) == (gate.down, gate.cause)
    assert [True, True] == [gate.admit(), gate.admit()]


def test_an_error_reply_is_an_answer_whoever_got_it() -> None:
    """A call that gets an error reply (not a timeout) shows the store is up."""
    gate = Gate(PROBE, clock=FakeClock())
    gate.timed_out(TimeoutError("another call"))
    reply = redis.exceptions.ResponseError("CLUSTERDOWN")
    gate.note(StoreError("get 'k' failed").with_traceback(None))  # refused: no cause
    assert gate.down is True
    failed = StoreError("get 'k' failed")
    failed.__cause__ = reply
    gate.note(failed)
    assert gate.down is False


def test_a_probe_that_never_reports_does_not_keep_the_store_refused() -> None:
    """A probe cancelled mid-call holds the slot for 3 intervals, not for good."""
    h, clock = health()
    h.timed_out(TimeoutError())
    clock.advance(PROBE)
    assert h.admit()
    clock.advance(3 * PROBE - 0.001)
    assert h.admit() is False
    clock.advance(0.001)
    assert h.admit()


def test_the_outage_start_is_kept_across_repeated_timeouts() -> None:
    """`since` is the first timeout of an outage, not the latest."""
    h, clock = health()
    clock.advance(1.0)
    h.timed_out(TimeoutError())
    clock.advance(2.0)
    h.timed_out(TimeoutError())
    assert 1.0 == h.since


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "timeout", "failed", "answered"]),
            st.floats(min_value=0.0, max_value=1.0),
        ),
        max_size=60,
    )
)
def test_while_down_admitted_calls_are_at_least_one_interval_apart(
    steps: list[tuple[str, float]],
) -> None:
    """Invariant: between a timeout and an answer, admissions are >= PROBE apart."""
    h, clock = health()
    last: float | None = None  # the last admission while down
    for op, dt in steps:
        clock.advance(dt)
        if op == "admit":
            was_down = h.down
            if h.admit() and was_down:
                now = clock.monotonic()
                assert last is None or now - last >= PROBE - 1e-9
                last = now
        elif op == "timeout":
            h.timed_out(TimeoutError())
        elif op == "failed":
            h.failed()
        else:
            h.answered()
            last = None
        if not h.down:
            last = None


def test_threads_racing_for_a_due_probe_admit_exactly_one() -> None:
    """16 threads at a due probe: one is admitted, 15 refused (no thundering herd)."""
    h, clock = health()
    h.timed_out(TimeoutError())
    clock.advance(PROBE)
    start = threading.Barrier(16)
    admitted: list[bool] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        got = h.admit()
        with lock:
            admitted.append(got)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (1, 15) == (admitted.count(True), admitted.count(False))


# -- one store, several primitives, a real server behind a blackhole -------------------

DOC = {
    "flags": {
        "pricing": {
            "variants": {"new": True, "old": False},
            "off_variant": "old",
            "fallthrough": {"split": {"new": 50, "old": 50}},
        }
    }
}


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """A fault proxy in front of a redis-server of the test's own."""
    with RedisServer(_executable()) as srv, FaultProxy(srv.port) as p:
        yield p


def timed(call: Callable[[], object]) -> float:
    """Seconds *call* took."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_primitives_sharing_a_store_wait_one_timeout_between_them(
    proxy: FaultProxy,
) -> None:
    """Blackhole: rollback + limiter + flags after it: one timeout waited, events per primitive."""
    timeout = machine_timeout(proxy.url, 0.1)
    store = RedisStore(proxy.url, prefix=f"h:{uuid.uuid4().hex[:8]}:", timeout=timeout)
    flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0)
    rollout = Rollout("pricing", flags=flags, stages=[50, 100], min_samples=50)
    bucket = TokenBucket("api", rate=100, capacity=100, store=store)
    assert bucket.try_acquire()
    proxy.set("blackhole")
    with capture_events(StoreUnavailable, StoreRecovered) as events:
        took = timed(lambda: rollout.rollback("drill", actor="oncall"))
        took += timed(bucket.try_acquire)
        took += timed(lambda: flags.kill("pricing"))
        # Three primitives (and the audit log): one timeout, plus a reconnect's.
        assert took < 2 * timeout + 0.5, (took, timeout)
        assert 0.0 == rollout.percent
        assert not flags.is_enabled("pricing", default=True)
        proxy.set("pass")
        back = until(lambda: not rollout.pending() and not flags.pending(), 5.0)
        assert back is not None
        assert until(bucket.try_acquire, 5.0) is not None
    down = sorted(e.component for e in events if isinstance(e, StoreUnavailable))
    up = sorted(e.component for e in events if isinstance(e, StoreRecovered))
    assert ["flags", "ratelimit", "rollout"] == down
    assert ["flags", "ratelimit", "rollout"] == up
    errors = {e.error_type for e in events if isinstance(e, StoreUnavailable)}
    assert {"TimeoutError"} == errors
    store.close()


def test_a_store_known_down_answers_again_within_one_probe(proxy: FaultProxy) -> None:
    """After the blackhole ends, the store answers within one timeout (the probe)."""
    timeout = machine_timeout(proxy.url, 0.1)
    store = RedisStore(proxy.url, prefix=f"h:{uuid.uuid4().hex[:8]}:", timeout=timeout)
    store.set("ns", "k", 1)
    proxy.set("blackhole")
    with pytest.raises(StoreError):
        store.get("ns", "k")
    start = time.perf_counter()
    with pytest.raises(StoreError, match="not tried"):
        store.get("ns", "k")
    assert time.perf_counter() - start < timeout / 2  # no I/O: refused at once
    proxy.set("pass")

    def answered() -> bool:
        try:
            return store.get("ns", "k") is not None
        except StoreError:
            return False

    back = until(answered, 2 * timeout + 1.0)
    assert back is not None
    assert back < 2 * timeout + 0.5, (back, timeout)
    store.close()


def test_a_closed_store_refuses_every_call_at_once_and_work_on_it_stops_reaching_out(
    proxy: FaultProxy,
) -> None:
    """After close(): every call refused without I/O; a pending kill's replay never connects."""
    timeout = machine_timeout(proxy.url, 0.1)
    store = RedisStore(proxy.url, prefix=f"h:{uuid.uuid4().hex[:8]}:", timeout=timeout)
    flags = Flags(InMemoryProvider(DOC), store=store, refresh_interval=0)
    assert flags.is_enabled("pricing", default=False) in (True, False)  # read once
    proxy.set("drop")
    flags.kill("pricing")  # pending: the server resets every connection
    assert 1 == len(flags.pending())
    store.close()
    proxy.set("pass")
    accepted = proxy.accepted
    start = time.perf_counter()
    for call in (
        lambda: store.get("ns", "k"),
        lambda: store.set("ns", "k", 1),
        lambda: store.version("ns"),
        lambda: store.take_tokens("b", 1.0, rate=10.0, capacity=10.0),
    ):
        with pytest.raises(StoreError, match="the store is closed"):
            call()
    assert time.perf_counter() - start < timeout  # no round trip was made
    assert not flags.is_enabled("pricing", default=True)  # the kill still holds here
    flags.refresh()
    assert not flush_all()  # the replay is refused at once: the kill stays pending
    assert 1 == len(flags.pending())
    assert accepted == proxy.accepted  # nothing connected to the server again
