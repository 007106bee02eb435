"""compose(): the order check, order="as-given", and fallback= on a composition."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import Face

from tipkit import compose
from tipkit._core._compose import DOCUMENTED_ORDER, REFUSED, ROLES
from tipkit.adaptive import AdaptiveLimit
from tipkit.breaker import CircuitBreaker
from tipkit.bulkhead import Bulkhead
from tipkit.errors import CircuitOpenError, ConfigError
from tipkit.fallback import Fallback, fallback
from tipkit.faults import Latency, inject
from tipkit.flags import Flags
from tipkit.hedge import hedge
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.retry import retry
from tipkit.testing import FakeClock
from tipkit.timeout import Timeout


def parts(clock: FakeClock) -> dict[str, Any]:
    """Return one part per role, each on *clock*."""
    flag = {"variants": {"on": True}, "default_variant": "on"}
    flags = Flags.from_dict({"version": 1, "flags": {"chaos": flag}})
    return {
        "fallback": fallback(None),
        "retry": retry(on=ConnectionError, clock=clock),
        "hedge": hedge(after=1.0, clock=clock),
        "breaker": CircuitBreaker("order", clock=clock),
        "ratelimit": TokenBucket("order", rate=10, capacity=10, clock=clock),
        "limit": Bulkhead("order", clock=clock),
        "timeout": Timeout(1.0, clock=clock),
        "inject": inject(flags, "chaos", [Latency(0.1)], clock=clock),
    }


def test_every_role_is_declared_by_its_part(clock: FakeClock) -> None:
    """Each primitive declares the role compose() checks it by."""
    found = {role: part._composition_role for role, part in parts(clock).items()}
    assert {role: role for role in found} == found
    assert set(found) < set(ROLES)
    limiter = KeyedRateLimiter("order-keyed", rate=1, capacity=1, clock=clock)
    adaptive = AdaptiveLimit("order", clock=clock)
    assert ("ratelimit", "limit") == (
        limiter.limit("k")._composition_role,  # type: ignore[attr-defined]  # a _Bound property
        adaptive._composition_role,
    )


def test_the_documented_order_is_accepted(clock: FakeClock) -> None:
    """traced, fallback, retry, hedge, breaker, rate limit, limit, timeout, inject: accepted."""
    p = parts(clock)
    whole = compose(*(p[role] for role in ROLES if role in p))
    assert [role for role in ROLES if role in p] == [
        g._composition_role for g in whole.guards
    ]


@pytest.mark.parametrize(("outer", "inner"), sorted(REFUSED))
def test_an_order_that_cannot_work_is_refused(
    outer: str, inner: str, clock: FakeClock
) -> None:
    """Each refused pair raises ConfigError naming both parts, why and the order."""
    p = parts(clock)
    with pytest.raises(ConfigError, match="documented order") as caught:
        compose(p[outer], p[inner])
    message = str(caught.value)
    assert (True, True, True, "order") == (
        DOCUMENTED_ORDER in message,
        f"({outer}) is outside" in message,
        'order="as-given"' in message,
        caught.value.field,
    )
    as_given = compose(p[outer], p[inner], order="as-given")
    assert (p[outer], p[inner]) == as_given.guards


def test_a_keyed_limiter_outside_retry_is_refused(clock: FakeClock) -> None:
    """A keyed limiter bound to a key is a rate limit for the order check."""
    limiter = KeyedRateLimiter("order-keyed2", rate=1, capacity=1, clock=clock)
    with pytest.raises(ConfigError, match=r"\(ratelimit\) is outside"):
        compose(limiter.limit("tenant"), retry(on=OSError, clock=clock))


def test_as_given_survives_nesting_but_not_across_it(clock: FakeClock) -> None:
    """An inner as-given composite stays accepted; a refused pair across parts is not."""
    p = parts(clock)
    inner = compose(p["breaker"], p["retry"], order="as-given")
    assert 3 == len(compose(p["fallback"], inner).guards)
    with pytest.raises(ConfigError, match=r"\(limit\) is outside"):
        compose(p["limit"], inner)
    with pytest.raises(ValueError, match="order must be"):
        compose(p["retry"], order="loose")  # type: ignore[arg-type]  # the error under test


class _Traced:
    """A part declaring the telemetry role."""

    _composition_role = "traced"

    def __call__(self, fn: Any) -> Any:
        return fn


def test_compose_fallback_goes_inside_telemetry(clock: FakeClock) -> None:
    """fallback= becomes a part just inside the leading telemetry parts."""
    p = parts(clock)
    traced = _Traced()
    whole = compose(traced, p["retry"], p["breaker"], fallback=0, name="f")
    assert (traced, Fallback, p["retry"]) == (
        whole.guards[0],
        type(whole.guards[1]),
        whole.guards[2],
    )
    assert Fallback is type(compose(p["breaker"], fallback=0).guards[0])
    with pytest.raises(TypeError, match="fallback_on= needs fallback="):
        compose(p["breaker"], fallback_on=ValueError)


def test_compose_fallback_answers_through_every_face(
    face: Face, clock: FakeClock
) -> None:
    """An open breaker's refusal is answered by compose's fallback; `with` refuses it."""
    breaker = CircuitBreaker(f"compose-fb-{face}", clock=clock)
    breaker.force_open()
    whole = compose(
        retry(on=ConnectionError, clock=clock),
        breaker,
        fallback="stale",
        name=f"compose-fb-{face}",
    )
    if face.name in ("with", "async_with"):
        with pytest.raises(TypeError, match="replaces the result"):
            face.run(whole, str)
        return
    assert "stale" == face.run(whole, lambda: "fresh")
    assert 1 == whole.guards[0].used


def test_compose_fallback_leaves_dependency_errors_alone(clock: FakeClock) -> None:
    """By default a dependency error passes through compose's fallback."""

    def broken() -> str:
        raise KeyError("gone")

    whole = compose(CircuitBreaker("compose-fb-dep", clock=clock), fallback="x")
    with pytest.raises(KeyError):
        whole.call(broken)
    widened = compose(
        CircuitBreaker("compose-fb-dep2", clock=clock),
        fallback=lambda exc: type(exc).__name__,
        fallback_on=(KeyError, CircuitOpenError),
    )
    assert "KeyError" == widened.call(broken)
