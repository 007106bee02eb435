import logging
import threading
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.errors import ConfigError, StoreConflictError
from tipkit.flags import (
    FlagProvider,
    Flags,
    InMemoryProvider,
    ProviderNotReadyError,
    Reason,
    bucket,
)
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock

PRICING: dict[str, Any] = {
    "variants": {"new": True, "old": False},
    "off_variant": "old",
    "rules": [
        {
            "id": "staff",
            "if": {"attr": "staff", "op": "eq", "value": True},
            "serve": "new",
        },
        {
            "id": "nz",
            "if": {"attr": "country", "op": "eq", "value": "NZ"},
            "serve": {"split": {"new": 10, "old": 90}},
        },
    ],
    "fallthrough": {"split": {"new": 1, "old": 99}},
}
DOC: dict[str, Any] = {
    "flags": {
        "pricing": PRICING,
        "plain": {
            "variants": {"a": "a", "b": "b", "c": "c"},
            "default_variant": "b",
        },
        "by-org": {
            "variants": {"x": "x", "y": "y"},
            "salt": "shared",
            "bucket_by": "org",
            "fallthrough": {"split": {"x": 50, "y": 50}},
        },
        "off": {
            "variants": {"on": True, "off": False},
            "state": "disabled",
            "off_variant": "off",
            "fallthrough": {"split": {"on": 50, "off": 50}},
        },
    }
}
KEYS = [f"user-{i}" for i in range(20_000)]


def make(clock=None, store=None, doc=None, **kwargs):
    clock = clock if clock is not None else FakeClock()
    store = store if store is not None else MemoryStore(clock=clock)
    provider = InMemoryProvider(doc if doc is not None else DOC)
    return Flags(provider, store=store, clock=clock, **kwargs)


def cohort(flags, key="pricing", variant="new", keys=KEYS):
    return {k for k in keys if flags.evaluate(key, k).variant == variant}


def test_set_split_changes_what_plain_evaluations_serve():
    """After set_split, get/is_enabled/evaluate serve the new weights with reason SPLIT."""
    flags = make()
    assert 150 < len(cohort(flags)) < 260
    flags.set_split("pricing", {"new": 25, "old": 75})
    share = sum(flags.is_enabled("pricing", k) for k in KEYS) / len(KEYS)
    assert 0.23 < share < 0.27
    detail = flags.evaluate("pricing", "user-1")
    assert (Reason.SPLIT, None) == (detail.reason, detail.rule_id)
    assert {"new": 25.0, "old": 75.0} == flags.get_split("pricing")
    assert flags.get("pricing", "user-1") is detail.value


def test_assignment_is_the_bucketing_spec_with_the_flags_salt_and_bucket_by():
    """The run-time split hashes salt.bucket_key exactly as the document's split does."""
    flags = make()
    flags.set_split("by-org", {"x": 30, "y": 70})
    for org in (f"org-{i}" for i in range(300)):
        expected = "x" if bucket("shared", org) < 30_000 else "y"
        ctx = {"targeting_key": "someone", "org": org}
        assert expected == flags.evaluate("by-org", ctx).variant


def test_raising_the_first_variant_only_adds_users_to_it():
    """1% -> 5% -> 50% -> 100%: each cohort contains the one before (20k keys)."""
    flags = make()
    before: set[str] = set()
    for percent in (1, 5, 50, 100):
        flags.set_split("pricing", {"new": percent, "old": 100 - percent})
        now = cohort(flags)
        assert before <= now
        assert abs(len(now) - len(KEYS) * percent / 100) < 5 * (len(KEYS) ** 0.5)
        before = now
    assert set(KEYS) == before


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 100_000), st.integers(0, 100_000))
def test_any_raise_of_the_first_variant_keeps_its_users(a, b):
    """Property: for weights w1 <= w2 of the first variant, cohort(w1) is in cohort(w2)."""
    low, high = sorted((a, b))
    flags = make()
    keys = KEYS[:2000]
    flags.set_split(
        "pricing", {"new": Decimal(low) / 1000, "old": Decimal(100_000 - low) / 1000}
    )
    small = cohort(flags, keys=keys)
    flags.set_split(
        "pricing", {"new": Decimal(high) / 1000, "old": Decimal(100_000 - high) / 1000}
    )
    assert small <= cohort(flags, keys=keys)


def test_variant_order_is_the_splits_own_not_the_mappings():
    """{old: 95, new: 5} assigns exactly as {new: 5, old: 95}: the document's order wins."""
    flags = make()
    flags.set_split("pricing", {"new": 5, "old": 95})
    first = cohort(flags)
    flags.set_split("pricing", {"old": 95, "new": 5})
    assert first == cohort(flags)
    assert all(bucket("pricing", k) < 5_000 for k in first)


def test_rule_id_targets_one_rules_split_and_leaves_rule_matching_alone():
    """rule_id='nz' changes the nz rule's weights only; staff users stay pinned."""
    flags = make()
    flags.set_split("pricing", {"new": 100, "old": 0}, rule_id="nz")
    nz = [{"targeting_key": k, "country": "NZ"} for k in KEYS[:500]]
    details = [flags.evaluate("pricing", c) for c in nz]
    assert {("new", Reason.SPLIT, "nz")} == {
        (d.variant, d.reason, d.rule_id) for d in details
    }
    assert 2 < len(cohort(flags, keys=KEYS[:1000])) < 25  # fallthrough still 1 %
    flags.set_split("pricing", {"new": 0, "old": 100})
    staff = flags.evaluate("pricing", {"targeting_key": "u", "staff": True})
    assert ("new", Reason.TARGETING_MATCH, "staff") == (
        staff.variant,
        staff.reason,
        staff.rule_id,
    )
    assert {"new": 100.0, "old": 0.0} == flags.get_split("pricing", rule_id="nz")


def test_a_rule_serving_one_variant_can_be_turned_into_a_split():
    """Targeting a variant-serving rule makes it split (reason SPLIT, rule id kept)."""
    flags = make()
    flags.set_split("pricing", {"new": 0, "old": 100}, rule_id="staff")
    d = flags.evaluate("pricing", {"targeting_key": "u", "staff": True})
    assert ("old", Reason.SPLIT, "staff") == (d.variant, d.reason, d.rule_id)


def test_a_plain_fallthrough_becomes_a_split_and_clear_split_restores_it():
    """A flag serving one variant splits after set_split; clear_split brings it back."""
    flags = make()
    assert Reason.STATIC == flags.evaluate("plain", "k").reason
    flags.set_split("plain", {"c": 20, "a": 30, "b": 50})
    seen = {flags.evaluate("plain", k).variant for k in KEYS[:500]}
    assert {"a", "b", "c"} == seen
    assert Reason.SPLIT == flags.evaluate("plain", "k").reason
    # No split of its own: the flag's variant order (a, b, c) decides the ranges.
    a_users = cohort(flags, key="plain", variant="a", keys=KEYS[:2000])
    assert all(bucket("plain", k) < 30_000 for k in a_users)
    flags.clear_split("plain")
    d = flags.evaluate("plain", "k")
    assert ("b", Reason.STATIC) == (d.variant, d.reason)
    assert flags.get_split("plain") is None


def test_precedence_kill_then_disabled_then_override_then_split():
    """Precedence: kill > disabled > override > run-time split."""
    flags = make()
    flags.set_split("pricing", {"new": 100, "old": 0})
    assert ("new", Reason.SPLIT) == (
        flags.evaluate("pricing", "u").variant,
        flags.evaluate("pricing", "u").reason,
    )
    with flags.override("pricing", "old"):
        d = flags.evaluate("pricing", "u")
        assert ("old", Reason.STATIC) == (d.variant, d.reason)
        flags.kill("pricing")
        d = flags.evaluate("pricing", "u")
        assert ("old", Reason.DISABLED) == (d.variant, d.reason)
        flags.revive("pricing")
    assert "new" == flags.evaluate("pricing", "u").variant
    flags.set_split("off", {"on": 100, "off": 0})
    d = flags.evaluate("off", "u")
    assert ("off", Reason.DISABLED) == (d.variant, d.reason)


@pytest.mark.parametrize(
    ("weights", "field", "match"),
    [
        ({"new": 50.0001, "old": 49.9999}, "fallthrough.split.new", "3 decimals"),
        ({"new": True, "old": 99}, "fallthrough.split.new", "must be a number"),
        ({"new": -1, "old": 101}, "fallthrough.split.new", "negative"),
        ({"new": 1, "old": 98}, "fallthrough.split", "exactly 100, got 99"),
        ({"new": 1, "nope": 99}, "fallthrough.split.nope", "unknown variant 'nope'"),
        ({"new": "1", "old": 99}, "fallthrough.split.new", "must be a number"),
        ({}, "fallthrough.split", "at least one variant"),
        ([("new", 100)], "fallthrough.split", "must be a mapping"),
        ({"new": float("nan"), "old": 99}, "fallthrough.split.new", "finite"),
        ({"new": 10**5000, "old": 0}, "fallthrough.split", "exactly 100"),
    ],
)
def test_bad_weights_are_refused_like_a_documents(weights, field, match):
    """Bad weights raise ConfigError naming the flag and the weight; nothing is written."""
    flags = make()
    with pytest.raises(ConfigError, match=match) as info:
        flags.set_split("pricing", weights)
    assert ("pricing", field, "set_split") == (
        info.value.flag,
        info.value.field,
        info.value.source,
    )
    assert flags.get_split("pricing") is None
    assert Reason.SPLIT == flags.evaluate("pricing", "u").reason


def test_every_bad_weight_is_reported_at_once():
    """Several bad weights: one ConfigError lists each of them."""
    flags = make()
    with pytest.raises(ConfigError) as info:
        flags.set_split("pricing", {"new": 0.0001, "old": -5, "x": 1})
    assert {
        "fallthrough.split.new",
        "fallthrough.split.old",
        "fallthrough.split.x",
    } == {p.field for p in info.value.problems}


def test_weights_are_exact_decimals():
    """33.333 + 33.333 + 33.334 is exactly 100 (Decimal parsing, never float sums)."""
    flags = make()
    flags.set_split("plain", {"a": 33.333, "b": Decimal("33.333"), "c": 33.334})
    assert {"a": 33.333, "b": 33.333, "c": 33.334} == flags.get_split("plain")


def test_unknown_flags_rules_and_bad_names_are_refused():
    """An unknown flag or rule is a ConfigError; a bad key or rule id a ValueError."""
    flags = make()
    with pytest.raises(ConfigError, match="'missing' is not defined"):
        flags.set_split("missing", {"a": 100})
    with pytest.raises(ConfigError, match="no rule 'eu'") as info:
        flags.set_split("pricing", {"new": 100}, rule_id="eu")
    assert ("pricing", "rules") == (info.value.flag, info.value.field)
    with pytest.raises(ValueError, match="flag key"):
        flags.set_split("", {"new": 100})
    with pytest.raises(ValueError, match="rule_id"):
        flags.set_split("pricing", {"new": 100}, rule_id="")
    with pytest.raises(ValueError, match="rule_id"):
        flags.clear_split("pricing", rule_id=3)  # type: ignore[arg-type]  # checked at run time
    with pytest.raises(ValueError, match="flag key"):
        flags.get_split(None)  # type: ignore[arg-type]  # checked at run time


class NotReady(FlagProvider):
    def current(self, now: float) -> Any:
        raise ProviderNotReadyError("warming up")


def test_without_the_flag_set_split_is_refused():
    """Weights cannot be validated without the flag: ConfigError, nothing written."""
    store = MemoryStore()
    flags = Flags(NotReady(), store=store, clock=FakeClock())
    with pytest.raises(ConfigError, match="provider is not ready"):
        flags.set_split("pricing", {"new": 100})
    empty = Flags(InMemoryProvider(), store=store, clock=FakeClock())
    with pytest.raises(ConfigError, match="not defined"):
        empty.set_split("pricing", {"new": 100})
    assert 0 == store.version("flags")


def test_clearing_one_target_keeps_the_others_and_a_missing_one_is_a_no_op():
    """clear_split removes one target; clearing an absent split writes nothing."""
    store = MemoryStore()
    flags = make(store=store)
    flags.clear_split("pricing")
    assert 0 == store.version("flags")
    flags.set_split("pricing", {"new": 50, "old": 50})
    flags.set_split("pricing", {"new": 100, "old": 0}, rule_id="nz")
    flags.clear_split("pricing")
    assert flags.get_split("pricing") is None
    assert {"new": 100.0, "old": 0.0} == flags.get_split("pricing", rule_id="nz")
    assert 2 < len(cohort(flags, keys=KEYS[:1000])) < 25
    flags.clear_split("pricing", rule_id="nz")
    nz = flags.evaluate("pricing", {"targeting_key": "user-3", "country": "NZ"})
    assert nz.variant == ("new" if bucket("pricing", "user-3") < 10_000 else "old")


def test_peers_sharing_the_store_see_a_split_on_their_next_evaluation():
    """Another Flags on the same store object follows at once, despite a long refresh_interval."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    a = make(clock, store, refresh_interval=3600)
    b = make(clock, store, refresh_interval=3600)
    assert "old" == b.evaluate("pricing", "user-1").variant
    a.set_split("pricing", {"new": 100, "old": 0})
    assert "new" == b.evaluate("pricing", "user-1").variant
    a.set_split("pricing", {"new": 0, "old": 100})
    assert "old" == b.evaluate("pricing", "user-1").variant


def test_other_processes_see_a_split_within_refresh_interval_and_restarts_keep_it():
    """An unannounced write applies after refresh_interval; new Flags start with it."""
    clock = FakeClock()
    store = MemoryStore(clock=clock, push=False)
    flags = make(clock, store, refresh_interval=5)
    flags.evaluate("pricing", "user-1")
    # What another process's set_split leaves in a shared store.
    store.set("flags", "split/pricing", {"": {"new": 100_000, "old": 0}})
    assert "old" == flags.evaluate("pricing", "user-1").variant
    clock.advance(5)
    assert "new" == flags.evaluate("pricing", "user-1").variant
    fresh = make(clock, store)
    assert "new" == fresh.evaluate("pricing", "user-1").variant
    assert {"new": 100.0, "old": 0.0} == fresh.get_split("pricing")


def test_a_split_the_document_no_longer_fits_is_ignored_and_logged_once(caplog):
    """A reload that removes a rule or variant: the document's weights serve, one warning."""
    provider = InMemoryProvider(DOC)
    flags = Flags(provider, store=MemoryStore(), clock=FakeClock())
    flags.set_split("pricing", {"new": 100, "old": 0}, rule_id="nz")
    flags.set_split("plain", {"a": 50, "c": 50})
    with caplog.at_level(logging.WARNING, logger="tipkit"):
        provider.set_flag("pricing", {**PRICING, "rules": PRICING["rules"][:1]})
        provider.set_flag(
            "plain", {"variants": {"a": "a", "b": "b"}, "default_variant": "b"}
        )
        for _ in range(3):
            flags.refresh()
            d = flags.evaluate("plain", "k")
    assert ("b", Reason.STATIC) == (d.variant, d.reason)
    assert 2 == caplog.text.count("does not fit it")


def test_garbage_in_the_store_is_ignored():
    """Entries another writer left malformed never break evaluation."""
    store = MemoryStore()
    store.set(
        "flags", "split/pricing", {"": {"new": "lots"}, "nz": 5, "x": {"new": -1}}
    )
    store.set("flags", "split/plain", ["not", "a", "mapping"])
    store.set("flags", "split/by-org", {"": {"x": 1, "y": 2}})  # does not sum to 100 %
    flags = make(store=store)
    assert Reason.SPLIT == flags.evaluate("pricing", "user-1").reason
    assert "b" == flags.evaluate("plain", "k").variant
    assert (
        Reason.SPLIT
        == flags.evaluate("by-org", {"targeting_key": "k", "org": "o"}).reason
    )
    assert flags.get_split("pricing") is None


def test_explain_says_the_weights_come_from_the_store():
    """explain() shows the run-time weights and where they came from."""
    flags = make()
    flags.set_split("pricing", {"new": 40, "old": 60})
    steps = flags.explain("pricing", "user-1").steps
    assert any("split {new: 40%, old: 60%}" in s for s in steps)
    assert any("set_split" in s for s in steps)


def test_eight_threads_evaluate_while_the_split_changes():
    """Concurrent evaluations during split changes: no exceptions, always a valid variant."""
    flags = make()
    barrier = threading.Barrier(9)
    errors: list[BaseException] = []
    answers: list[set[tuple[Any, Any]]] = [set() for _ in range(8)]

    def work(t):
        barrier.wait()
        try:
            for i in range(3000):
                d = flags.evaluate("pricing", f"t{t}-{i}")
                answers[t].add((d.variant, d.reason))
                assert flags.is_enabled("pricing", f"t{t}-{i}") in (True, False)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    barrier.wait()
    for p in range(0, 101, 2):
        flags.set_split("pricing", {"new": p, "old": 100 - p})
    for th in threads:
        th.join()
    assert [] == errors
    seen = set().union(*answers)
    assert seen <= {("new", Reason.SPLIT), ("old", Reason.SPLIT)}


def test_a_split_written_through_redis_reaches_another_store_object(
    redis_server, redis_store
):
    """Two RedisStore objects (two processes' worth): the split applies after refresh_interval."""
    from tipkit.stores import RedisStore

    clock = FakeClock()
    other_store = RedisStore(
        redis_server.url, prefix=redis_store.prefix, timeout=5.0, push=False
    )
    try:
        writer = make(clock, redis_store)
        reader = make(clock, other_store, refresh_interval=2)
        assert "old" == reader.evaluate("pricing", "user-1").variant
        writer.set_split("pricing", {"new": 100, "old": 0})
        writer.set_split("pricing", {"new": 0, "old": 100}, rule_id="nz")
        clock.advance(2)
        assert "new" == reader.evaluate("pricing", "user-1").variant
        nz = reader.evaluate("pricing", {"targeting_key": "user-1", "country": "NZ"})
        assert ("old", "nz") == (nz.variant, nz.rule_id)
        assert {"new": 100.0, "old": 0.0} == reader.get_split("pricing")
    finally:
        other_store.close()


def test_a_split_that_keeps_changing_raises_store_conflict_and_writes_nothing():
    """When every compare-and-set loses, set_split raises StoreConflictError (a RuntimeError)."""

    class Contended(MemoryStore):
        def compare_and_set(self, *_a: Any, **_k: Any) -> int | None:
            return None

    store = Contended()
    flags = make(store=store)
    with pytest.raises(StoreConflictError, match="kept changing") as info:
        flags.set_split("pricing", {"new": 50, "old": 50})
    assert isinstance(info.value, RuntimeError)
    assert ("flags", "split/pricing", 16) == (
        info.value.namespace,
        info.value.key,
        info.value.tries,
    )
    assert flags.get_split("pricing") is None
