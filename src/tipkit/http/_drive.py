"""The retry loop of every HTTP client adapter, written once as a flow.

:func:`exchange` yields a :class:`~tipkit._core._flow.Call` to the adapter's
``_attempt`` (one guarded try; its exception is thrown back in), to the
response's ``close`` (a retried answer) and to the clock's ``sleep``, and
returns the final response or lets the final exception out. The httpx
``Transport`` and the requests ``Adapter`` run it with
:func:`~tipkit._core._flow.drive`; ``AsyncTransport`` with
:func:`~tipkit._core._flow.adrive` (``_aattempt``, ``aclose``, ``asleep``).
:func:`guarded` / :func:`aguarded` enter the guards around one send: a 5xx
answer leaves their block as :class:`~tipkit.http._policy.ServerFailure` (so
a breaker counts it) and the flow takes it back as the response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from tipkit._core._flow import Call, Flow
from tipkit.http._policy import ClientPolicy, Plan, ServerFailure

__all__ = ["aguarded", "exchange", "guarded"]


def exchange(
    plan: Plan, policy: ClientPolicy, adapter: object, *args: Any
) -> Flow[Any]:
    """Call ``adapter._attempt(*args)`` and retry as *plan* says until final."""
    attempt = Call(adapter, "_attempt", args)
    while True:
        try:
            response = yield attempt
        except ServerFailure as failure:
            response = failure.response
        except Exception as exc:
            wait = plan.after_error(exc)
            if wait is None:
                raise
            response = None
        if response is not None:
            wait = plan.after_response(
                response.status_code, response.headers.get("retry-after")
            )
            if wait is None:
                return response
            yield Call(response, "close")
        yield Call(policy.clock, "sleep", (wait,))


def _checked(response: Any) -> Any:
    if response.status_code >= 500:
        raise ServerFailure(response)
    return response


def guarded(guards: list[Any], send: Callable[[], Any]) -> Any:
    """Return ``send()`` inside every guard's ``with`` (5xx: ServerFailure)."""
    with ExitStack() as stack:
        for guard in guards:
            stack.enter_context(guard)
        return _checked(send())


async def aguarded(guards: list[Any], send: Callable[[], Awaitable[Any]]) -> Any:
    """Await ``send()`` inside every guard's ``async with`` (as :func:`guarded`)."""
    async with AsyncExitStack() as stack:
        for guard in guards:
            await stack.enter_async_context(guard)
        return _checked(await send())
