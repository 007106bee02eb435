"""Fault injection gated by flags: the split's share, kill switch, env switch, faces."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from tests.conftest import Face

from tipkit.errors import ConfigError
from tipkit.experiment import irreversible
from tipkit.faults import FaultInjected, Inject, Latency, Raise, Result
from tipkit.faults import inject as _inject
from tipkit.flags import Flags
from tipkit.telemetry import synthetic
from tipkit.testing import FakeClock, capture_events


def inject(*args: Any, **kwargs: Any) -> Inject:
    """Build an injector with a fresh name: counters are per name, as metrics are."""
    global _SEQ  # noqa: PLW0603  # a test-local sequence
    _SEQ += 1
    kwargs.setdefault("name", f"chaos-{_SEQ}")
    return _inject(*args, **kwargs)


_SEQ = 0


def chaos_flags(on: float = 100.0, rules: list[dict[str, Any]] | None = None) -> Flags:
    flag: dict[str, Any] = {
        "variants": {"on": True, "off": False},
        "default_variant": "off",
        "fallthrough": "on" if on >= 100 else {"split": {"on": on, "off": 100.0 - on}},
    }
    if rules is not None:
        flag["rules"] = rules
        flag["fallthrough"] = "off"
    return Flags.from_dict({"version": 1, "flags": {"chaos": flag}})


def test_every_face_injects_latency_and_raises(face: Face, clock: FakeClock) -> None:
    """Through every face: latency sleeps on the clock, then the raise replaces the call."""
    chaos = inject(
        chaos_flags(), "chaos", [Latency(0.2), Raise(ConnectionError)], clock=clock
    )
    ran: list[int] = []
    with pytest.raises(ConnectionError):
        face.run(chaos, lambda: ran.append(1))
    assert ([], [0.2]) == (ran, clock.sleeps)
    assert 1 == chaos.injected("raise")


def test_result_replaces_the_call_where_a_value_can_be_returned(
    clock: FakeClock,
) -> None:
    """Result returns its value instead of calling; a `with` block refuses it."""
    chaos = inject(chaos_flags(), "chaos", [Result("cached")], clock=clock)
    assert "cached" == chaos(lambda: "real")()
    assert "cached" == asyncio.run(chaos.acall(_async_value))
    with pytest.raises(TypeError, match="Result"), chaos:
        pass


async def _async_value() -> str:
    return "real"


def test_the_share_of_faulted_calls_matches_the_split() -> None:
    """Over 100k keys a 5% split injects into 5% of them, within 1%."""
    chaos = inject(chaos_flags(on=5.0), "chaos", [Result("x")], context=str)
    hits = sum(chaos(lambda _k: "real")(f"user-{i}") == "x" for i in range(100_000))
    assert abs(hits / 100_000 - 0.05) < 0.01


def test_the_same_keys_are_faulted_every_time() -> None:
    """Bucketing is deterministic: a key is either always or never in the chaos cohort."""
    chaos = inject(chaos_flags(on=30.0), "chaos", [Result("x")], context=str)
    fn = chaos(lambda _k: "real")
    first = [fn(f"k{i}") for i in range(500)]
    assert first == [fn(f"k{i}") for i in range(500)]


def test_killing_the_flag_stops_every_fault() -> None:
    """A killed flag serves its off variant: zero faults."""
    flags = chaos_flags()
    chaos = inject(flags, "chaos", [Raise(ConnectionError)], context=str)
    flags.kill("chaos")
    assert ["ok"] * 1000 == [chaos(lambda _k: "ok")(f"u{i}") for i in range(1000)]
    assert 0 == chaos.injected()


def test_tipkit_faults_off_forbids_injection(monkeypatch: pytest.MonkeyPatch) -> None:
    """TIPKIT_FAULTS=off: no fault whatever the flag says."""
    monkeypatch.setenv("TIPKIT_FAULTS", "off")
    chaos = inject(chaos_flags(), "chaos", [Raise(ConnectionError)], context=str)
    assert ["ok"] * 100 == [chaos(lambda _k: "ok")(f"u{i}") for i in range(100)]
    assert 0 == chaos.injected()


def test_targeting_confines_chaos_to_synthetic_traffic(clock: FakeClock) -> None:
    """A rule on the `synthetic` attribute faults only calls inside synthetic()."""
    rule = {
        "id": "synthetic",
        "if": {"attr": "synthetic", "op": "exists"},
        "serve": "on",
    }
    chaos = inject(chaos_flags(rules=[rule]), "chaos", [Result("fault")], context=str)
    fn = chaos(lambda _k: "real")
    assert "real" == fn("user-1")
    with synthetic("test"):
        assert "fault" == fn("user-1")


def test_shadow_mode_reports_but_injects_nothing(clock: FakeClock) -> None:
    """Shadow: counted and evented as shadow, the call runs untouched."""
    chaos = inject(chaos_flags(), "chaos", [Raise(ConnectionError)], mode="shadow")
    with capture_events(FaultInjected) as seen:
        assert "ok" == chaos(lambda: "ok")()
    assert [("raise", True)] == [(e.kind, e.shadow) for e in seen]
    assert (0, 1) == (chaos.injected(), chaos.injected(shadow=True))


def test_probabilities_pick_faults_independently() -> None:
    """Each fault applies with its own p (a seeded rng makes it exact)."""
    chaos = inject(chaos_flags(), "chaos", [Result("x", p=0.25)], rng=random.Random(3))
    hits = sum(chaos(lambda: "real")() == "x" for _ in range(4000))
    assert 800 < hits < 1200


def test_irreversible_functions_are_refused() -> None:
    """A fault must never stand in for a side effect: @irreversible is refused."""

    @irreversible(reason="moves money")
    def pay() -> None: ...

    with pytest.raises(ConfigError, match="moves money"):
        inject(chaos_flags(), "chaos", [Latency(0.1)])(pay)


def test_bad_arguments_are_named() -> None:
    """Faults and arguments are checked when built."""
    with pytest.raises(ValueError, match="p must be"):
        Latency(0.1, p=2)
    with pytest.raises(TypeError, match="faults"):
        inject(chaos_flags(), "chaos", [])
    assert "Latency(0.2, p=1)" == repr(Latency(0.2))
