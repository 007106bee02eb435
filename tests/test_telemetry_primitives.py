"""OpenTelemetry export of the real primitives: flags, breaker, rate limiter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tipkit.errors import CircuitOpenError
from tipkit.telemetry import _names as n
from tipkit.telemetry import hash_context_id, synthetic, traced, uninstrument
from tipkit.telemetry._capture import CapturedTelemetry, capture_telemetry
from tipkit.testing import FakeClock

flags_mod = pytest.importorskip("tipkit.flags")
breaker_mod = pytest.importorskip("tipkit.breaker")
ratelimit_mod = pytest.importorskip("tipkit.ratelimit")

RUNBOOK = "https://runbooks.invalid/payments"


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    uninstrument()
    yield
    uninstrument()


DOC: dict[str, Any] = {
    "flags": {
        "tel-static": {"variants": {"on": True, "off": False}, "default_variant": "on"},
        "tel-target": {
            "variants": {"a": "A", "b": "B"},
            "default_variant": "a",
            "rules": [
                {
                    "id": "nz",
                    "if": {"attr": "country", "op": "eq", "value": "NZ"},
                    "serve": "b",
                }
            ],
        },
        "tel-split": {
            "variants": {"a": "A", "b": "B"},
            "default_variant": "a",
            "fallthrough": {"split": {"a": 50, "b": 50}},
        },
        "tel-off": {
            "state": "disabled",
            "variants": {"a": 1, "b": 2},
            "default_variant": "a",
            "off_variant": "b",
        },
    }
}


def flag_events(cap: CapturedTelemetry) -> list[dict[str, Any]]:
    return [e.attributes for e in cap.events("feature_flag.evaluation")]


# feature flags


def test_flag_event_attributes_for_each_reason_and_error() -> None:
    """Each reason and error gives the feature_flag.evaluation event its exact attributes."""
    flags = flags_mod.Flags.from_dict(DOC)
    calls = [
        ("tel-static", None, False),
        ("tel-target", {"targeting_key": "u1", "country": "NZ"}, "x"),
        ("tel-target", {"targeting_key": "u1", "country": "AU"}, "x"),
        ("tel-split", "u1", "x"),
        ("tel-off", "u1", 0),
        ("tel-missing", "u1", "d"),
        ("tel-static", "u1", "a string"),
    ]
    with capture_telemetry() as cap:
        with cap.recording_span("request"):
            details = [flags.evaluate(k, ctx, d) for k, ctx, d in calls]
        events = flag_events(cap)
    base = {n.FEATURE_FLAG_PROVIDER: "tipkit"}
    version = {d.flag_key: d.flag_version for d in details}

    def ok(key: str, variant: str, reason: str) -> dict[str, Any]:
        return {
            **base,
            n.FEATURE_FLAG_KEY: key,
            n.FEATURE_FLAG_VARIANT: variant,
            n.FEATURE_FLAG_REASON: reason,
            n.FEATURE_FLAG_VERSION: version[key],
        }

    assert events == [
        ok("tel-static", "on", "static"),
        ok("tel-target", "b", "targeting_match"),
        ok("tel-target", "a", "default"),
        ok("tel-split", details[3].variant, "split"),
        ok("tel-off", "b", "disabled"),
        {
            **base,
            n.FEATURE_FLAG_KEY: "tel-missing",
            n.FEATURE_FLAG_REASON: "error",
            n.ERROR_TYPE: "flag_not_found",
            n.FEATURE_FLAG_ERROR_MESSAGE: "flag 'tel-missing' not found",
        },
        {
            **base,
            n.FEATURE_FLAG_KEY: "tel-static",
            n.FEATURE_FLAG_REASON: "error",
            n.FEATURE_FLAG_VERSION: version["tel-static"],
            n.ERROR_TYPE: "type_mismatch",
            n.FEATURE_FLAG_ERROR_MESSAGE: details[6].error_message,
        },
    ]
    assert all(
        v.islower() for e in events for k, v in e.items() if k == n.FEATURE_FLAG_REASON
    )


def test_flag_evaluations_counter_and_no_log_events_by_default() -> None:
    """tipkit.flag.evaluations counts by key, variant and reason; no log event per evaluation."""
    flags = flags_mod.Flags.from_dict(DOC)
    with capture_telemetry() as cap:
        for _ in range(3):
            flags.get(
                "tel-target", {"targeting_key": "u", "country": "NZ"}, default="x"
            )
        flags.get("tel-missing", "u", default="x")
        hits = cap.metric(
            n.FLAG_EVALUATIONS,
            {
                n.FEATURE_FLAG_KEY: "tel-target",
                n.FEATURE_FLAG_VARIANT: "b",
                n.FEATURE_FLAG_REASON: "targeting_match",
            },
        )
        errors = cap.points(n.FLAG_EVALUATIONS)
        logs = cap.logs
    assert hits == 3
    assert [
        p.attributes
        for p in errors
        if p.attributes.get(n.FEATURE_FLAG_KEY) == "tel-missing" and p.value
    ] == [
        {
            n.FEATURE_FLAG_KEY: "tel-missing",
            n.FEATURE_FLAG_REASON: "error",
            n.ERROR_TYPE: "flag_not_found",
        }
    ]
    assert {p.unit for p in errors} == {"{evaluation}"}
    assert logs == []


def test_flag_value_and_hashed_context_id_when_opted_in() -> None:
    """flag_value and flag_context_id add the value and the hashed targeting key."""
    flags = flags_mod.Flags.from_dict(DOC)
    ctx = {"targeting_key": "user-42", "country": "NZ"}
    with capture_telemetry(flag_value=True, flag_context_id="hashed") as cap:
        with cap.recording_span("request"):
            flags.get("tel-target", ctx, default="x")
        (event,) = flag_events(cap)
    assert event[n.FEATURE_FLAG_VALUE] == "B"
    assert event[n.FEATURE_FLAG_CONTEXT_ID] == hash_context_id("user-42")


def test_flag_evaluation_log_events_when_asked() -> None:
    """flag_log_events=True emits each evaluation as a feature_flag.evaluation log event."""
    flags = flags_mod.Flags.from_dict(DOC)
    with capture_telemetry(flag_log_events=True) as cap:
        flags.get("tel-static", None, default=False)
        (log,) = cap.logs
    assert (log.event_name, log.attributes[n.FEATURE_FLAG_KEY]) == (
        "feature_flag.evaluation",
        "tel-static",
    )


# the circuit breaker


def make_breaker(name: str, clock: FakeClock) -> Any:
    return breaker_mod.CircuitBreaker(
        name,
        window=breaker_mod.CountWindow(2),
        minimum_calls=2,
        failure_rate_threshold=0.5,
        open_duration=10.0,
        runbook=RUNBOOK,
        clock=clock,
    )


def test_breaker_trip_lands_on_the_callers_span_and_in_metrics() -> None:
    """A trip adds the transition and the rejection to the caller's span, logs and metrics."""
    clock = FakeClock()
    breaker = make_breaker("tel-pay", clock)

    @breaker
    def pay() -> None:
        raise ConnectionError("upstream down")

    with capture_telemetry() as cap:

        @traced("checkout")
        def checkout() -> None:
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    pay()
            with pytest.raises(CircuitOpenError):
                pay()

        checkout()
        span = cap.span("checkout")
        logs = cap.logs
        calls = {
            p.attributes[n.OUTCOME]: p.value
            for p in cap.points(n.BREAKER_CALLS)
            if p.attributes[n.BREAKER_NAME] == "tel-pay" and p.value
        }
        transitions = [
            (p.attributes, p.value)
            for p in cap.points(n.BREAKER_TRANSITIONS)
            if p.attributes[n.BREAKER_NAME] == "tel-pay"
        ]
        states = {
            p.attributes[n.STATE]: p.value
            for p in cap.points(n.BREAKER_STATE)
            if p.attributes[n.BREAKER_NAME] == "tel-pay"
        }
    changed, rejected = span.events
    assert changed.name == "tipkit.breaker.state_changed"
    assert changed.attributes == {
        n.BREAKER_NAME: "tel-pay",
        "tipkit.breaker.from_state": "closed",
        n.STATE: "open",
        "tipkit.breaker.reason": "failure_rate",
        n.MODE: "enforce",
        n.RUNBOOK: RUNBOOK,
    }
    assert rejected.name == "tipkit.breaker.call_rejected"
    assert rejected.attributes == {
        n.BREAKER_NAME: "tel-pay",
        n.STATE: "open",
        n.MODE: "enforce",
        "tipkit.retry_after": 10.0,
        n.RUNBOOK: RUNBOOK,
    }
    assert [(log.event_name, log.severity_text) for log in logs] == [
        ("tipkit.breaker.state_changed", "WARN"),
        ("tipkit.breaker.call_rejected", "WARN"),
    ]
    assert all(log.span_id == span.span_id for log in logs)
    assert calls == {"failure": 2, "rejected": 1}
    assert transitions == [
        (
            {
                n.BREAKER_NAME: "tel-pay",
                "tipkit.breaker.from_state": "closed",
                n.STATE: "open",
                n.MODE: "enforce",
            },
            1,
        )
    ]
    assert states["open"] == 1
    assert sum(states.values()) == 1
    assert "upstream down" not in cap.dump()


def test_breaker_closed_calls_publish_no_events() -> None:
    """Successful calls through a closed breaker add nothing to the span."""
    breaker = make_breaker("tel-quiet", FakeClock())
    with capture_telemetry() as cap:
        with cap.recording_span("caller"):
            for _ in range(5):
                breaker.call(lambda: 1)
        assert cap.span("caller").events == ()
        assert cap.metric(n.BREAKER_CALLS, {n.BREAKER_NAME: "tel-quiet"}) == 5


# rate limiter


def test_ratelimit_rejection_tokens_gauge_and_wait_histogram() -> None:
    """Rejections become events; tokens are a gauge; a real wait is a histogram point."""
    clock = FakeClock()
    bucket = ratelimit_mod.TokenBucket(
        "tel-api", rate=2.0, capacity=1, runbook=RUNBOOK, clock=clock
    )
    with capture_telemetry() as cap:
        with cap.recording_span("caller"):
            assert bucket.try_acquire()
            assert not bucket.try_acquire()
        bucket.acquire()  # waits 0.5 s on the fake clock
        (event,) = cap.span("caller").events
        requests = {
            p.attributes[n.RESULT]: p.value
            for p in cap.points(n.RATELIMIT_REQUESTS)
            if p.attributes[n.RATELIMIT_NAME] == "tel-api"
        }
        (tokens,) = [
            p
            for p in cap.points(n.RATELIMIT_TOKENS)
            if p.attributes == {n.RATELIMIT_NAME: "tel-api"}
        ]
        (wait,) = cap.points(n.RATELIMIT_WAIT)
    assert event.name == "tipkit.ratelimit.rejected"
    assert event.attributes == {
        n.RATELIMIT_NAME: "tel-api",
        "tipkit.retry_after": 0.5,
        n.MODE: "enforce",
        n.RUNBOOK: RUNBOOK,
    }
    assert requests == {"acquired": 2, "rejected": 1}
    assert (tokens.kind, tokens.unit, tokens.value) == ("gauge", "{token}", 0.0)
    assert (wait.unit, wait.count, wait.attributes) == (
        "s",
        1,
        {n.RATELIMIT_NAME: "tel-api"},
    )
    assert wait.value == pytest.approx(0.5)


def test_synthetic_probe_counts_apart_from_real_traffic() -> None:
    """Counts made inside synthetic() carry user_agent.synthetic.type on export."""
    bucket = ratelimit_mod.TokenBucket("tel-syn", rate=1e9, capacity=1e9)
    with capture_telemetry() as cap:
        bucket.try_acquire()
        with synthetic():
            bucket.try_acquire()
            bucket.try_acquire()
        marked = cap.metric(
            n.RATELIMIT_REQUESTS,
            {n.RATELIMIT_NAME: "tel-syn", n.SYNTHETIC_TYPE: "test"},
        )
        total = cap.metric(n.RATELIMIT_REQUESTS, {n.RATELIMIT_NAME: "tel-syn"})
    assert (marked, total) == (2, 3)


def test_synthetic_marks_flag_and_breaker_counts() -> None:
    """Flag evaluations and breaker outcomes inside synthetic() are counted apart too."""
    flags = flags_mod.Flags.from_dict(DOC)
    breaker = make_breaker("tel-syn-breaker", FakeClock())
    with capture_telemetry() as cap:
        flags.evaluate("tel-target", "someone", "x")
        breaker.call(lambda: None)
        with synthetic():
            flags.evaluate("tel-target", "someone", "x")
            breaker.call(lambda: None)
            breaker.call(lambda: None)
        flag_marked = cap.metric(
            n.FLAG_EVALUATIONS,
            {n.FEATURE_FLAG_KEY: "tel-target", n.SYNTHETIC_TYPE: "test"},
        )
        flag_total = cap.metric(n.FLAG_EVALUATIONS, {n.FEATURE_FLAG_KEY: "tel-target"})
        calls_marked = cap.metric(
            n.BREAKER_CALLS,
            {n.BREAKER_NAME: "tel-syn-breaker", n.SYNTHETIC_TYPE: "test"},
        )
        calls_total = cap.metric(n.BREAKER_CALLS, {n.BREAKER_NAME: "tel-syn-breaker"})
    assert (flag_marked, flag_total, calls_marked, calls_total) == (1, 2, 2, 3)


def test_synthetic_marks_bulkhead_and_timeout_counts() -> None:
    """Bulkhead and timeout outcomes inside synthetic() are counted apart too."""
    from tipkit.bulkhead import Bulkhead
    from tipkit.timeout import Timeout

    bulkhead = Bulkhead("tel-syn-bulkhead", max_concurrent=2)
    timeout = Timeout(5.0, name="tel-syn-timeout", clock=FakeClock())
    with capture_telemetry() as cap:
        bulkhead.call(lambda: None)
        timeout.call(lambda: None)
        with synthetic():
            bulkhead.call(lambda: None)
            timeout.call(lambda: None)
        bulk = cap.metric(
            n.BULKHEAD_CALLS,
            {n.BULKHEAD_NAME: "tel-syn-bulkhead", n.SYNTHETIC_TYPE: "test"},
        )
        tout = cap.metric(
            n.TIMEOUT_CALLS,
            {n.TIMEOUT_NAME: "tel-syn-timeout", n.SYNTHETIC_TYPE: "test"},
        )
        bulk_total = cap.metric(n.BULKHEAD_CALLS, {n.BULKHEAD_NAME: "tel-syn-bulkhead"})
    assert (bulk, tout, bulk_total) == (1, 1, 2)


# PII


def test_planted_secrets_never_leave_any_signal() -> None:
    """Context attributes, targeting keys, arguments and exception messages stay in process."""
    secret = "planted-4111-secret@example.com"  # noqa: S105  # the planted value
    flags = flags_mod.Flags.from_dict(DOC)
    breaker = make_breaker("tel-pii", FakeClock())
    bucket = ratelimit_mod.TokenBucket("tel-pii", rate=1, capacity=1, clock=FakeClock())

    @breaker
    def charge(card: str) -> None:
        raise ValueError(f"card {card} refused")

    @traced("pii-handler", record_args=("region",))
    def handler(email: str, region: str) -> None:
        ctx = {"targeting_key": email, "country": "NZ", "email": email}
        flags.evaluate("tel-target", ctx, "x")
        flags.evaluate(
            "tel-static", ctx, email
        )  # a type mismatch: the default is the secret
        flags.evaluate("tel-missing", ctx, email)
        for _ in range(3):
            with contextlib.suppress(ValueError, CircuitOpenError):
                charge(email)
        bucket.try_acquire()
        bucket.try_acquire()
        raise RuntimeError(f"request for {email} failed")

    with capture_telemetry(flag_log_events=True) as cap:
        with pytest.raises(RuntimeError):
            handler(secret, "eu")
        with synthetic(), pytest.raises(RuntimeError):
            handler(secret, "eu")
        dump = cap.dump()
    assert "feature_flag.evaluation" in dump
    assert "tipkit.breaker.state_changed" in dump
    assert "tipkit.ratelimit.rejected" in dump
    # "planted-4111": the planted digits with their prefix, since a random span or
    # trace id may contain "4111" by chance.
    assert "planted-4111" not in dump
    assert "example.com" not in dump
    assert secret not in dump


# retries


def test_retries_and_give_up_land_on_the_callers_span() -> None:
    """Each retry and the give-up are span events and log events, counted by outcome."""
    retry_mod = pytest.importorskip("tipkit.retry")
    clock = FakeClock()

    @retry_mod.retry(
        on=ConnectionError, attempts=3, wait_jitter=0, name="tel-retry", clock=clock
    )
    def flaky() -> None:
        raise ConnectionError("db at 10.0.0.7 refused user bob")

    with capture_telemetry() as cap:
        with cap.recording_span("caller"), pytest.raises(ConnectionError):
            flaky()
        events = [(e.name, e.attributes) for e in cap.span("caller").events]
        logs = [(log.event_name, log.severity_text) for log in cap.logs]
        attempts = {
            p.attributes[n.OUTCOME]: p.value
            for p in cap.points(n.RETRY_ATTEMPTS)
            if p.attributes[n.RETRY_NAME] == "tel-retry" and p.value
        }
        dump = cap.dump()
    scheduled = [a for name, a in events if name == "tipkit.retry.scheduled"]
    assert [a["tipkit.retry.attempt"] for a in scheduled] == [2, 3]
    assert {a[n.ERROR_TYPE] for a in scheduled} == {"ConnectionError"}
    assert events[-1] == (
        "tipkit.retry.gave_up",
        {
            n.RETRY_NAME: "tel-retry",
            "tipkit.retry.attempts": 3,
            "tipkit.retry.reason": "attempts",
            n.ERROR_TYPE: "ConnectionError",
        },
    )
    assert logs == [
        ("tipkit.retry.scheduled", "INFO"),
        ("tipkit.retry.scheduled", "INFO"),
        ("tipkit.retry.gave_up", "WARN"),
    ]
    assert attempts.get("gave_up") == 1
    assert "10.0.0.7" not in dump
    assert "bob" not in dump
