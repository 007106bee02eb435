"""actor= and reason= on the primitives' own actions: audited with who and why, nothing breaks."""

from __future__ import annotations

import pytest
from tests.ops_support import DOC

from tipkit import audit, registry
from tipkit.flags import Flags
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock


def _flags(clock: FakeClock) -> tuple[Flags, MemoryStore]:
    store = MemoryStore(clock=clock)
    return Flags.from_dict(DOC, store=store, clock=clock, refresh_interval=0), store


def test_flag_actions_with_an_actor_are_audited_with_before_and_after(
    clock: FakeClock,
) -> None:
    """kill/revive/override/split with actor= and reason= each append one record."""
    flags, store = _flags(clock)
    flags.kill("checkout", actor="alice", reason="5xx")
    flags.revive("checkout", actor="alice", reason="fixed")
    flags.set_override("pricing", "old", actor="bob", reason="hold")
    flags.clear_override("pricing", actor="bob", reason="go")
    flags.set_split("checkout", {"on": 10, "off": 90}, actor="carol", reason="ramp")
    flags.clear_split("checkout", actor="carol", reason="done")
    recs = audit.read(store)
    assert [
        ("alice", "flag.kill", {"killed": False}, {"killed": True}),
        ("alice", "flag.revive", {"killed": True}, {"killed": False}),
        ("bob", "flag.override", {"override": None}, {"override": "old"}),
        ("bob", "flag.clear_override", {"override": "old"}, {"override": None}),
        ("carol", "flag.split", {"split": None}, {"split": {"on": 10.0, "off": 90.0}}),
        (
            "carol",
            "flag.clear_split",
            {"split": {"on": 10.0, "off": 90.0}},
            {"split": None},
        ),
    ] == [(r.actor, r.action, r.before, r.after) for r in recs]
    assert ["5xx", "fixed", "hold", "go", "ramp", "done"] == [r.reason for r in recs]
    assert {"flag:checkout", "flag:pricing"} == {r.target for r in recs}


def test_unattributed_calls_still_work_and_a_typo_is_a_type_error(
    clock: FakeClock,
) -> None:
    """Existing calls without actor/reason keep working; an unknown keyword raises."""
    flags, store = _flags(clock)
    assert flags.kill("checkout").done
    assert "off" == flags.evaluate("checkout", {"targeting_key": "u"}).variant
    assert [] == audit.read(store)  # a component's own writes are not operator actions
    with pytest.raises(TypeError, match="actor=, reason="):
        flags.kill("checkout", actr="alice")  # type: ignore[call-arg]  # the typo under test
    flags.kill("pricing", reason="only why")
    (rec,) = audit.read(store)
    assert "only why" == rec.reason
    assert audit.actor_or_default(None) == rec.actor  # the OS user by default


def test_a_shared_disable_reaches_every_process_and_a_reset_ends_it(
    clock: FakeClock,
) -> None:
    """`breakers disable` (a shared "disabled") is adopted by every shared breaker."""
    from tipkit.breaker import CircuitBreaker
    from tipkit.ops import Operator

    store = MemoryStore(clock=clock)
    a, b = (
        CircuitBreaker("payments", store=store, share="state", clock=clock,
                       refresh_interval=0)
        for _ in range(2)
    )  # fmt: skip
    assert ["payments"] == [c.name for c in registry.components(store, "breaker")]
    op = Operator(store, actor="alice")
    op.disable_breaker("payments", reason="noisy provider")
    a.sync()
    b.sync()
    assert ("disabled", "disabled") == (a.state.value, b.state.value)
    op.open_breaker("payments", reason="provider down")
    a.sync()
    assert "forced_open" == a.state.value
    op.reset_breaker("payments", reason="back")
    a.sync()
    assert "closed" == a.state.value


def test_a_tripwire_kill_is_audited_as_tipkit_tripwire_with_its_numbers(
    clock: FakeClock,
) -> None:
    """A tripped tripwire's kill lands in the log as actor tipkit:tripwire, the rate in why."""
    from tipkit.breaker import CountWindow
    from tipkit.tripwire import Tripwire

    flags, store = _flags(clock)
    wire = Tripwire(flags, "checkout", max_error_rate=0.2, window=CountWindow(10),
                    minimum_calls=10, clock=clock)  # fmt: skip

    def failing() -> None:
        raise ValueError("x")

    for _ in range(10):
        with pytest.raises(ValueError, match="x"):
            wire.call(failing)
    (rec,) = audit.read(store)
    assert ("tipkit:tripwire", "flag.kill", "flag:checkout") == (
        rec.actor,
        rec.action,
        rec.target,
    )
    assert rec.reason.startswith("error rate 1.0000 over the last 10 calls")
