"""Components register themselves at construction; operators' breaker actions are audited."""

from __future__ import annotations

from typing import Any

from tests.ops_support import run_json

from tipkit import audit, registry
from tipkit.breaker import BreakerControlled, BreakerState, CircuitBreaker
from tipkit.errors import StoreError
from tipkit.flags import Flags
from tipkit.ops._stores import serve_memory
from tipkit.ratelimit import KeyedRateLimiter, TokenBucket
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock, capture_events


def flags_doc(*keys: str) -> dict[str, Any]:
    """A flag document with one boolean flag per key."""
    return {
        "flags": {
            k: {"variants": {"on": True, "off": False}, "default_variant": "on"}
            for k in keys
        }
    }


class DownStore(MemoryStore):
    """A MemoryStore whose writes fail while .down."""

    down = False

    def set(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise StoreError("down")
        return super().set(*args, **kwargs)


def test_ops_finds_flags_right_after_they_are_built() -> None:
    """Flags(..., store=) registers at once: `tipkit ops flags list` lists its flags."""
    store = MemoryStore()
    flags = Flags.from_dict(flags_doc("checkout"), store=store)
    url = serve_memory("registry-test-1", store)
    listed = run_json("ops", "flags", "list", "--store", url)
    assert ["checkout"] == [f["key"] for f in listed]
    del flags


def test_two_flags_of_one_namespace_list_the_union_of_their_flags() -> None:
    """Two services' Flags in one namespace with different flags: neither hides the other."""
    store = MemoryStore()
    a = Flags.from_dict(flags_doc("checkout"), store=store)
    b = Flags.from_dict(flags_doc("search"), store=store)
    (comp,) = registry.components(store, "flags")
    assert (["checkout", "search"], 2) == (sorted(comp.config["flags"]), comp.instances)
    del a, b


def test_a_stale_heartbeat_is_left_out_on_read() -> None:
    """An instance that stopped beating is not listed, even before the store expires it."""
    store = MemoryStore()
    clock = FakeClock()
    reg = registry.register(store, "limit", "old", {"rate": 1}, clock=clock)
    assert ["old"] == [c.name for c in registry.components(store, "limit", clock=clock)]
    clock.advance(registry.TTL + 1)
    assert [] == registry.components(store, "limit", clock=clock)
    del reg


def test_every_store_backed_component_registers_itself() -> None:
    """Shared breaker, bucket and keyed limiter: registered with their configuration."""
    store = MemoryStore()
    breaker = CircuitBreaker("payments", store=store, share="state", runbook="rb")
    bucket = TokenBucket("api", rate=10, capacity=20, store=store)
    keyed = KeyedRateLimiter("per-user", rate=1, capacity=5, store=store)
    kinds = {(c.kind, c.name): c for c in registry.components(store)}
    assert "rb" == kinds["breaker", "payments"].config["runbook"]
    assert {"rate": 10.0, "capacity": 20.0, "keyed": False} == kinds[
        "limit", "api"
    ].config
    assert kinds["limit", "per-user"].config["keyed"] is True
    del breaker, bucket, keyed


def test_registration_never_raises_and_is_retried_when_the_store_answers() -> None:
    """Store down at construction: built anyway; beat() registers it once it is back."""
    store = DownStore()
    store.down = True
    flags = Flags.from_dict(flags_doc("checkout"), store=store)
    store.down = False
    assert [] == registry.components(store, "flags")
    assert registry.beat() >= 1
    assert ["flags"] == [c.name for c in registry.components(store, "flags")]
    del flags


def test_breaker_actions_carry_actor_and_reason_and_are_audited() -> None:
    """force_open/disable/reset(actor=, reason=): an event each and one audit record each."""
    store = MemoryStore()
    breaker = CircuitBreaker("payments", store=store, share="state", runbook="rb")
    with capture_events(BreakerControlled) as events:
        breaker.force_open(actor="alice", reason="dependency down")
        breaker.disable(actor="bob", reason="false alarm")
        breaker.reset(actor="bob", reason="all clear")
    assert [
        ("open", "alice", "dependency down", "closed", "forced_open"),
        ("disable", "bob", "false alarm", "forced_open", "disabled"),
        ("reset", "bob", "all clear", "disabled", "closed"),
    ] == [
        (e.action, e.actor, e.reason, e.from_state.value, e.to_state.value)
        for e in events
    ]
    records = audit.read(store, target="breaker:payments")
    assert ["breaker.open", "breaker.disable", "breaker.reset"] == [
        r.action for r in records
    ]
    assert {"rb"} == {r.runbook for r in records}
    assert {"state": "closed"} == audit.replay(records)["breaker:payments"]


def test_unattributed_and_automatic_breaker_changes_are_not_audited() -> None:
    """force_open() without who/why: an event, no record; opening by itself: neither."""
    store = MemoryStore()
    breaker = CircuitBreaker(
        "payments",
        store=store,
        share="state",
        minimum_calls=2,
        failure_rate_threshold=0.5,
    )
    with capture_events(BreakerControlled) as events:
        for _ in range(2):
            try:
                with breaker:
                    raise RuntimeError("boom")
            except RuntimeError:
                pass
        assert BreakerState.OPEN is breaker.state
        breaker.force_open()
    assert ["open"] == [e.action for e in events]
    assert [] == audit.read(store, target="breaker:payments")
