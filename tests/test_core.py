"""The guard core: every face over one pure decision, compose, waiters, deadlines."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
from tests.conftest import Face

from tipkit import DeadlineExceededError, RejectedError, compose
from tipkit._core import _deadline, _keyed, _scope
from tipkit._core._guard import Guard, Wait, Waiter
from tipkit.clock import SYSTEM_CLOCK
from tipkit.deadline import deadline
from tipkit.testing import FakeClock


async def _nothing() -> None:
    return None


class Recorder(Guard[int]):
    """A test guard: waits `waits` times for 1.5 s each, then admits with a fresh ticket."""

    def __init__(self, clock: Any, *, waits: int = 0, reject: bool = False) -> None:
        super().__init__(clock=clock)
        self.waits = waits
        self.reject = reject
        self.tickets = itertools.count(1)
        self.lock = threading.Lock()
        self.issued: list[int] = []
        self.released: list[tuple[int, BaseException | None, float]] = []
        self.abandoned: list[Any] = []

    def _step(self, now: float, pending: Wait | None) -> int | Wait:
        if self.reject:
            raise RejectedError("no", name="rec")
        done = 0 if pending is None else pending.state
        if done < self.waits:
            return Wait(1.5, state=done + 1)
        with self.lock:
            ticket = next(self.tickets)
            self.issued.append(ticket)
        return ticket

    def _release(self, ticket: int, error: BaseException | None, now: float) -> None:
        with self.lock:
            self.released.append((ticket, error, now))

    def _abandon(self, pending: Wait, now: float) -> None:
        self.abandoned.append(pending.state)

    def __repr__(self) -> str:
        return "<Recorder>"


def test_face_returns_result_and_releases(face: Face, clock: FakeClock) -> None:
    """Every face runs the work, returns its result and releases the ticket once."""
    guard = Recorder(clock)
    assert face.run(guard, lambda x, y=0: x + y, 2, y=3) == 5
    assert [(t, e) for t, e, _ in guard.released] == [(1, None)]


def test_face_passes_exception_unchanged(face: Face, clock: FakeClock) -> None:
    """An exception leaves the face unchanged (same object) and reaches _release."""
    guard = Recorder(clock)
    boom = KeyError("boom")
    boom.__cause__ = OSError("root")

    def fail() -> None:
        raise boom

    with pytest.raises(KeyError) as info:
        face.run(guard, fail)
    assert info.value is boom
    assert info.value.__cause__ is boom.__cause__
    assert guard.released[0][1] is boom


def test_face_honours_wait_through_clock(face: Face, clock: FakeClock) -> None:
    """A Wait is slept through the injected clock (recorded, never real) and re-stepped."""
    guard = Recorder(clock, waits=2)
    assert face.run(guard, lambda: "ok") == "ok"
    assert clock.sleeps == [1.5, 1.5]
    assert guard.released[0][2] == 3.0


def test_face_rejection_runs_nothing(face: Face, clock: FakeClock) -> None:
    """A guard that raises in _step never runs the work and releases nothing."""
    guard = Recorder(clock, reject=True)
    ran = []
    with pytest.raises(RejectedError):
        face.run(guard, lambda: ran.append(1))
    assert ran == []
    assert guard.released == []


def test_with_binds_entered_value(clock: FakeClock) -> None:
    """`with guard as x` binds whatever _entered returns (None by default)."""
    guard = Recorder(clock)
    with guard as value:
        assert value is None


def test_decorator_keeps_metadata(clock: FakeClock) -> None:
    """The decorator keeps the function's name, docstring and wrapped reference."""
    guard = Recorder(clock)

    def work(a: int) -> int:
        """Do work."""
        return a

    async def awork(a: int) -> int:
        """Do async work."""
        return a

    for fn in (work, awork):
        wrapped = guard(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__doc__ == fn.__doc__
        assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
    assert asyncio.iscoroutinefunction(guard(awork))


@pytest.mark.parametrize("kind", ["generator", "async generator"])
def test_generator_functions_are_refused(clock: FakeClock, kind: str) -> None:
    """Decorating a generator function fails at decoration time, pointing to `with`."""

    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="Use a `with` block"):
        Recorder(clock)(gen if kind == "generator" else agen)


def test_non_callable_is_refused(clock: FakeClock) -> None:
    """Decorating something that is not callable is a TypeError naming it."""
    with pytest.raises(TypeError, match="decorates callables"):
        Recorder(clock)(42)  # type: ignore[call-overload]


def test_bad_clock_is_refused() -> None:
    """A clock without the Clock methods is refused at construction."""
    with pytest.raises(TypeError, match="clock must provide"):
        Recorder(object())


def test_shared_guard_from_threads_and_tasks(clock: FakeClock) -> None:
    """8 threads and 100 tasks share one guard: each ticket released once, none crossed."""
    guard = Recorder(clock)
    barrier = threading.Barrier(8)
    seen: list[tuple[int, int]] = []
    seen_lock = threading.Lock()

    def thread_work() -> None:
        barrier.wait()
        for _ in range(200):
            with guard:
                # Our own ticket must be on top of our own context's stack.
                node = _scope.top()
                assert node is not None
                ticket = node[1]
                with seen_lock:
                    seen.append((threading.get_ident(), ticket))  # type: ignore[arg-type]

    threads = [threading.Thread(target=thread_work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def task_work(i: int) -> None:
        for _ in range(5):
            async with guard:
                await asyncio.sleep(0)  # noqa: TID251  # interleave tasks; waits for nothing
                await guard.acall(_nothing)

    async def main() -> None:
        await asyncio.gather(*(task_work(i) for i in range(100)))

    asyncio.run(main())
    released = [t for t, _, _ in guard.released]
    assert sorted(released) == sorted(guard.issued)
    assert len(set(released)) == len(released) == 8 * 200 + 100 * 5 * 2
    assert len({t for _, t in seen}) == 8 * 200


def test_exit_without_enter_is_an_error(clock: FakeClock) -> None:
    """Exiting a guard never entered in this context raises RuntimeError."""
    with pytest.raises(RuntimeError, match="without a matching enter"):
        Recorder(clock).__exit__(None, None, None)


def test_nested_with_releases_the_right_ticket(clock: FakeClock) -> None:
    """Re-entering the same guard nests: inner exit releases the inner ticket."""
    guard = Recorder(clock)
    with guard:
        with guard:
            pass
        assert [t for t, _, _ in guard.released] == [2]
    assert [t for t, _, _ in guard.released] == [2, 1]


# -- waits, cancellation and deadlines -------------------------------------------------
def test_cancelled_wait_is_abandoned(clock: FakeClock) -> None:
    """A task cancelled while waiting gives its reservation back through _abandon."""

    class Blocking(Recorder):
        def _step(self, now: float, pending: Wait | None) -> int | Wait:
            return Wait(10, waiter=Waiter(), state="reserved")

    guard = Blocking(SYSTEM_CLOCK)

    async def main() -> None:
        task = asyncio.ensure_future(guard.acall(_nothing))
        await asyncio.sleep(0)  # noqa: TID251  # let the task start waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert guard.abandoned == ["reserved"]


def test_waiter_wakes_a_sync_waiter_from_another_thread() -> None:
    """notify() from another thread wakes a blocked sync wait at once."""
    waiter = Waiter()
    started = threading.Event()
    result: list[bool] = []

    def wait() -> None:
        started.set()
        result.append(waiter.wait_sync(30, SYSTEM_CLOCK))

    thread = threading.Thread(target=wait)
    thread.start()
    started.wait()
    waiter.notify()
    thread.join(10)
    assert result == [True]


def test_waiter_wakes_an_async_waiter_from_another_thread() -> None:
    """notify() from a thread wakes a task waiting on its own loop."""

    async def main() -> bool:
        waiter = Waiter()
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: threading.Thread(target=waiter.notify).start())
        return await waiter.wait_async(30, SYSTEM_CLOCK)

    assert asyncio.run(main()) is True


def test_waiter_notified_before_wait_returns_at_once(clock: FakeClock) -> None:
    """A waiter notified before anyone waits is already done, sync and async."""
    waiter = Waiter()
    waiter.notify()
    waiter.notify()
    assert waiter.wait_sync(5, clock)
    assert asyncio.run(waiter.wait_async(5, clock))
    assert clock.waits == []


def test_waiter_timeout_on_fake_clock(clock: FakeClock) -> None:
    """An unnotified waiter on a FakeClock times out at once, advancing the clock."""
    assert Waiter().wait_sync(2, clock) is False
    assert asyncio.run(Waiter().wait_async(3, clock)) is False
    assert clock.waits == [2, 3]
    assert clock.monotonic() == 5


def test_waiter_on_a_clock_without_event_support() -> None:
    """A clock without wait_event/await_future gets a plain sleep of the timeout."""

    class Minimal:
        def __init__(self) -> None:
            self.slept: list[float] = []

        def monotonic(self) -> float:
            return 0.0

        def time(self) -> float:
            return 0.0

        def sleep(self, seconds: float) -> None:
            self.slept.append(seconds)

        async def asleep(self, seconds: float) -> None:
            self.slept.append(seconds)

    minimal = Minimal()
    assert Waiter().wait_sync(1, minimal) is False
    assert asyncio.run(Waiter().wait_async(2, minimal)) is False
    assert minimal.slept == [1, 2]


def _within(clock: FakeClock, seconds: float) -> Any:
    return deadline(seconds, name="t", clock=clock)


def test_expired_deadline_admits_nothing(face: Face, clock: FakeClock) -> None:
    """No face admits a call once the current deadline has passed."""
    guard = Recorder(clock)
    with _within(clock, 1):
        clock.advance(2)
        with pytest.raises(DeadlineExceededError, match="deadline of 1"):
            face.run(guard, lambda: None)
    assert guard.issued == []


def test_wait_past_deadline_fails_without_waiting(face: Face, clock: FakeClock) -> None:
    """A plain wait that would end after the deadline fails at once and is abandoned."""
    guard = Recorder(clock, waits=1)
    with _within(clock, 1), pytest.raises(DeadlineExceededError):
        face.run(guard, lambda: None)
    assert clock.sleeps == []
    assert guard.abandoned == [1]


def test_waiter_wait_is_capped_by_deadline(clock: FakeClock) -> None:
    """A wait on a waiter is shortened to the deadline, then fails and is abandoned."""

    class Blocking(Recorder):
        def _step(self, now: float, pending: Wait | None) -> int | Wait:
            return Wait(10, waiter=Waiter(), state="slot")

    guard = Blocking(clock)
    with _within(clock, 2), pytest.raises(DeadlineExceededError):
        guard.call(lambda: None)
    assert clock.waits == [2]
    assert guard.abandoned == ["slot"]


def test_wait_within_deadline_proceeds(clock: FakeClock) -> None:
    """A wait that fits in the deadline is taken and the call admitted."""
    guard = Recorder(clock, waits=1)
    with _within(clock, 5):
        assert guard.call(lambda: 7) == 7
    assert clock.sleeps == [1.5]


def test_wait_repr() -> None:
    """Wait shows its seconds, waiter and state."""
    assert repr(Wait(1.0, state=3)) == "<Wait 1.0s waiter=False state=3>"


# -- compose ---------------------------------------------------------------------------
class Tag(Recorder):
    """A guard that logs its enter/exit order into a shared list."""

    def __init__(self, clock: Any, tag: str, log: list[str]) -> None:
        super().__init__(clock)
        self.tag = tag
        self.log = log

    def _step(self, now: float, pending: Wait | None) -> int | Wait:
        self.log.append(f"+{self.tag}")
        return 0

    def _release(self, ticket: int, error: BaseException | None, now: float) -> None:
        self.log.append(f"-{self.tag}")

    def __repr__(self) -> str:
        return f"<Tag {self.tag}>"


def test_compose_order_matches_nesting(face: Face, clock: FakeClock) -> None:
    """compose(a, b)(f) == a(b(f)) through every face: a enters first and exits last."""
    log: list[str] = []
    a, b = Tag(clock, "a", log), Tag(clock, "b", log)
    assert face.run(compose(a, b), lambda: log.append("f") or 1) == 1
    assert log == ["+a", "+b", "f", "-b", "-a"]


def test_compose_flattens_and_reprs(clock: FakeClock) -> None:
    """Nested composites flatten; the repr lists the parts in order."""
    log: list[str] = []
    a, b, c = (Tag(clock, t, log) for t in "abc")
    combined = compose(compose(a, b), c)
    assert combined.guards == (a, b, c)
    assert repr(combined) == "<compose <Tag a>, <Tag b>, <Tag c>>"


def test_compose_refuses_with_when_a_part_reruns(clock: FakeClock) -> None:
    """A composite containing a re-running guard refuses `with`, pointing to retry_context."""

    class Rerunning(Recorder):
        _reruns = True

    combined = compose(Recorder(clock), Rerunning(clock))
    with pytest.raises(TypeError, match="retry_context"), combined:
        pass

    async def main() -> None:
        async with combined:
            pass

    with pytest.raises(TypeError, match="retry_context"):
        asyncio.run(main())
    assert combined.call(lambda: 3) == 3


def test_compose_with_unwinds_when_inner_rejects(clock: FakeClock) -> None:
    """If an inner guard rejects on enter, the outer one is released again."""
    outer = Recorder(clock)
    inner = Recorder(clock, reject=True)
    with pytest.raises(RejectedError), compose(outer, inner):
        pass
    assert len(outer.released) == 1
    assert isinstance(outer.released[0][1], RejectedError)


def test_compose_argument_errors(clock: FakeClock) -> None:
    """compose() needs guards; a non-guard argument is named by position."""
    with pytest.raises(TypeError, match="at least one"):
        compose()
    with pytest.raises(TypeError, match="argument 1"):
        compose(Recorder(clock), 3)
    with pytest.raises(TypeError, match="context manager"), compose(lambda f: f):
        pass


def test_compose_call_refuses_coroutine_function(clock: FakeClock) -> None:
    """compose().call with an async function points to acall."""

    async def work() -> None:
        return None

    with pytest.raises(TypeError, match="acall"):
        compose(Recorder(clock)).call(work)  # type: ignore[arg-type]


def test_composite_exit_without_enter(clock: FakeClock) -> None:
    """Exiting a composite never entered raises RuntimeError."""
    with pytest.raises(RuntimeError, match="without a matching enter"):
        compose(Recorder(clock)).__exit__(None, None, None)


def test_out_of_order_exit_releases_the_right_ticket(clock: FakeClock) -> None:
    """Exiting an outer guard before an inner one still releases each its own ticket."""
    outer, inner = Recorder(clock), Recorder(clock)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    assert [t for t, _, _ in outer.released] == [1]
    assert [t for t, _, _ in inner.released] == [1]


def test_entered_hook_binds_value(clock: FakeClock) -> None:
    """A guard defining _entered(ticket) binds its result in `with ... as x`."""

    class Binding(Recorder):
        def _entered(self, ticket: int) -> str:
            return f"ticket-{ticket}"

    guard = Binding(clock)
    with guard as bound:
        assert bound == "ticket-1"

    async def main() -> None:
        async with guard as abound:
            assert abound == "ticket-2"

    asyncio.run(main())


# -- fast-path hooks ------------------------------------------------------------------


class CountingClock(FakeClock):
    """A fake clock that counts monotonic() reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return super().monotonic()


class Hooked(Recorder):
    """A Recorder with fast hooks: admits fast while `open`, releases fast if `quick`."""

    def __init__(self, clock: Any, *, open_: bool = True, quick: bool = True) -> None:
        super().__init__(clock)
        self.open = open_
        self.quick = quick
        self.fast_released: list[Any] = []
        self.steps = 0

    def _step(self, now: float, pending: Wait | None) -> int | Wait:
        self.steps += 1
        return super()._step(now, pending)

    def _fast_admit(self) -> int | None:
        return -1 if self.open else None

    def _fast_release(self, ticket: int) -> bool:
        if not self.quick:
            return False
        self.fast_released.append(ticket)
        return True


class ReadsTicket(Hooked):
    """The attribute variant: the decorator reads `_fast_ticket` inline."""

    _fast_reads_ticket = True

    def __init__(self, clock: Any, ticket: int | None) -> None:
        super().__init__(clock)
        self._fast_ticket = ticket

    def _fast_admit(self) -> int | None:
        raise AssertionError("the attribute variant never calls _fast_admit")


def _decorate_and_run(guard: Any, fn: Any, is_async: bool) -> Any:
    if not is_async:
        return guard(fn)()

    async def afn() -> Any:
        return fn()

    return asyncio.run(guard(afn)())


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_fast_hooks_skip_step_and_clock(is_async: bool) -> None:
    """With both hooks taking the call, the decorator reads no clock and never steps."""
    clock = CountingClock()
    guard = Hooked(clock)
    assert _decorate_and_run(guard, lambda: "ok", is_async) == "ok"
    assert (0, 0, [-1], []) == (
        clock.reads,
        guard.steps,
        guard.fast_released,
        guard.released,
    )


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_fast_admit_none_takes_the_step_path(is_async: bool) -> None:
    """_fast_admit returning None makes the decorator step at `now`; fast release still runs."""
    clock = CountingClock()
    guard = Hooked(clock, open_=False)
    assert _decorate_and_run(guard, lambda: "ok", is_async) == "ok"
    assert (1, 1, [1]) == (clock.reads, guard.steps, guard.fast_released)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_fast_release_false_falls_back_to_release(is_async: bool) -> None:
    """_fast_release returning False makes the decorator call _release(ticket, None, now)."""
    clock = CountingClock()
    clock.advance(4.0)
    guard = Hooked(clock, quick=False)
    assert _decorate_and_run(guard, lambda: "ok", is_async) == "ok"
    assert [(-1, None, 4.0)] == guard.released


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_failure_always_goes_through_release(is_async: bool) -> None:
    """A call that raises is released with its error at `now`, never fast."""
    clock = CountingClock()
    guard = Hooked(clock)
    boom = ValueError("boom")

    def fail() -> None:
        raise boom

    with pytest.raises(ValueError, match="boom"):
        _decorate_and_run(guard, fail, is_async)
    assert ([(-1, boom, 0.0)], []) == (guard.released, guard.fast_released)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("ticket", [7, None])
def test_fast_ticket_attribute_variant(is_async: bool, ticket: int | None) -> None:
    """`_fast_reads_ticket` guards hand out `_fast_ticket`, or step when it is None."""
    guard = ReadsTicket(CountingClock(), ticket)
    assert _decorate_and_run(guard, lambda: "ok", is_async) == "ok"
    expected = [7] if ticket is not None else [1]
    assert expected == guard.fast_released


def test_hooked_guard_behaves_alike_through_every_face(face: Face) -> None:
    """A guard with hooks returns results and releases exactly once through every face."""
    guard = Hooked(CountingClock())
    assert face.run(guard, lambda: 5) == 5
    assert 1 == len(guard.fast_released) + len(guard.released)


class TimesTicket(ReadsTicket):
    """`_timed_release`: every face pairs the fast ticket with its start time."""

    _fast_ticks = True  # _timed_release takes precedence

    def _fast_release(self, ticket: Any) -> bool:
        self.fast_released.append(ticket)
        return False  # the timed outcome goes to _release with the end time

    def _timed_release(self, ticket: Any, start: float, end: float) -> bool:
        self.released.append(((ticket, start), None, end))  # as _release would get it
        return True


class _SlowWork:
    """Work that takes `seconds` on a FakeClock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds

    def __call__(self) -> str:
        self.clock.advance(self.seconds)
        return "done"


def test_timed_fast_ticket_carries_its_start_through_every_face(face: Face) -> None:
    """A timed fast ticket is released with its start and end, and never steps."""
    clock = CountingClock()
    clock.advance(10.0)
    guard = TimesTicket(clock, 7)
    assert "done" == face.run(guard, _SlowWork(clock, 2.5))
    # The decorators hand the success to _timed_release; the other faces to
    # _fast_release, then _release, with the ticket paired with its start.
    decorated = face.name.endswith("decorator")
    assert (0, [] if decorated else [(7, 10.0)], [((7, 10.0), None, 12.5)]) == (
        guard.steps,
        guard.fast_released,
        guard.released,
    )


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_timed_fast_ticket_failure_is_released_with_its_start(is_async: bool) -> None:
    """A failing call under a timed fast ticket reaches `_release` as `(ticket, start)`."""
    clock = CountingClock()
    clock.advance(3.0)
    guard = TimesTicket(clock, 7)
    with pytest.raises(KeyError):
        _decorate_and_run(guard, _raise_key_error, is_async)
    assert [((7, 3.0), KeyError)] == [(t, type(e)) for t, e, _ in guard.released]


def test_expired_deadline_refuses_the_fast_path(clock: FakeClock) -> None:
    """The fast decorator checks the deadline before admitting, as the generic one does."""
    guard = Hooked(clock)
    wrapped = guard(lambda: "ran")
    with deadline(1.0, clock=clock):
        clock.advance(1.0)
        with pytest.raises(DeadlineExceededError):
            wrapped()
    assert [] == guard.fast_released


def test_guard_without_hooks_gets_the_generic_closure(clock: FakeClock) -> None:
    """A guard without hooks is decorated by a closure that holds no hook at all."""
    freevars = Recorder(clock)(lambda: 1).__code__.co_freevars
    assert "fast_release" not in freevars
    assert "fast_release" in Hooked(clock)(lambda: 1).__code__.co_freevars


# -- the scope stack ------------------------------------------------------------------


def test_one_stack_holds_tickets_deadlines_and_marks(clock: FakeClock) -> None:
    """A guard, a deadline and a synthetic mark entered together share one stack."""
    from tipkit.telemetry import current_synthetic, synthetic

    guard = Recorder(clock)
    assert _scope.top() is None
    with deadline(2.0, name="d", clock=clock) as dl, synthetic("bot"), guard:
        node = _scope.top()
        assert node is not None
        assert (guard, 1, dl, "bot") == (node[0], node[1], node[3], node[4])
        assert 3 == sum(1 for _ in _walk(node))
        assert "bot" == current_synthetic()
        assert dl is _deadline.current()
    assert _scope.top() is None


def _walk(node: Any) -> Any:
    while node is not None:
        yield node
        node = node[2]


def test_out_of_order_exit_keeps_the_entries_above(clock: FakeClock) -> None:
    """Leaving an outer entry first removes only it; inner entries keep their own state."""
    guard = Recorder(clock)
    outer = deadline(1.0, name="outer", clock=clock)
    inner = deadline(5.0, name="inner", clock=clock)
    outer.__enter__()
    assert "outer" == inner.__enter__().name  # the earlier deadline stays in force
    guard.__enter__()
    outer.__exit__(None, None, None)
    dl = _deadline.current()
    assert dl is not None
    assert ("inner", 5.0) == (dl.name, dl.remaining())
    guard.__exit__(None, None, None)
    assert [(1, None, 0.0)] == guard.released
    inner.__exit__(None, None, None)
    assert _scope.top() is None


def test_out_of_order_exit_keeps_inner_marks() -> None:
    """An inner synthetic mark survives its outer block leaving first."""
    from tipkit.telemetry import current_synthetic, synthetic

    outer, inner = synthetic("bot"), synthetic("test")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert "test" == current_synthetic()
    inner.__exit__(None, None, None)
    assert current_synthetic() is None


def test_pop_of_an_owner_never_entered_is_an_error() -> None:
    """Popping an owner with no entry in this context raises RuntimeError naming it."""
    with pytest.raises(RuntimeError, match="'nobody' exited without a matching enter"):
        _scope.pop("nobody")


def test_current_shim_sets_and_resets_the_deadline(clock: FakeClock) -> None:
    """_deadline.CURRENT.set/reset (kept for older callers) works over the scope stack."""
    dl = _deadline.Deadline(clock, 3.0, timeout=3.0, name="shim")
    token = _deadline.CURRENT.set(dl)
    try:
        assert dl is _deadline.CURRENT.get()
    finally:
        _deadline.CURRENT.reset(token)
    assert _deadline.CURRENT.get() is None


def test_deadline_error_is_built_one_way(clock: FakeClock) -> None:
    """exceeded() builds the one DeadlineExceededError: what, timeout, name."""
    err = _deadline.exceeded(
        _deadline.Deadline(clock, 1.0, timeout=1.0, name="req"), "x could not run"
    )
    assert ("x could not run: deadline of 1.0s (req) exceeded", "req", 1.0) == (
        str(err),
        err.name,
        err.timeout,
    )
    with deadline(1.0, clock=clock):
        _deadline.check()
        clock.advance(1.0)
        with pytest.raises(
            DeadlineExceededError, match=r"late: deadline of 1\.0s exceeded"
        ):
            _deadline.check("late")


def test_deadline_scope_works_through_every_face(face: Face, clock: FakeClock) -> None:
    """deadline() is a scope: every face runs the work with the deadline in force."""

    def work() -> float | None:
        clock.advance(0.5)
        dl = _deadline.current()
        return None if dl is None else dl.remaining()

    assert 1.5 == face.run(deadline(2.0, clock=clock), work)
    assert _scope.top() is None


def test_scope_stack_is_per_thread_and_task(clock: FakeClock) -> None:
    """Entries made in one thread or task are invisible to another started plainly."""
    seen: list[object] = []
    with deadline(1.0, clock=clock):
        t = threading.Thread(target=lambda: seen.append(_scope.top()))
        t.start()
        t.join()
    assert [None] == seen


# -- holds-nothing, async step/release and keyed guards --------------------------------


class Spends(Recorder):
    """A guard whose ticket holds nothing (a spent token): never released."""

    _holds = False


def test_holds_nothing_is_never_released(face: Face, clock: FakeClock) -> None:
    """With _holds = False no face releases, even on failure, and `with` keeps no entry."""
    guard = Spends(clock)
    assert "ok" == face.run(guard, lambda: "ok")
    with pytest.raises(KeyError):
        face.run(guard, _raise_key_error)
    assert ([1, 2], []) == (guard.issued, guard.released)
    assert _scope.top() is None


def _raise_key_error() -> None:
    raise KeyError("k")


class AsyncIO(Recorder):
    """A guard whose async faces decide and record through coroutines (store I/O)."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.awaited: list[str] = []

    async def _astep(self, now: float, pending: Wait | None) -> int | Wait:
        self.awaited.append("step")
        return super()._step(now, pending)

    async def _arelease(
        self, ticket: int, error: BaseException | None, now: float
    ) -> None:
        self.awaited.append("release")
        super()._release(ticket, error, now)


def test_async_faces_await_the_async_step_and_release(
    face: Face, clock: FakeClock
) -> None:
    """_astep/_arelease replace _step/_release on the async faces only."""
    guard = AsyncIO(clock)
    with pytest.raises(KeyError):
        face.run(guard, _raise_key_error)
    expected = ["step", "release"] if face.is_async else []
    assert expected == guard.awaited
    assert 1 == len(guard.released)


class Keyed(_keyed.Keyed[str, tuple[str, int]]):
    """A keyed guard that records each key's tickets and releases."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock=clock)
        self.released: list[tuple[str, tuple[str, int], BaseException | None]] = []
        self.n = itertools.count(1)

    def _step_key(
        self, key: str, now: float, pending: Wait | None
    ) -> tuple[str, int] | Wait:
        if key == "banned":
            raise RejectedError("no", name=key)
        return (key, next(self.n))

    def _release_key(
        self,
        key: str,
        ticket: tuple[str, int],
        error: BaseException | None,
        now: float,
    ) -> None:
        self.released.append((key, ticket, error))

    def __repr__(self) -> str:
        return "<Keyed>"


def test_keyed_guard_runs_every_face_per_key(face: Face, clock: FakeClock) -> None:
    """limit(key) is a guard with every face; the key reaches the step and release."""
    guard = Keyed(clock)
    assert 3 == face.run(guard.limit("acme"), lambda: 3)
    assert [("acme", ("acme", 1), None)] == guard.released
    with pytest.raises(RejectedError):
        face.run(guard.limit("banned"), lambda: 3)
    assert "<Keyed>.limit('acme')" == repr(guard.limit("acme"))


def test_keyed_call_acall_and_decorator_take_the_key(clock: FakeClock) -> None:
    """call/acall take the key first; the decorator extracts it from the arguments."""
    guard = Keyed(clock)

    @guard(key=lambda tenant, n: tenant)
    def work(tenant: str, n: int) -> int:
        return n

    @guard(key=lambda tenant: tenant)
    async def awork(tenant: str) -> str:
        return tenant

    assert 2 == guard.call("a", lambda: 2)
    assert 5 == asyncio.run(guard.acall("b", _five))
    assert 7 == work("c", 7)
    assert "d" == asyncio.run(awork("d"))
    assert ["a", "b", "c", "d"] == [key for key, _, _ in guard.released]
    with pytest.raises(TypeError, match="key must be callable"):
        guard(key=3)  # type: ignore[arg-type]


async def _five() -> int:
    return 5


def test_with_face_uses_the_fast_hooks() -> None:
    """`with` and `async with` admit and release through the fast hooks, no clock read."""
    clock = CountingClock()
    guard = Hooked(clock)
    with guard:
        pass

    async def main() -> None:
        async with guard:
            pass

    asyncio.run(main())
    assert (0, [-1, -1]) == (clock.reads, guard.fast_released)


class _Phase:
    """A fast ticket whose `tick` records a success lock-free (or None: no fast path)."""

    def __init__(self, tick: Any) -> None:
        self.tick = tick


class Ticks(Recorder):
    """The attribute variants of both hooks: `_fast_ticket` and its `tick`."""

    _fast_reads_ticket = True
    _fast_ticks = True

    def __init__(self, clock: Any, tick: Any) -> None:
        super().__init__(clock)
        self.count = itertools.count()
        self._fast_ticket = _Phase(tick)
        self._fast_count = _Counted()
        self.fast_released: list[Any] = []

    def _fast_release(self, ticket: Any) -> bool:
        self.fast_released.append(ticket)
        return True


class _Counted:
    def __init__(self) -> None:
        self.n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_fast_ticks_record_a_success_without_a_python_hook(is_async: bool) -> None:
    """With _fast_ticks the decorator calls ticket.tick() and counts; _fast_release is skipped."""
    clock = CountingClock()
    ticks: list[int] = []
    guard = Ticks(clock, lambda: ticks.append(1))
    assert "ok" == _decorate_and_run(guard, lambda: "ok", is_async)
    assert ([1], 1, [], 0) == (
        ticks,
        guard._fast_count.n,
        guard.fast_released,
        clock.reads,
    )


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_fast_ticks_fall_back_when_tick_is_none(is_async: bool) -> None:
    """A fast ticket whose tick is None goes to _fast_release; failures to _release."""
    guard = Ticks(CountingClock(), None)
    assert "ok" == _decorate_and_run(guard, lambda: "ok", is_async)
    with pytest.raises(KeyError):
        _decorate_and_run(guard, _raise_key_error, is_async)
    assert (1, 1, 0) == (
        len(guard.fast_released),
        len(guard.released),
        guard._fast_count.n,
    )
