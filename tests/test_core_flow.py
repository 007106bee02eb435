"""The flow drivers of _core/_flow: one flow, the same result sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tipkit._core._flow import Call, Flow, adrive, async_name, drive


class Box:
    """A target with a sync method and its async twin, recording which ran."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def get(self, n: int) -> int:
        self.ran.append("get")
        if n < 0:
            raise KeyError(n)
        return n * 2

    async def aget(self, n: int) -> int:
        self.ran.append("aget")
        if n < 0:
            raise KeyError(n)
        return n * 2


def _sum_doubles(box: Box, numbers: list[int]) -> Flow[tuple[int, int]]:
    total = failed = 0
    for n in numbers:
        try:
            total += yield Call(box, "get", (n,))
        except KeyError:
            failed += 1
    return total, failed


def test_async_names_follow_the_store_convention() -> None:
    """The async twin is named with "a" after leading underscores (get: aget)."""
    assert ["aget", "_aattempt", "__ax"] == [
        async_name("get"),
        async_name("_attempt"),
        async_name("__x"),
    ]


def test_one_flow_gives_the_same_result_through_both_drivers() -> None:
    """Results are sent back, errors thrown in; the async driver awaits the twin only."""
    numbers = [1, -1, 3, -2, 5]
    sync_box, async_box = Box(), Box()
    sync = drive(_sum_doubles(sync_box, numbers))
    asynchronous = asyncio.run(adrive(_sum_doubles(async_box, numbers)))
    assert ((18, 2), (18, 2), ["get"] * 5, ["aget"] * 5) == (
        sync,
        asynchronous,
        sync_box.ran,
        async_box.ran,
    )


def test_an_error_the_flow_does_not_catch_reaches_the_caller_unchanged() -> None:
    """An uncaught error is the call's own exception object, both ways."""

    def flow(box: Box) -> Flow[Any]:
        return (yield Call(box, "get", (-7,)))

    errors = []
    with pytest.raises(KeyError) as sync_info:
        drive(flow(Box()))
    errors.append(sync_info.value.args)
    with pytest.raises(KeyError) as async_info:
        asyncio.run(adrive(flow(Box())))
    errors.append(async_info.value.args)
    assert [(-7,), (-7,)] == errors
