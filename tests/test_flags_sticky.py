"""Sticky bucketing: a unit keeps the variant a split first served it, per flag epoch."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.errors import ConfigError
from tipkit.flags import Flags, Reason
from tipkit.flags._sticky import FALLBACKS
from tipkit.stores._sticky import MemoryStickyStore, StickyStore
from tipkit.stores._sticky_redis import RedisStickyStore
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock

USERS = [f"user-{i}" for i in range(600)]


def doc(sticky: Any = 1, split: Mapping[str, int] | None = None, **extra: Any) -> dict:
    flag = {
        "variants": {"a": "A", "b": "B", "c": "C"},
        "fallthrough": {"split": dict(split or {"a": 50, "b": 30, "c": 20})},
        **extra,
    }
    if sticky is not None:
        flag["sticky"] = sticky
    return {"flags": {"exp": flag}}


def serve_all(flags: Flags, users: list[str] = USERS) -> dict[str, Any]:
    return {u: flags.get("exp", u) for u in users}


def fallbacks() -> int:
    return REGISTRY.counter(FALLBACKS).value


def test_changed_weights_keep_every_unit_that_was_served():
    """With a sticky epoch, new weights move no one already served; without, they do."""
    store = MemoryStickyStore()
    flags = Flags.from_dict(doc(), sticky=store)
    before = serve_all(flags)
    flags.set_split("exp", {"a": 10, "b": 10, "c": 80})
    assert before == serve_all(flags)
    plain = Flags.from_dict(doc(sticky=None), sticky=store)
    plain.set_split("exp", {"a": 10, "b": 10, "c": 80})
    assert before != serve_all(plain)
    new = serve_all(flags, [f"new-{i}" for i in range(2000)])
    assert 0.7 < list(new.values()).count("C") / 2000 < 0.9  # new units: new weights


def test_a_new_epoch_starts_everyone_afresh():
    """Bumping the epoch buckets everyone by the current weights again."""
    store = MemoryStickyStore()
    Flags.from_dict(doc(sticky=1), sticky=store).get("exp", "x")
    serve_all(Flags.from_dict(doc(sticky=1), sticky=store))
    changed = {"a": 10, "b": 10, "c": 80}
    bumped = Flags.from_dict(doc(sticky=2, split=changed), sticky=store)
    assert serve_all(bumped) == serve_all(
        Flags.from_dict(doc(sticky=None, split=changed))
    )


def test_a_variant_no_longer_in_the_split_is_rebucketed():
    """A recorded variant the split no longer lists is not served: the unit re-buckets."""
    store = MemoryStickyStore()
    first = serve_all(Flags.from_dict(doc(), sticky=store))
    two = {"a": 50, "b": 50}
    later = serve_all(Flags.from_dict(doc(split=two), sticky=store))
    assert all(later[u] == first[u] for u in USERS if first[u] != "C")
    assert "C" not in later.values()


def test_kill_and_rules_still_win_and_the_assignment_survives():
    """A kill serves the off variant; revived, the recorded variant comes back."""
    store = MemoryStickyStore()
    flags = Flags.from_dict(doc(off_variant="a"), sticky=store)
    first = serve_all(flags)
    flags.set_split("exp", {"a": 0, "b": 0, "c": 100})
    flags.kill("exp")
    assert {"A"} == set(serve_all(flags).values())
    flags.revive("exp")
    assert first == serve_all(flags)


def test_a_rule_split_is_sticky_too():
    """A one-rule flag's split (run inline when not sticky) keeps units when sticky."""
    rule = {
        "if": {"attr": "country", "op": "eq", "value": "NZ"},
        "serve": {"split": {"a": 50, "b": 50}},
    }
    d = doc(split={"a": 0, "b": 0, "c": 100}, rules=[rule])
    flags = Flags.from_dict(d, sticky=MemoryStickyStore())
    ctxs = [{"targeting_key": u, "country": "NZ"} for u in USERS[:200]]
    first = [flags.get("exp", c) for c in ctxs]
    assert {"A", "B"} == set(first)
    flags.set_split("exp", {"a": 100, "b": 0}, rule_id="rules[0]")
    assert first == [flags.get("exp", c) for c in ctxs]
    assert {"C"} == {flags.get("exp", {"targeting_key": "x", "country": "US"})}


def test_sticky_outcome_says_split():
    """A kept variant is reported as the split served it (reason SPLIT)."""
    flags = Flags.from_dict(doc(), sticky=MemoryStickyStore())
    d1 = flags.evaluate("exp", "u1")
    flags.set_split("exp", {"a": 1, "b": 1, "c": 98})
    assert (d1.variant, Reason.SPLIT) == (
        flags.evaluate("exp", "u1").variant,
        flags.evaluate("exp", "u1").reason,
    )


def test_bucket_by_attribute_is_the_unit():
    """bucket_by: the attribute's value is the unit, so devices keep variants across users."""
    store = MemoryStickyStore()
    flags = Flags.from_dict(doc(bucket_by="device"), sticky=store)
    first = flags.get("exp", {"targeting_key": "u1", "device": "d1"})
    flags.set_split(
        "exp",
        {"a": 0, "b": 0, "c": 100} if first != "C" else {"a": 100, "b": 0, "c": 0},
    )
    assert first == flags.get("exp", {"targeting_key": "u2", "device": "d1"})
    assert {"exp__1": {"A": "a", "B": "b", "C": "c"}[first]} == dict(
        store.get_assignments("device||d1")
    )


def test_flags_without_sticky_or_without_a_store_never_touch_it():
    """No epoch, or no store: plain bucketing and no store call."""
    calls: list[str] = []

    class Recording(MemoryStickyStore):
        def get_assignments(self, unit: str) -> Mapping[str, str]:
            calls.append(unit)
            return super().get_assignments(unit)

    plain = Flags.from_dict(doc(sticky=None), sticky=Recording())
    serve_all(plain)
    assert [] == calls
    no_store = Flags.from_dict(doc())
    assert serve_all(no_store) == serve_all(Flags.from_dict(doc(sticky=None)))


class Broken:
    """A sticky store whose every call fails."""

    def get_assignments(self, unit: str) -> Mapping[str, str]:
        raise ConnectionError("down")

    def save_assignment(self, unit: str, slot: str, variant: str) -> None:
        raise ConnectionError("down")

    async def aget_assignments(self, unit: str) -> Mapping[str, str]:
        raise ConnectionError("down")

    async def asave_assignment(self, unit: str, slot: str, variant: str) -> None:
        raise ConnectionError("down")


def test_a_failing_store_falls_back_to_plain_bucketing_counted_never_raised():
    """Every store failure gives plain bucketing and one count; nothing raises."""
    flags = Flags.from_dict(doc(), sticky=Broken())
    before = fallbacks()
    assert serve_all(flags) == serve_all(Flags.from_dict(doc(sticky=None)))
    assert len(USERS) == fallbacks() - before
    got = asyncio.run(flags.aget("exp", "u1"))
    assert Flags.from_dict(doc(sticky=None)).get("exp", "u1") == got
    assert len(USERS) + 1 == fallbacks() - before


class AsyncOnly(MemoryStickyStore):
    """Records which methods were called; sync ones must not be called from async code."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_calls = 0

    def get_assignments(self, unit: str) -> Mapping[str, str]:
        self.sync_calls += 1
        return super().get_assignments(unit)

    def save_assignment(self, unit: str, slot: str, variant: str) -> None:
        self.sync_calls += 1
        super().save_assignment(unit, slot, variant)

    async def aget_assignments(self, unit: str) -> Mapping[str, str]:
        return MemoryStickyStore.get_assignments(self, unit)

    async def asave_assignment(self, unit: str, slot: str, variant: str) -> None:
        MemoryStickyStore.save_assignment(self, unit, slot, variant)


def test_async_evaluation_uses_only_the_async_store_methods():
    """aget/aevaluate read and write the unit with the async methods, and keep units."""
    store = AsyncOnly()
    flags = Flags.from_dict(doc(), sticky=store)

    async def run(users: list[str]) -> dict[str, Any]:
        return {u: await flags.aget("exp", u) for u in users}

    first = asyncio.run(run(USERS))
    flags.set_split("exp", {"a": 1, "b": 1, "c": 98})
    assert first == asyncio.run(run(USERS))
    assert 0 == store.sync_calls
    assert first == serve_all(flags)  # sync evaluations see what async ones recorded
    assert store.sync_calls > 0


def test_threads_agree_on_one_assignment_per_unit():
    """Many threads evaluating the same units all serve each unit one variant."""
    store = MemoryStickyStore()
    flags = Flags.from_dict(doc(), sticky=store)
    seen: list[dict[str, Any]] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        seen.append(serve_all(flags, USERS[:200]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 4 == len(seen)
    assert all(s == seen[0] for s in seen)


def test_memory_store_expires_units_after_ttl():
    """A unit not written for ttl seconds is forgotten (FakeClock, no sleep)."""
    clock = FakeClock()
    store = MemoryStickyStore(ttl=60, clock=clock)
    store.save_assignment("targeting_key||u", "exp__1", "a")
    clock.advance(59)
    assert {"exp__1": "a"} == dict(store.get_assignments("targeting_key||u"))
    clock.advance(2)
    assert {} == dict(store.get_assignments("targeting_key||u"))


def test_memory_store_keeps_at_most_max_units():
    """The least recently used unit goes first past max_units."""
    store = MemoryStickyStore(max_units=2)
    for u in ("u1", "u2", "u3"):
        store.save_assignment(u, "s", "a")
    assert ({}, {"s": "a"}) == (
        dict(store.get_assignments("u1")),
        dict(store.get_assignments("u3")),
    )
    assert isinstance(store, StickyStore)


@pytest.mark.parametrize(
    "value", [True, -1, "", "x" * 65, [1], {"epoch": None}, {"epoch": 1, "ttl": 3}, 1.5]
)
def test_bad_sticky_values_are_refused(value: Any):
    """A sticky that is not an epoch is a ConfigError naming the flag and field."""
    with pytest.raises(ConfigError) as info:
        Flags.from_dict(doc(sticky=value))
    (p,) = info.value.problems
    assert ("exp", "sticky") == (p.flag, p.field)


@pytest.mark.parametrize("value", [0, 7, "2026-q4", {"epoch": 3}])
def test_good_sticky_values_load(value: Any):
    """Ints, strings and {epoch: ...} are epochs."""
    flags = Flags.from_dict(doc(sticky=value))
    fs = flags.flag_set
    assert fs is not None
    expected = str(value["epoch"] if isinstance(value, dict) else value)
    assert expected == fs.flags["exp"].sticky


@settings(max_examples=40, deadline=None)
@given(
    w1=st.tuples(st.integers(0, 100), st.integers(0, 100)),
    w2=st.tuples(st.integers(0, 100), st.integers(0, 100)),
)
def test_any_reweighting_keeps_every_served_unit(
    w1: tuple[int, int], w2: tuple[int, int]
):
    """For any two weightings of the same variants, served units keep their variant."""

    def weights(w: tuple[int, int]) -> dict[str, int]:
        a = min(w)
        b = max(w) - a
        return {"a": a, "b": b, "c": 100 - a - b}

    flags = Flags.from_dict(doc(split=weights(w1)), sticky=MemoryStickyStore())
    first = serve_all(flags, USERS[:100])
    flags.set_split("exp", weights(w2))
    assert first == serve_all(flags, USERS[:100])


# -- Redis ---------------------------------------------------------------------------
@pytest.fixture
def redis_sticky(redis_url: str) -> Any:
    prefix = f"tipkit-test:{uuid.uuid4().hex[:12]}:sticky:"
    store = RedisStickyStore(redis_url, prefix=prefix, ttl=3600, timeout=5.0)
    yield store
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()
    store.close()


def test_redis_store_keeps_units_across_flags_objects_and_sets_a_ttl(
    redis_sticky: RedisStickyStore, redis_url: str
):
    """Two Flags (two processes' worth) sharing a Redis sticky store agree; hashes expire."""
    one = Flags.from_dict(doc(), sticky=redis_sticky)
    first = serve_all(one, USERS[:50])
    other = Flags.from_dict(doc(split={"a": 0, "b": 0, "c": 100}), sticky=redis_sticky)
    assert first == serve_all(other, USERS[:50])
    client = redis.Redis.from_url(redis_url)
    ttl = client.ttl(f"{redis_sticky.prefix}targeting_key||user-0")
    client.close()
    assert 3500 < ttl <= 3600


def test_redis_store_async_methods(redis_sticky: RedisStickyStore):
    """Async evaluations read and write through the async client."""
    flags = Flags.from_dict(doc(), sticky=redis_sticky)

    async def run() -> dict[str, Any]:
        out = {u: await flags.aget("exp", u) for u in USERS[:30]}
        await redis_sticky.aclose()
        return out

    first = asyncio.run(run())
    assert first == serve_all(
        Flags.from_dict(doc(split={"a": 100, "b": 0, "c": 0}), sticky=redis_sticky),
        USERS[:30],
    )


def test_unreachable_redis_falls_back_within_its_timeout():
    """A Redis that is not there: plain bucketing, counted, never raised."""
    store = RedisStickyStore("redis://127.0.0.1:9/0", timeout=0.5)
    flags = Flags.from_dict(doc(), sticky=store)
    before = fallbacks()
    assert Flags.from_dict(doc(sticky=None)).get("exp", "u1") == flags.get("exp", "u1")
    assert 1 == fallbacks() - before
    store.close()
