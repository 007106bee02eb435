"""A rollout's controls carry who and why; its safety actions are local-first and durable.

In-process stores here (a MemoryStore whose data calls fail on demand, or raise
what a store must never raise); the same behaviours against a real
redis-server behind a fault proxy are in ``test_outages_safety.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit import audit
from tipkit.errors import RolloutStateError, StoreError
from tipkit.flags import Flags, InMemoryProvider
from tipkit.rollout import (
    ErrorRateCheck,
    Rollout,
    RolloutControlled,
    RolloutRolledBack,
)
from tipkit.rollout._safety import safety_wins
from tipkit.rollout._state import new_state
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock, capture_events

FLAG = {
    "variants": {"new": True, "old": False},
    "off_variant": "old",
    "fallthrough": {"split": {"new": 1, "old": 99}},
}
RUNBOOK = "https://runbooks.invalid/pricing"


class FlakyStore(MemoryStore):
    """A MemoryStore whose data calls raise while .down (StoreError, or .raising)."""

    down = False
    raising: type[Exception] = StoreError

    def _check(self) -> None:
        if self.down:
            raise self.raising("store is down")

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().get(*args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().set(*args, **kwargs)

    def compare_and_set(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().compare_and_set(*args, **kwargs)

    def increment(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().increment(*args, **kwargs)

    def append_audit(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().append_audit(*args, **kwargs)

    def stored(self, name: str = "pricing") -> Any:
        """The rollout's state as stored, read past the outage (None: none)."""
        entry = MemoryStore.get(self, "tipkit.rollouts", name)
        return None if entry is None else entry.value


def build(clock: FakeClock, store: MemoryStore, **kwargs: Any) -> tuple[Rollout, Flags]:
    """A rollout of flag 'pricing' on *store*, judged on the error rate."""
    flags = Flags(
        InMemoryProvider({"flags": {"pricing": FLAG}}), store=store, clock=clock
    )
    options: dict[str, Any] = {
        "flags": flags,
        "stages": [50, 100],
        "min_samples": 50,
        "min_stage_duration": 10.0,
        "clock": clock,
        "checks": [ErrorRateCheck()],
        "runbook": RUNBOOK,
        "refresh_interval": 0.5,
    }
    options.update(kwargs)
    return Rollout("pricing", **options), flags


def drive(rollout: Rollout, clock: FakeClock, n: int, canary_error: float) -> None:
    """Send *n* requests; the canary fails a deterministic fraction of them."""
    acc = 0.0
    for i in range(n):
        with rollout.observe(f"user-{i}") as arm:
            clock.advance(0.01)
            if arm.is_canary:
                acc += canary_error
                if acc >= 1.0:
                    acc -= 1.0
                    arm.fail()


def test_each_control_is_announced_and_audited_with_its_actor_and_reason() -> None:
    """pause/resume/promote/rollback(actor=, reason=): one event and one audit record each."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rollout, _ = build(clock, store, stages=[10, 50, 100])
    me = audit.actor_or_default(None)
    with capture_events(RolloutControlled) as events:
        rollout.pause("looks odd", actor="alice")
        rollout.resume(reason="fine after all", actor="alice")
        rollout.promote("ship it", actor="bob")
        rollout.rollback("customer complaints")  # positional reason still works
    expected = [
        ("pause", "alice", "looks odd", 10.0, 10.0, "paused"),
        ("resume", "alice", "fine after all", 10.0, 10.0, "running"),
        ("promote", "bob", "ship it", 10.0, 50.0, "running"),
        ("rollback", me, "customer complaints", 50.0, 0.0, "rolled_back"),
    ]
    actual = [
        (e.action, e.actor, e.reason, e.from_percent, e.to_percent, e.status)
        for e in events
    ]
    assert expected == actual
    records = audit.read(store, target="rollout:pricing")
    assert [
        "rollout.pause",
        "rollout.resume",
        "rollout.promote",
        "rollout.rollback",
    ] == [r.action for r in records]
    assert ["alice", "alice", "bob"] == [r.actor for r in records[:3]]
    assert {"status": "running", "stage": 0, "percent": 10.0} == records[2].before
    assert {"status": "running", "stage": 1, "percent": 50.0} == records[2].after
    assert {"status": "rolled_back", "stage": 1, "percent": 0.0} == records[3].after
    assert {RUNBOOK} == {r.runbook for r in records}
    assert "rolled_back" == audit.replay(records)["rollout:pricing"]["status"]


def test_a_manual_rollback_without_actor_is_audited_as_the_os_user() -> None:
    """rollback('why') with no actor: the record's actor is the process's user, not tipkit."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rollout, _ = build(clock, store)
    with capture_events(RolloutRolledBack) as events:
        rollout.rollback("by hand")
    (record,) = audit.read(store, target="rollout:pricing")
    assert audit.actor_or_default(None) == record.actor
    assert "by hand" == record.reason
    assert [record.actor] == [e.actor for e in events]
    assert {} == record.details  # a person's action: no judge numbers


def test_the_judges_rollback_is_audited_as_tipkit_rollout_with_its_numbers() -> None:
    """A FAIL: actor tipkit:rollout; details hold the bound, the margin and the counts."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rollout, _ = build(clock, store)
    with capture_events(RolloutRolledBack) as events:
        drive(rollout, clock, 3000, canary_error=0.5)
    assert "tipkit:rollout" == events[0].actor
    (record,) = [
        r
        for r in audit.read(store, actor="tipkit:rollout")
        if r.action.endswith("back")
    ]
    assert ("rollout.rollback", "rollout:pricing") == (record.action, record.target)
    assert RUNBOOK == record.runbook
    d = record.details
    assert ("FAIL", "error_rate") == (d["decision"], d["check"])
    assert d["lower"] > d["margin"]  # the evidence bounds the harm above the margin
    assert d["bound"] >= d["lower"]
    assert 0.0 == d["margin"]
    assert events[0].canary_count == d["canary_count"]
    assert d["control_count"] > 0


def test_construction_never_raises_and_joins_the_fleet_when_the_store_answers() -> None:
    """Store down at construction: first stage from local state; up: the state is created."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    store.down = True
    rollout, _ = build(clock, store)
    assert (50.0, "running") == (rollout.percent, rollout.status().status)
    with rollout.observe("user-1"):
        pass
    assert store.stored() is None
    store.down = False
    clock.advance(1)
    with rollout.observe("user-2"):
        pass
    assert "running" == store.stored()["status"]
    assert rollout._safety.joined


def test_a_rollout_built_offline_adopts_the_fleets_rollback_when_it_joins() -> None:
    """Built while the store fails, it serves stage one; joining, it adopts the stored rollback."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    first, _ = build(clock, store)
    first.rollback("bad canary", actor="alice")
    store.down = True
    second, _ = build(clock, store)
    assert 50.0 == second.percent
    store.down = False
    clock.advance(1)
    with second.observe("user-1") as arm:
        pass
    assert (0.0, False) == (second.percent, arm.is_canary)
    assert "rolled_back" == store.stored()["status"]


class ReadFlakyStore(FlakyStore):
    """A FlakyStore whose namespace reads (the flags' refresh) fail too while .down."""

    def version(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().version(*args, **kwargs)

    def snapshot(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().snapshot(*args, **kwargs)

    async def aversion(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().aversion(*args, **kwargs)

    async def asnapshot(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return await super().asnapshot(*args, **kwargs)


def test_a_known_rollback_holds_where_the_flags_never_read_the_store() -> None:
    """A process that read the rollback but whose flags' first read failed serves control."""
    clock = FakeClock()
    store = ReadFlakyStore(clock=clock)
    first, _ = build(clock, store)
    first.rollback("bad canary", actor="alice")
    second, _ = build(clock, store)  # reads the rolled-back state
    assert 0.0 == second.percent
    store.down = True  # before its flags' first read
    arms = []
    for i in range(200):
        with second.observe(f"user-{i}") as arm:
            arms.append((arm.is_canary, arm.variant, arm.judged))
    assert {(False, "old", False)} == set(arms)

    async def routed() -> set[bool]:
        seen = set()
        for i in range(200):
            async with second.observe(f"user-{i}") as arm:
                seen.add(arm.is_canary)
        return seen

    assert {False} == asyncio.run(routed())


@pytest.mark.parametrize("raising", [StoreError, RuntimeError])
def test_a_rollback_during_an_outage_acts_at_once_and_is_written_when_back(
    raising: type[Exception],
) -> None:
    """rollback() while every store call raises: no exception, in force, pending, then stored."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, flags = build(clock, store)
    store.raising = raising
    store.down = True
    with capture_events(RolloutRolledBack, RolloutControlled) as events:
        if raising is StoreError:
            rollout.rollback("outage drill", actor="carol")
        else:  # a store that raises what it should wrap: still never raised
            rollout.pause("outage drill", actor="carol")
    expected_status = "rolled_back" if raising is StoreError else "paused"
    assert expected_status == rollout._local.doc["status"]
    assert ["pricing"] == [a.key for a in rollout.pending()]
    assert [True] == [e.pending for e in events if isinstance(e, RolloutControlled)]
    if raising is StoreError:
        assert 0.0 == rollout.percent
        assert "old" == flags.evaluate("pricing", "user-1").variant
    assert "running" == store.stored()["status"]
    assert [] == audit.read(store, target="rollout:pricing")
    store.down = False
    assert rollout._safety.durable.flush()
    assert expected_status == store.stored()["status"]
    assert [] == rollout.pending()
    assert expected_status == rollout.status().status
    if raising is StoreError:  # kept while the store failed, appended once it took it
        (record,) = audit.read(store, target="rollout:pricing")
        assert ("carol", "outage drill") == (record.actor, record.reason)
        assert record.made_at is not None


def test_observe_never_replaces_the_applications_exception() -> None:
    """A store raising a non-store error on refresh: the app's own exception leaves the block."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _ = build(clock, store, refresh_interval=0)
    store.raising = RuntimeError
    store.down = True

    class AppError(Exception):
        pass

    def request(i: int) -> None:
        with rollout.observe(f"user-{i}"):
            clock.advance(0.01)
            raise AppError("app")

    for i in range(200):
        with pytest.raises(AppError, match="app"):
            request(i)


def test_async_observe_never_raises_a_store_error() -> None:
    """Async with observe() on a failing store: the block runs, nothing raised."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _ = build(clock, store, refresh_interval=0)
    store.down = True

    async def main() -> int:
        done = 0
        for i in range(50):
            async with rollout.observe(f"user-{i}"):
                done += 1
        return done

    assert 50 == asyncio.run(main())


def test_a_rollback_is_written_over_a_state_created_after_the_store_lost_it() -> None:
    """Store emptied, another process recreates the rollout: the rollback goes back over it."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rollout, _ = build(clock, store)
    rollout.rollback("bad canary", actor="alice")
    store.delete(
        "tipkit.rollouts", "pricing"
    )  # what a restart without persistence does
    other, _ = build(clock, store)  # another process builds it: a fresh state
    assert "running" == store.get("tipkit.rollouts", "pricing").value["status"]
    clock.advance(1)
    with rollout.observe("user-1"):
        pass
    assert rollout._safety.durable.flush()
    assert "rolled_back" == store.get("tipkit.rollouts", "pricing").value["status"]
    clock.advance(1)
    with other.observe("user-1") as arm:
        pass
    assert (0.0, False) == (other.percent, arm.is_canary)


def test_a_state_read_absent_is_written_back() -> None:
    """The rollout's entry vanishes: the next refresh writes back what this process knows."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rollout, _ = build(clock, store)
    rollout.pause("hold on", actor="alice")
    store.delete("tipkit.rollouts", "pricing")
    clock.advance(1)
    with rollout.observe("user-1"):
        pass
    assert rollout._safety.durable.flush()
    assert "paused" == store.get("tipkit.rollouts", "pricing").value["status"]


@pytest.mark.parametrize(
    ("ours", "theirs", "wins"),
    [
        ("rolled_back", "fresh", True),
        ("paused", "fresh", True),
        ("fresh", "fresh", False),
        ("rolled_back", "advanced", False),
    ],
)
def test_which_pending_state_is_written_over_theirs(
    ours: str, theirs: str, *, wins: bool
) -> None:
    """Ours wins only over a state just created (no history), never over real progress."""

    def doc(kind: str) -> dict[str, Any]:
        d = new_state("pricing", (50.0, 100.0), 0.0)
        if kind in ("rolled_back", "paused"):
            d["status"] = kind
            d["history"].append({"action": kind})
        if kind == "advanced":
            d["stage"] = 1
            d["history"].append({"action": "advanced"})
        return d

    assert wins == safety_wins(doc(ours), doc(theirs))


def test_route_never_raises_a_store_error() -> None:
    """@rollout.route on a store that fails: every call runs one arm and returns."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _ = build(clock, store, refresh_interval=0)
    store.down = True

    @rollout.route(fallback=lambda user: "old")
    def price(user: str) -> str:
        clock.advance(0.01)
        return "new"

    answers = {price(f"user-{i}") for i in range(300)}
    assert answers <= {"new", "old"}
    assert answers


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sampled_from(["down", "up", "pause", "resume", "rollback", "request"]),
        max_size=12,
    )
)
def test_after_any_outage_the_process_and_the_store_agree(steps: list[str]) -> None:
    """Controls and requests interleaved with outages: once back, local == stored state."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _ = build(clock, store, stages=[10, 50, 100])
    for i, step in enumerate(steps):
        if step in ("down", "up"):
            store.down = step == "down"
        elif step == "request":
            with rollout.observe(f"user-{i}"):
                clock.advance(0.01)
        else:
            with contextlib.suppress(RolloutStateError, StoreError):
                getattr(rollout, step)("drill", actor="dana")
    store.down = False
    assert rollout._safety.durable.flush()
    clock.advance(1)
    status = rollout.status().status
    assert store.stored()["status"] == status
    assert [] == rollout.pending()


def test_a_control_after_an_outage_applies_after_the_queued_one() -> None:
    """Pause queued in an outage, then resume once back: resumed, in the store too."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _ = build(clock, store)
    store.down = True
    rollout.pause("drill", actor="dana")
    store.down = False
    rollout.resume("drill over", actor="dana")
    assert ("running", "running") == (
        rollout.status().status,
        store.stored()["status"],
    )
    actions = [h["action"] for h in store.stored()["history"]]
    assert ["started", "paused", "resumed"] == actions
