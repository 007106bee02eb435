from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from tipkit import deadline as dl
from tipkit.errors import DeadlineExceededError
from tipkit.testing import FakeClock


def test_no_deadline_by_default():
    """Without a deadline remaining() is None and check() passes."""
    assert dl.remaining() is None
    assert dl.current() is None
    assert not dl.expired()
    dl.check()


def test_deadline_sets_and_restores(clock):
    """Inside the block remaining() counts down; after it the outer state returns."""
    with dl.deadline(2.0, name="req", clock=clock) as d:
        assert dl.remaining() == 2.0
        clock.advance(0.5)
        assert dl.remaining() == 1.5
        assert d is dl.current()
        assert d.name == "req"
    assert dl.remaining() is None


def test_remaining_is_never_negative_and_check_raises(clock):
    """Past the deadline remaining() is 0.0 and check() raises DeadlineExceededError."""
    with dl.deadline(1.0, name="req", clock=clock):
        clock.advance(3)
        assert dl.remaining() == 0.0
        assert dl.expired()
        with pytest.raises(
            DeadlineExceededError, match=r"1.0s \(req\) exceeded"
        ) as info:
            dl.check()
    assert (info.value.name, info.value.timeout) == ("req", 1.0)


def test_nested_deadlines_take_the_earliest(clock):
    """A later inner deadline leaves the earlier outer one in force; an earlier one wins."""
    with dl.deadline(1.0, name="outer", clock=clock) as outer:
        with dl.deadline(5.0, name="inner", clock=clock) as inner:
            assert outer is inner
            assert dl.remaining() == 1.0
        with dl.deadline(0.25, name="tight", clock=clock) as tight:
            assert tight.name == "tight"
            assert dl.remaining() == 0.25
        assert dl.remaining() == 1.0


def test_async_with_and_tasks_inherit_the_deadline(clock):
    """`async with deadline(...)` works and tasks created inside see the deadline."""

    async def child() -> float | None:
        return dl.remaining()

    async def main() -> float | None:
        async with dl.deadline(3.0, clock=clock):
            return await asyncio.create_task(child())

    assert asyncio.run(main()) == 3.0


def test_threads_see_it_only_through_a_copied_context(clock):
    """A plain thread does not inherit the deadline; a copied context does."""
    seen: list[float | None] = []
    with dl.deadline(3.0, clock=clock):
        plain = threading.Thread(target=lambda: seen.append(dl.remaining()))
        ctx = contextvars.copy_context()
        copied = threading.Thread(
            target=ctx.run, args=(lambda: seen.append(dl.remaining()),)
        )
        for t in (plain, copied):
            t.start()
            t.join()
    assert seen == [None, 3.0]


def test_deadlines_on_different_clocks_compare_by_time_left():
    """Nested deadlines on different clocks keep the one with less time left."""
    a, b = FakeClock(100.0), FakeClock(0.0)
    with dl.deadline(2.0, name="a", clock=a), dl.deadline(1.0, name="b", clock=b) as d:
        assert d.name == "b"


def test_repr(clock):
    """The scope shows its seconds and name."""
    assert repr(dl.deadline(2.0, name="x", clock=clock)) == "<deadline 2.0s name='x'>"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((-1,), {}, ValueError, "seconds must be >= 0"),
        (("2",), {}, TypeError, "seconds must be seconds"),
        ((float("nan"),), {}, ValueError, "finite"),
        ((1,), {"clock": 3}, TypeError, "deadline: clock must provide monotonic"),
        ((1,), {"name": 3}, TypeError, "name must be a str"),
    ],
)
def test_invalid_arguments_are_named(args, kwargs, error, match):
    """Every invalid argument raises a clear error naming it."""
    with pytest.raises(error, match=match):
        dl.deadline(*args, **kwargs)


def test_one_scope_object_entered_from_many_threads_and_tasks() -> None:
    """A deadline scope shared by threads and tasks restores each context's own outer deadline."""
    import asyncio
    import threading

    from tipkit import deadline as deadline_module
    from tipkit.testing import FakeClock

    clock = FakeClock()
    shared = deadline_module.deadline(5.0, name="shared", clock=clock)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                with shared:
                    assert deadline_module.current() is not None
                assert deadline_module.current() is None
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def task() -> None:
        async with shared:
            await asyncio.sleep(0)  # noqa: TID251  # interleave the tasks; waits for nothing
            assert deadline_module.current() is not None
        assert deadline_module.current() is None

    async def main() -> None:
        await asyncio.gather(*(task() for _ in range(50)))

    asyncio.run(main())
    assert errors == []
