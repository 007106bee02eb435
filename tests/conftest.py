"""Shared fixtures: the fake clock and the `face` fixture that runs a guard every way."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tipkit.testing import FakeClock

pytest_plugins = ["tests.redis_fixtures"]

settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock at time 0."""
    return FakeClock()


class Face:
    """One way of putting work under a guard: decorator, with, call, and async twins."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_async = name.startswith("async") or name == "acall"

    def __repr__(self) -> str:
        return self.name

    def run(self, guard: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the synchronous *fn* under *guard* through this face; return its result."""
        if self.name == "decorator":
            return guard(fn)(*args, **kwargs)
        if self.name == "with":
            with guard:
                return fn(*args, **kwargs)
        if self.name == "call":
            return guard.call(fn, *args, **kwargs)

        async def afn(*a: Any, **kw: Any) -> Any:
            return fn(*a, **kw)

        async def main() -> Any:
            if self.name == "async_decorator":
                return await guard(afn)(*args, **kwargs)
            if self.name == "async_with":
                async with guard:
                    return fn(*args, **kwargs)
            return await guard.acall(afn, *args, **kwargs)

        return asyncio.run(main())


FACES = ["decorator", "with", "call", "async_decorator", "async_with", "acall"]


@pytest.fixture(params=FACES)
def face(request: pytest.FixtureRequest) -> Face:
    """Each face of a guard in turn (stamina's `on` fixture, for guards)."""
    return Face(request.param)
