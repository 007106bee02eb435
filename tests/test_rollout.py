import asyncio
import logging
import threading

import pytest

from tipkit.errors import (
    ConfigError,
    RolloutStateError,
    StoreConflictError,
    StoreError,
    TipkitError,
)
from tipkit.flags import Flags, InMemoryProvider, Reason
from tipkit.rollout import (
    ErrorRate,
    ErrorRateCheck,
    LatencyCheck,
    LatencyGuard,
    MetricCheck,
    Rollout,
    RolloutJudged,
    RolloutRolledBack,
    RolloutStageChanged,
)
from tipkit.stores import MemoryStore
from tipkit.telemetry import _names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import EPOCH, FakeClock, capture_events

SPLIT_FLAG = {
    "variants": {"new": True, "old": False},
    "off_variant": "old",
    "rules": [
        {
            "id": "beta",
            "if": {"attr": "beta", "op": "eq", "value": True},
            "serve": "new",
        }
    ],
    "fallthrough": {"split": {"new": 1, "old": 99}},
}


def make(clock, *, flag=None, store=None, **kwargs):
    store = store if store is not None else MemoryStore(clock=clock)
    doc = {"flags": {"pricing": flag or SPLIT_FLAG}}
    flags = Flags(InMemoryProvider(doc), store=store, clock=clock)
    options = {
        "flags": flags,
        "flag": "pricing",
        "min_samples": 50,
        "min_stage_duration": 10.0,
        "clock": clock,
        "checks": [ErrorRateCheck()],
    }
    options.update(kwargs)
    return Rollout("pricing-rollout", **options), flags, store


def fleet_totals(store, key="pricing-rollout/counts/1/0"):
    """Return the fleet's totals of a stage as stored (batch ids and all)."""
    return store.get("tipkit.rollouts", key).value["totals"]


def drive(
    rollout, clock, n, *, canary_error=0.0, control_error=0.0, start=0, step=0.01
):
    """Send n requests from distinct users; errors by deterministic fractions."""
    acc = [0.0, 0.0]
    for i in range(start, start + n):
        with rollout.observe(f"user-{i}") as arm:
            clock.advance(step)
            k = 1 if arm.is_canary else 0
            acc[k] += canary_error if k else control_error
            if acc[k] >= 1.0:
                acc[k] -= 1.0
                arm.fail()


def test_stages_progress_to_completion_with_history_timestamps():
    """Healthy traffic advances 1 -> 5 -> 25 -> 50 -> 100 and completes; history uses time()."""
    clock = FakeClock()
    rollout, _, _ = make(clock, checks=[ErrorRateCheck(pass_below=0.05)])
    with capture_events(RolloutStageChanged) as events:
        drive(rollout, clock, 30_000)
    st = rollout.status()
    assert (st.status, st.percent, st.stage) == ("completed", 100.0, 4)
    assert [e.to_percent for e in events] == [5.0, 25.0, 50.0, 100.0]
    actions = [h["action"] for h in st.history]
    assert actions == ["started", "advanced", "advanced", "advanced", "completed"]
    assert all(h["at"] >= EPOCH for h in st.history)
    assert st.history[1]["verdict"]["decision"] == "PASS"
    assert "status=completed" in repr(rollout)


def test_a_worse_canary_is_rolled_back_at_once_everywhere():
    """FAIL: share 0, flag overridden to control for every Flags on the store, event and hook."""
    clock = FakeClock()
    seen = []
    rollout, _, store = make(
        clock, stages=[50, 100], on_rollback=seen.append, runbook="https://runbook/x"
    )
    other = Flags(
        InMemoryProvider({"flags": {"pricing": SPLIT_FLAG}}), store=store, clock=clock
    )
    with capture_events(RolloutRolledBack) as events:
        drive(rollout, clock, 3000, canary_error=0.5, control_error=0.01)
    st = rollout.status()
    assert (st.status, st.percent) == ("rolled_back", 0.0)
    assert len(events) == 1
    ev = events[0]
    assert seen == [ev]
    assert (ev.check, ev.automatic, ev.percent, ev.runbook) == (
        "error_rate",
        True,
        50.0,
        "https://runbook/x",
    )
    assert ev.canary_count >= 100
    assert ev.lower is not None
    assert ev.lower > 0.0
    assert ev.canary_rate > ev.control_rate
    assert ev.otel_attributes()[_names.RUNBOOK] == "https://runbook/x"
    assert other.evaluate("pricing", "user-1").variant == "old"
    with rollout.observe("user-1") as arm:
        pass
    assert (arm.is_canary, arm.judged) == (False, False)
    assert st.history[-1]["action"] == "rolled_back"


def test_rollback_hook_errors_are_logged_not_raised(caplog):
    """A raising on_rollback hook does not break the request that triggered the rollback."""
    clock = FakeClock()

    def boom(_event):
        raise RuntimeError("hook")

    rollout, _, _ = make(clock, stages=[50, 100], on_rollback=boom)
    with caplog.at_level(logging.ERROR, logger="tipkit"):
        drive(rollout, clock, 3000, canary_error=0.5)
    assert rollout.status().status == "rolled_back"
    assert "on_rollback hook" in caplog.text


def test_pause_resume_advance_and_manual_rollback():
    """Manual controls work at any time; a rolled-back rollout restarts from stage one."""
    clock = FakeClock()
    rollout, flags, _ = make(clock)
    rollout.pause()
    drive(rollout, clock, 20_000)
    assert (rollout.status().status, rollout.percent) == ("paused", 1.0)
    rollout.resume()
    rollout.advance()
    assert (rollout.status().status, rollout.percent) == ("running", 5.0)
    with capture_events(RolloutRolledBack) as events:
        rollout.rollback("bad dashboards")
        rollout.rollback("twice is a no-op")
    assert [(e.reason, e.automatic, e.check) for e in events] == [
        ("bad dashboards", False, None)
    ]
    assert flags.evaluate("pricing", "user-1").reason is Reason.STATIC
    with pytest.raises(RolloutStateError, match="resume"):
        rollout.advance()
    with pytest.raises(RolloutStateError, match="rolled back"):
        rollout.pause()
    rollout.resume("fixed")
    st = rollout.status()
    assert (st.status, st.percent, st.history[-1]["action"]) == (
        "running",
        1.0,
        "restarted",
    )
    assert flags.evaluate("pricing", "user-1").reason is Reason.SPLIT
    for _ in range(4):
        rollout.advance()
    assert rollout.status().status == "completed"
    with pytest.raises(RolloutStateError, match="completed") as info:
        rollout.resume()
    # In the error tree, and still the RuntimeError it was before.
    assert isinstance(info.value, TipkitError)
    assert isinstance(info.value, RuntimeError)
    assert (info.value.rollout, info.value.status) == ("pricing-rollout", "completed")


def test_restart_resumes_from_the_store():
    """A new process (new objects, same store) resumes stage, status and judge counts."""
    clock = FakeClock()
    rollout, _, store = make(clock, min_samples=10**6)
    rollout.advance()
    drive(rollout, clock, 5000)
    rollout.status()
    clock.advance(5)
    rollout.evaluate()  # persists counts (at most every refresh interval)
    before = rollout.status().verdict
    again, _, _ = make(clock, store=store, min_samples=10**6)
    assert (again.status().stage, again.percent) == (1, 5.0)
    after = again.evaluate()
    assert after is not None
    assert before is not None
    assert after.checks[0].canary_count == before.checks[0].canary_count > 0


def test_only_split_assigned_requests_feed_the_judge():
    """Users pinned by a rule or an override get their variant but are not judged."""
    clock = FakeClock()
    rollout, flags, _ = make(clock)
    for i in range(500):
        with rollout.observe({"targeting_key": f"b{i}", "beta": True}) as arm:
            assert (arm.is_canary, arm.judged) == (True, False)
            arm.fail()
    assert rollout.status().canary.count == 0
    flags.set_override("pricing", "old")
    with rollout.observe("user-7") as arm:
        assert (arm.is_canary, arm.judged, arm.variant) == (False, False, "old")
    flags.clear_override("pricing")
    with rollout.observe("user-7") as arm:
        assert arm.judged
    with rollout.observe(None) as arm:  # no targeting key: the flag errors, not judged
        assert (arm.is_canary, arm.judged) == (False, False)
    st = rollout.status()
    assert st.canary.count + st.control.count == 1


def test_raising_a_stage_only_adds_users_to_the_canary():
    """The canary cohort at 5 % contains the cohort at 1 % (same hash, salt and key)."""
    clock = FakeClock()
    rollout, _, _ = make(clock)
    users = [f"u{i}" for i in range(5000)]

    def cohort():
        out = set()
        for u in users:
            with rollout.observe(u) as arm:
                if arm.is_canary:
                    out.add(u)
        return out

    one = cohort()
    rollout.advance()
    five = cohort()
    assert one < five
    assert 25 < len(one) < 80
    assert 200 < len(five) < 300


KEYS = [f"user-{i}" for i in range(20_000)]


def test_plain_flag_evaluations_elsewhere_follow_the_stage():
    """flags.get/is_enabled outside the rollout serve the stage's share, the arms' cohort."""
    clock = FakeClock()
    rollout, flags, _ = make(clock, stages=[10, 50, 100])
    for percent in (10.0, 50.0):
        share = sum(flags.is_enabled("pricing", k) for k in KEYS) / len(KEYS)
        assert abs(share - percent / 100) < 0.02
        for k in KEYS[:300]:
            with rollout.observe(k) as arm:
                pass
            assert (arm.is_canary, arm.judged) == (flags.get("pricing", k), True)
        assert {"new": percent, "old": 100 - percent} == flags.get_split("pricing")
        rollout.advance()
    assert all(flags.is_enabled("pricing", k) for k in KEYS[:1000])


def test_advancing_only_adds_users_to_the_canary_everywhere():
    """Over 20k keys, each stage's canary cohort (as flags.get sees it) holds the previous one."""
    clock = FakeClock()
    rollout, flags, _ = make(clock)
    before: set[str] = set()
    for percent in (1.0, 5.0, 25.0, 50.0):
        assert percent == rollout.percent
        now = {k for k in KEYS if flags.is_enabled("pricing", k)}
        assert before < now
        assert abs(len(now) / len(KEYS) - percent / 100) < 0.01
        before = now
        rollout.advance()
    assert {k for k in KEYS if flags.is_enabled("pricing", k)} == set(KEYS)


def test_rollback_serves_control_to_every_evaluation_on_the_next_call():
    """Rollback: canary share 0 in the store and control for every Flags sharing it, at once."""
    clock = FakeClock()
    rollout, flags, store = make(clock, stages=[50, 100])
    peer = Flags(
        InMemoryProvider({"flags": {"pricing": SPLIT_FLAG}}),
        store=store,
        clock=clock,
        refresh_interval=3600,
    )
    canary = [k for k in KEYS[:2000] if peer.is_enabled("pricing", k)]
    assert 800 < len(canary) < 1200
    rollout.rollback("bad")
    assert not any(peer.is_enabled("pricing", k) for k in canary)
    assert not any(flags.is_enabled("pricing", k) for k in canary)
    assert {"new": 0.0, "old": 100.0} == flags.get_split("pricing")
    # The split alone holds everyone on control (the override is belt and braces).
    flags.clear_override("pricing")
    details = [peer.evaluate("pricing", k) for k in canary]
    assert {("old", Reason.SPLIT)} == {(d.variant, d.reason) for d in details}


def test_a_second_flags_sharing_the_store_sees_the_stage():
    """Another Flags on the store (long refresh_interval) follows each advance on its next call."""
    clock = FakeClock()
    rollout, _, store = make(clock, stages=[1, 50, 100])
    other = Flags(
        InMemoryProvider({"flags": {"pricing": SPLIT_FLAG}}),
        store=store,
        clock=clock,
        refresh_interval=3600,
    )
    assert 0 < sum(other.is_enabled("pricing", k) for k in KEYS[:4000]) < 80
    rollout.advance()
    share = sum(other.is_enabled("pricing", k) for k in KEYS[:4000]) / 4000
    assert 0.45 < share < 0.55


def test_requests_served_by_other_weights_are_not_judged():
    """Weights other than the stage's (another writer, a lagging process) feed no judge."""
    clock = FakeClock()
    rollout, flags, _ = make(clock, stages=[50, 100], refresh_interval=3600)
    rollout.status()  # read the store now; the next read is an hour away
    flags.set_split("pricing", {"new": 10, "old": 90})
    arms = []
    for k in KEYS[:200]:
        with rollout.observe(k) as arm:
            arms.append(arm)
    assert 5 < sum(a.is_canary for a in arms) < 40
    assert not any(a.judged for a in arms)
    assert 0 == rollout.status().canary.count + rollout.status().control.count
    # That status() re-read the store and put the stage's weights back.
    assert {"new": 50.0, "old": 50.0} == flags.get_split("pricing")
    with rollout.observe("user-1") as arm:
        pass
    assert arm.judged


def test_rule_splits_follow_the_stage_and_a_plain_fallthrough_becomes_a_split():
    """Every split of the flag serves the stage; a fallthrough serving one variant is split too."""
    clock = FakeClock()
    flag = {
        "variants": {"new": True, "old": False},
        "rules": [
            {
                "id": "nz",
                "if": {"attr": "country", "op": "eq", "value": "NZ"},
                "serve": {"split": {"new": 90, "old": 10}},
            }
        ],
        "default_variant": "old",
    }
    rollout, flags, _ = make(clock, flag=flag, stages=[20, 100])
    nz = [{"targeting_key": k, "country": "NZ"} for k in KEYS[:4000]]
    assert 0.15 < sum(flags.is_enabled("pricing", c) for c in nz) / 4000 < 0.25
    assert 0.15 < sum(flags.is_enabled("pricing", k) for k in KEYS[:4000]) / 4000 < 0.25
    with rollout.observe(nz[0]) as arm:
        pass
    assert arm.judged
    assert {"new": 20.0, "old": 80.0} == flags.get_split("pricing", rule_id="nz")


def test_canary_and_control_must_differ():
    """canary_variant == control_variant is refused naming the flag."""
    clock = FakeClock()
    with pytest.raises(ConfigError, match="must differ"):
        make(clock, canary_variant="old")


def test_sample_ratio_mismatch_holds_the_stage():
    """One heavy user breaks Bernoulli assignment: SRM is flagged and the stage never passes."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100], min_samples=100)
    with capture_events(RolloutJudged) as judged:
        for i in range(6000):
            key = "bot" if i % 2 else f"user-{i}"
            with rollout.observe(key):
                clock.advance(0.01)
    st = rollout.status()
    assert (st.status, st.percent) == ("running", 50.0)
    assert st.verdict is not None
    assert st.verdict.sample_ratio.mismatch
    assert "sample ratio mismatch" in st.verdict.reason
    assert judged
    assert judged[-1].decision == "INCONCLUSIVE"


@pytest.mark.parametrize(
    ("policy", "status", "percent"),
    [
        ("hold", "running", 50.0),
        ("pause", "paused", 50.0),
        ("rollback", "rolled_back", 0.0),
    ],
)
def test_on_inconclusive_after_max_stage_duration(policy, status, percent):
    """Too few samples by max_stage_duration: hold, pause or roll back as configured."""
    clock = FakeClock()
    rollout, _, _ = make(
        clock,
        stages=[50, 100],
        min_samples=10**6,
        max_stage_duration=60.0,
        on_inconclusive=policy,
    )
    drive(rollout, clock, 500, step=0.5)
    st = rollout.status()
    assert (st.status, st.percent) == (status, percent)
    assert "inconclusive after" in st.history[-1]["reason"]


def test_route_runs_canary_or_fallback_and_counts_errors():
    """route(): the canary cohort runs the new code, others the fallback; errors are outcomes."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100])

    def old(user):
        return "old"

    @rollout.route(fallback=old, context=lambda user: user)
    def new(user):
        if user.endswith("7"):
            raise ValueError(user)
        return "new"

    results = {}
    for i in range(200):
        try:
            results[f"u{i}"] = new(f"u{i}")
        except ValueError:
            results[f"u{i}"] = "error"
    assert set(results.values()) == {"new", "old", "error"}
    st = rollout.status()
    assert st.canary.count + st.control.count == 200
    assert st.canary.errors == sum(v == "error" for v in results.values())
    assert new.__name__ == "new"


def test_route_on_async_functions():
    """route() decorates async def; an async or sync fallback is awaited as needed."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100])

    async def old(user):
        return "old"

    @rollout.route(fallback=old, context=lambda user: user)
    async def new(user):
        await asyncio.sleep(0)  # noqa: TID251  # yields only
        return "new"

    async def main():
        return await asyncio.gather(*(new(f"u{i}") for i in range(100)))

    out = asyncio.run(main())
    assert set(out) == {"new", "old"}
    st = rollout.status()
    assert st.canary.count + st.control.count == 100


def test_route_context_errors_go_to_the_fallback_unjudged():
    """A raising context function sends the call to the fallback and is not judged."""
    clock = FakeClock()
    rollout, _, _ = make(clock)

    def ctx(_user):
        raise KeyError("no id")

    @rollout.route(fallback=lambda user: "old", context=ctx)
    def new(user):
        return "new"

    assert new("x") == "old"
    with pytest.raises(TypeError, match="generator"):

        @rollout.route(fallback=lambda: None)
        def gen():
            yield 1


def test_cancellation_is_not_an_outcome_and_async_with_works():
    """Async with observe(): a cancelled block records nothing; a normal one records."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100])

    async def main():
        async with rollout.observe("user-1"):
            pass
        with pytest.raises(asyncio.CancelledError):
            async with rollout.observe("user-2"):
                raise asyncio.CancelledError

    asyncio.run(main())
    st = rollout.status()
    assert st.canary.count + st.control.count == 1


def test_request_counters_and_stage_gauge():
    """tipkit.rollout.requests counts by arm and outcome; the stage gauge reports percent."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100])
    name = "pricing-rollout"
    before = sum(
        REGISTRY.value(
            _names.ROLLOUT_REQUESTS,
            {_names.ROLLOUT_NAME: name, _names.ARM: arm, _names.OUTCOME: "failure"},
        )
        for arm in ("canary", "control")
    )
    for i in range(10):
        with rollout.observe(f"u{i}") as arm:
            arm.fail()
    after = sum(
        REGISTRY.value(
            _names.ROLLOUT_REQUESTS,
            {_names.ROLLOUT_NAME: name, _names.ARM: arm, _names.OUTCOME: "failure"},
        )
        for arm in ("canary", "control")
    )
    assert after - before == 10
    gauges = [g for g in REGISTRY.gauges(_names.ROLLOUT_STAGE) if g.value == 50.0]
    assert gauges


def test_threads_observe_concurrently_without_losing_outcomes():
    """Eight threads started together: every judged outcome is counted once."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100], min_samples=10**6)
    barrier = threading.Barrier(8)

    def work(t):
        barrier.wait()
        for i in range(500):
            with rollout.observe(f"t{t}-{i}"):
                pass

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    st = rollout.status()
    assert st.canary.count + st.control.count == 4000


def test_created_flag_follows_the_stage():
    """With an InMemoryProvider and no flag, the rollout creates it and keeps its weights."""
    clock = FakeClock()
    flags = Flags(InMemoryProvider(), store=MemoryStore(clock=clock), clock=clock)
    rollout = Rollout("brand-new", flags=flags, clock=clock, stages=[10, 100])
    assert flags.flag_set is not None
    assert "10%" in flags.flag_set.flags["brand-new"].fallthrough.describe()
    rollout.advance()
    assert "100%" in flags.flag_set.flags["brand-new"].fallthrough.describe()


def test_bad_configuration_is_refused():
    """Bad stages, policies, flags and variants raise naming the problem."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="increase"):
        make(clock, stages=[5, 1])
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        make(clock, stages=[0, 50])
    with pytest.raises(ValueError, match="at least one"):
        make(clock, stages=[])
    with pytest.raises(TypeError, match="percentages"):
        make(clock, stages=["5"])
    with pytest.raises(ValueError, match="on_inconclusive"):
        make(clock, on_inconclusive="panic")
    with pytest.raises(ConfigError, match="two variants"):
        make(clock, flag={"variants": {"only": True}, "default_variant": "only"})
    with pytest.raises(ConfigError, match="not a variant"):
        make(clock, canary_variant="nope")
    with pytest.raises(TypeError, match="Flags"):
        Rollout("x", flags=object(), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        make(clock, flags=None) if False else Rollout("", flags=make(clock)[1])


def test_latency_check_rolls_back_a_slow_canary():
    """The block's duration is its latency: a canary slower than 250 ms fails the latency check."""
    clock = FakeClock()
    rollout, _, _ = make(
        clock,
        stages=[50, 100],
        min_samples=500,
        checks=[ErrorRateCheck(), LatencyCheck()],
    )
    with capture_events(RolloutRolledBack) as events:
        for i in range(4000):
            with rollout.observe(f"user-{i}") as arm:
                clock.advance(0.4 if arm.is_canary and i % 4 == 0 else 0.05)
    assert rollout.status().status == "rolled_back"
    assert events[0].check == "latency>0.25s"


def test_a_single_full_stage_is_complete_at_once():
    """stages=[100] has no control to judge against: the rollout is complete from the start."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[100])
    with rollout.observe("user-1") as arm:
        pass
    assert (rollout.status().status, arm.is_canary, arm.judged) == (
        "completed",
        True,
        False,
    )


# ------------------------------------------------------------------ names


def test_checks_is_the_parameter_and_guards_its_old_name():
    """checks= takes metric checks; guards= still works; giving both is refused."""
    clock = FakeClock()
    new, _, _ = make(clock, checks=[ErrorRateCheck(0.01), LatencyCheck()])
    old, _, _ = make(clock, checks=None, guards=[ErrorRate(0.01), LatencyGuard()])
    assert new.checks == old.checks == old.guards
    assert all(isinstance(c, MetricCheck) for c in new.checks)
    assert "checks=[ErrorRateCheck(max_increase=0.01" in repr(new)
    default, _, _ = make(clock, checks=None)
    assert (ErrorRateCheck(), LatencyCheck()) == default.checks
    with pytest.raises(TypeError, match="not both"):
        make(clock, guards=[ErrorRateCheck()])


def test_rollback_event_names_the_check_and_keeps_guard_as_an_alias():
    """RolloutRolledBack.check is the failed check's label; .guard reads the same."""
    clock = FakeClock()
    rollout, _, _ = make(clock, stages=[50, 100])
    with capture_events(RolloutRolledBack) as events:
        drive(rollout, clock, 3000, canary_error=0.5)
    assert [("error_rate", "error_rate")] == [(e.check, e.guard) for e in events]


# ------------------------------------------------------------------ stores and loops


class LoopWatchingStore:
    """A MemoryStore whose sync methods note each call made on a running event loop.

    Its async methods are its own (they call the inner store's sync methods),
    so what they do is never counted.
    """

    def __init__(self, clock):
        self.inner = MemoryStore(clock=clock)
        self.on_loop: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name.startswith("_") or not callable(attr):
            return attr
        if asyncio.iscoroutinefunction(attr):
            sync = getattr(self.inner, name[1:])

            async def twin(*args, **kwargs):
                return sync(*args, **kwargs)

            return twin

        def checked(*args, **kwargs):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass
            else:
                self.on_loop.append(name)
            return attr(*args, **kwargs)

        return checked


@pytest.mark.parametrize("fleet_counts", [False, True])
def test_async_observe_never_calls_the_sync_store_on_the_event_loop(fleet_counts):
    """Under async with, refreshes, fleet counts and the rollback await the store."""
    clock = FakeClock()
    store = LoopWatchingStore(clock)
    rollout, flags, _ = make(
        clock,
        store=store,
        stages=[50, 100],
        refresh_interval=0.5,
        fleet_counts=fleet_counts,
        flush_every=20,
    )

    async def main():
        for i in range(3000):
            async with rollout.observe(f"user-{i}") as arm:
                clock.advance(0.01)
                if arm.is_canary and i % 2:
                    arm.fail()

    with capture_events(RolloutRolledBack) as events:
        asyncio.run(main())
    assert [] == store.on_loop
    assert 1 == len(events)
    assert events[0].canary_count >= 100
    # The flags' writes ran off the loop: the override serves control to everyone.
    assert flags.evaluate("pricing", "user-1").reason is Reason.STATIC
    assert "rolled_back" == rollout.status().status
    if fleet_counts:
        assert fleet_totals(store)["n1"] >= 100


class FlakyStore(MemoryStore):
    """A MemoryStore that raises StoreError from every data call while .down."""

    down = False

    def _check(self):
        if self.down:
            raise StoreError("store is down") from ConnectionError("refused")

    def get(self, *args, **kwargs):
        self._check()
        return super().get(*args, **kwargs)

    def set(self, *args, **kwargs):
        self._check()
        return super().set(*args, **kwargs)

    def compare_and_set(self, *args, **kwargs):
        self._check()
        return super().compare_and_set(*args, **kwargs)

    def increment(self, *args, **kwargs):
        self._check()
        return super().increment(*args, **kwargs)

    def peek_status(self, name):
        """The stored status of rollout *name*, read past the outage."""
        return super().get("tipkit.rollouts", name).value["status"]


def test_a_store_outage_never_raises_into_requests_and_the_rollback_acts_at_once():
    """Store down: requests run on; the FAIL rolls back here at once, queued; back up: stored."""
    from tipkit.stores import StoreRecovered, StoreUnavailable
    from tipkit.stores._durable import flush_all

    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _, _ = make(clock, store=store, stages=[50, 100], refresh_interval=0.5)
    store.down = True
    with capture_events(StoreUnavailable, StoreRecovered, RolloutRolledBack) as events:
        drive(rollout, clock, 3000, canary_error=0.5)
        assert (0.0, "rolled_back") == (rollout.percent, rollout._local.doc["status"])
        assert ["pricing-rollout"] == [a.key for a in rollout.pending()]
        assert "running" == store.peek_status("pricing-rollout")
        with pytest.raises(RolloutStateError, match="rolled back"):
            rollout.pause()  # already rolled back here: the control says so
        store.down = False
        flush_all()  # every durable of this worker: the checks below are this rollout's
    assert "rolled_back" == store.peek_status("pricing-rollout")
    assert [] == rollout.pending()
    assert "rolled_back" == rollout.status().status
    mine = [type(e).__name__ for e in events if e.name == "pricing-rollout"]
    assert [
        "StoreUnavailable",
        "RolloutRolledBack",
        "StoreRecovered",
    ] == mine[:1] + [m for m in mine[1:] if m != "StoreUnavailable"][:2]


class LosingStore(MemoryStore):
    """A MemoryStore whose compare-and-set always loses, once .losing."""

    losing = False

    def compare_and_set(self, *args, **kwargs):
        if self.losing:
            return None
        return super().compare_and_set(*args, **kwargs)


def test_a_transition_that_keeps_losing_its_compare_and_set_raises():
    """Eight lost races: StoreConflictError (a StoreError and the RuntimeError it was)."""
    clock = FakeClock()
    store = LosingStore(clock=clock)
    rollout, _, _ = make(clock, store=store)
    store.losing = True
    with pytest.raises(StoreConflictError, match="kept changing") as info:
        rollout.advance()
    assert isinstance(info.value, RuntimeError)
    assert (info.value.namespace, info.value.key, info.value.tries) == (
        "tipkit.rollouts",
        "pricing-rollout",
        8,
    )
    assert "running" == rollout.status().status


class OwnedLock:
    """A lock that knows which thread holds it (threading.Lock does not)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner: int | None = None

    def acquire(self, *args, **kwargs):
        got = self._lock.acquire(*args, **kwargs)
        if got:
            self.owner = threading.get_ident()
        return got

    def release(self):
        self.owner = None
        self._lock.release()

    def locked(self):
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


class LockWatchingStore(MemoryStore):
    """A MemoryStore that notes each call made by a thread holding the rollout's lock.

    Another thread's call while this one holds the lock (tipkit's flusher
    replaying the rollback's flag action, say) is no such call: only the
    holder's own calls are counted.
    """

    rollout = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held: list[str] = []

    def watch_lock_of(self, rollout):
        self.rollout = rollout
        rollout._local.lock = OwnedLock()

    def _check(self, name):
        lock = None if self.rollout is None else self.rollout._local.lock
        if lock is not None and lock.owner == threading.get_ident():
            self.held.append(name)

    def get(self, *args, **kwargs):
        self._check("get")
        return super().get(*args, **kwargs)

    def set(self, *args, **kwargs):
        self._check("set")
        return super().set(*args, **kwargs)

    def compare_and_set(self, *args, **kwargs):
        self._check("compare_and_set")
        return super().compare_and_set(*args, **kwargs)

    def increment(self, *args, **kwargs):
        self._check("increment")
        return super().increment(*args, **kwargs)


def test_no_store_call_is_made_while_the_rollout_holds_its_lock():
    """Stages, fleet counts, a rollback, a restart and status: the lock is never held."""
    clock = FakeClock()
    store = LockWatchingStore(clock=clock)
    rollout, _, _ = make(
        clock, store=store, stages=[10, 50, 100], fleet_counts=True, flush_every=10
    )
    store.watch_lock_of(rollout)
    drive(rollout, clock, 4000)
    rollout.rollback("by hand")
    rollout.resume("again")
    drive(rollout, clock, 2000, start=10_000, canary_error=0.5)
    st = rollout.status()
    assert "rolled_back" == st.status
    assert [] == store.held
    actions = [h["action"] for h in st.history]
    assert (2, 1) == (actions.count("rolled_back"), actions.count("restarted"))


class GatedStore(MemoryStore):
    """A MemoryStore whose async compare-and-set waits for .gate once it is set up."""

    gate: asyncio.Event | None = None
    reached: asyncio.Event | None = None

    async def acompare_and_set(self, *args, **kwargs):
        if self.gate is not None and self.reached is not None:
            self.reached.set()
            await self.gate.wait()
        return super().compare_and_set(*args, **kwargs)


def test_a_cancelled_request_does_not_cut_its_rollback_short():
    """The request whose exit writes the rollback is cancelled: the rollback still completes."""
    clock = FakeClock()
    store = GatedStore(clock=clock)
    hooks = []  # the hook is called after the write
    rollout, flags, _ = make(
        clock, store=store, stages=[50, 100], on_rollback=hooks.append
    )

    async def request(i):
        async with rollout.observe(f"user-{i}") as arm:
            clock.advance(0.01)
            if arm.is_canary:
                arm.fail()

    async def main():
        store.gate, store.reached = asyncio.Event(), asyncio.Event()
        i = 0
        while True:
            task = asyncio.ensure_future(request(i))
            waiter = asyncio.ensure_future(store.reached.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if store.reached.is_set():
                break
            waiter.cancel()
            i += 1
        task.cancel()  # cancelled while its exit waits on the rollback's write
        with pytest.raises(asyncio.CancelledError):
            await task
        store.gate.set()
        # The shielded rollback is still running: wait for every other task.
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))

    asyncio.run(main())
    assert 1 == len(hooks)
    assert flags.evaluate("pricing", "user-1").reason is Reason.STATIC


def test_async_observe_on_redis_rolls_back_through_the_async_methods(redis_store):
    """On a real Redis store, async traffic judged on fleet counts rolls back once."""
    clock = FakeClock()
    rollout, flags, _ = make(
        clock, store=redis_store, stages=[50, 100], refresh_interval=0.5, flush_every=20
    )

    async def main():
        for i in range(3000):
            async with rollout.observe(f"user-{i}") as arm:
                clock.advance(0.01)
                if arm.is_canary and i % 2:
                    arm.fail()
            if rollout.percent == 0.0:
                return

    with capture_events(RolloutRolledBack) as events:
        asyncio.run(main())
    assert (1, "rolled_back") == (len(events), rollout.status().status)
    assert fleet_totals(redis_store)["n1"] >= 100
    assert flags.evaluate("pricing", "user-1").reason is Reason.STATIC


def test_an_inconclusive_pause_lost_to_an_outage_is_written_when_the_store_is_back():
    """on_inconclusive="pause" due while the store is down: paused once it answers."""
    clock = FakeClock()
    store = FlakyStore(clock=clock)
    rollout, _, _ = make(
        clock,
        store=store,
        stages=[50, 100],
        min_samples=10**6,
        max_stage_duration=60.0,
        on_inconclusive="pause",
    )
    store.down = True
    drive(rollout, clock, 200, step=0.5)  # 100 s: past max_stage_duration
    store.down = False
    clock.advance(2)
    rollout.evaluate()
    st = rollout.status()
    assert ("paused", "paused") == (st.status, st.history[-1]["action"])
