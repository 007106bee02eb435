"""What every exported signal is: the one table export and docs are driven by.

:func:`tipkit.telemetry.instrument` creates one OpenTelemetry instrument per entry
of :data:`METRICS` (plus any other name found in the counter registry, exported
with :data:`DEFAULT_COUNTER`), and decides how each event type is exported from
:data:`EVENTS`. ``docs/telemetry.md`` lists the same entries; a test keeps the two
in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from tipkit.telemetry import _names as n

__all__ = [
    "COUNTED_EVENTS",
    "DEFAULT_COUNTER",
    "DEFAULT_EVENT",
    "DURATION_BUCKETS",
    "EVENTS",
    "FLAG_EVALUATION",
    "METRICS",
    "EventSpec",
    "MetricSpec",
]

Kind = Literal["counter", "updowncounter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """How one metric name is exported.

    Attributes:
        kind: ``counter`` (observable counter over registry counters),
            ``updowncounter`` / ``gauge`` (observable, over registry gauges), or
            ``histogram`` (synchronous, fed by ``REGISTRY.record``).
        unit: a UCUM unit (``s``, ``1``, ``%`` or an annotation like ``{call}``).
        description: one sentence for the backend's metric browser.
        attributes: the attribute keys the series carry (documentation and tests).
    """

    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventSpec:
    """How one event name is exported.

    Attributes:
        per_call: True for events published on the hot path (one per flag
            evaluation): they are exported as span events only while a real tracer
            provider is configured, and as log events only when asked.
        severity: the log severity text (``INFO``, ``WARN``, ``ERROR``).
        description: one sentence.
    """

    per_call: bool
    severity: Literal["INFO", "WARN", "ERROR"]
    description: str


# Seconds, for waits and calls: from 1 ms to 10 s (the SDK default buckets are
# sized for milliseconds and would put every call in the first bucket).
DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

_S = n.SYNTHETIC_TYPE

METRICS: Final[dict[str, MetricSpec]] = {
    n.FLAG_EVALUATIONS: MetricSpec(
        "counter",
        "{evaluation}",
        "Flag evaluations, by flag, variant and reason.",
        (
            n.FEATURE_FLAG_KEY,
            n.FEATURE_FLAG_VARIANT,
            n.FEATURE_FLAG_REASON,
            n.ERROR_TYPE,
            _S,
        ),
    ),
    n.BREAKER_CALLS: MetricSpec(
        "counter",
        "{call}",
        "Calls through a circuit breaker, by outcome.",
        (n.BREAKER_NAME, n.OUTCOME, n.MODE, _S),
    ),
    n.BREAKER_STATE: MetricSpec(
        "gauge",
        "1",
        "1 for the state a circuit breaker is in, 0 for the others.",
        (n.BREAKER_NAME, n.STATE),
    ),
    n.BREAKER_TRANSITIONS: MetricSpec(
        "counter",
        "{transition}",
        "Circuit breaker state changes, by the state left and the state entered.",
        (n.BREAKER_NAME, "tipkit.breaker.from_state", n.STATE, n.MODE, _S),
    ),
    n.BULKHEAD_CALLS: MetricSpec(
        "counter",
        "{call}",
        "Calls through a bulkhead, by outcome.",
        (n.BULKHEAD_NAME, n.OUTCOME, n.MODE, _S),
    ),
    n.BULKHEAD_ACTIVE: MetricSpec(
        "updowncounter",
        "{call}",
        "Calls running inside a bulkhead now.",
        (n.BULKHEAD_NAME,),
    ),
    n.RATELIMIT_REQUESTS: MetricSpec(
        "counter",
        "{request}",
        "Requests to a rate limiter, by result.",
        (n.RATELIMIT_NAME, n.RESULT, n.MODE, _S),
    ),
    n.RATELIMIT_TOKENS: MetricSpec(
        "gauge",
        "{token}",
        "Tokens left in a token bucket at collection time.",
        (n.RATELIMIT_NAME,),
    ),
    n.RATELIMIT_WAIT: MetricSpec(
        "histogram",
        "s",
        "Time a caller waited for a rate limiter (recorded only when it waited).",
        (n.RATELIMIT_NAME, _S),
    ),
    n.RETRY_ATTEMPTS: MetricSpec(
        "counter",
        "{attempt}",
        "Attempts made by a retry policy, by outcome.",
        (n.RETRY_NAME, n.OUTCOME, _S),
    ),
    n.TIMEOUT_CALLS: MetricSpec(
        "counter",
        "{call}",
        "Calls under a timeout, by outcome.",
        (n.TIMEOUT_NAME, n.OUTCOME, _S),
    ),
    n.CALL_DURATION: MetricSpec(
        "histogram",
        "s",
        "Duration of calls wrapped in traced().",
        (n.CALL_NAME, n.ERROR_TYPE, _S),
    ),
    n.ROLLOUT_REQUESTS: MetricSpec(
        "counter",
        "{request}",
        "Requests seen by a guarded rollout, by arm and outcome.",
        (n.ROLLOUT_NAME, n.ARM, n.OUTCOME, _S),
    ),
    n.ROLLOUT_STAGE: MetricSpec(
        "gauge",
        "%",
        "Share of traffic a rollout currently sends to the new code.",
        (n.ROLLOUT_NAME,),
    ),
    n.JUDGE_BOUND: MetricSpec(
        "gauge",
        "{difference}",
        "A rollout check's confidence bound of how much worse the canary is, at the"
        " last checkpoint: side=upper must fall below the pass margin, side=lower"
        " above max_increase fails.",
        (n.ROLLOUT_NAME, n.ROLLOUT_GUARD, n.ROLLOUT_PERCENT, n.JUDGE_SIDE, n.MODE),
    ),
    n.JUDGE_MARGIN: MetricSpec(
        "gauge",
        "{difference}",
        "What a rollout check's bound is compared with: the pass margin"
        " (side=upper) and max_increase (side=lower).",
        (n.ROLLOUT_NAME, n.ROLLOUT_GUARD, n.ROLLOUT_PERCENT, n.JUDGE_SIDE, n.MODE),
    ),
    n.JUDGE_VERDICTS: MetricSpec(
        "counter",
        "{verdict}",
        "Judge checkpoints of a rollout, by check and that check's verdict (mode"
        " dry_run: reported, never acted on).",
        (n.ROLLOUT_NAME, n.ROLLOUT_GUARD, n.ROLLOUT_DECISION, n.MODE),
    ),
    n.EXPERIMENT_COMPARISONS: MetricSpec(
        "counter",
        "{comparison}",
        "Shadow experiment comparisons, by candidate and outcome.",
        (n.EXPERIMENT_NAME, n.EXPERIMENT_CANDIDATE, n.OUTCOME, _S),
    ),
    n.EVENTS: MetricSpec(
        "counter",
        "{event}",
        "State changes alerts are written on (rollbacks, kills, verdicts, store "
        "outages), by event name and subject.",
        (n.EVENT, n.SUBJECT, n.ROLLOUT_DECISION, _S),
    ),
}

DEFAULT_COUNTER: Final = MetricSpec("counter", "1", "A tipkit counter.")
"""Export spec for a registry counter whose name is not in :data:`METRICS`."""

DEFAULT_GAUGE: Final = MetricSpec("gauge", "1", "A tipkit gauge.")
"""Export spec for a registry gauge whose name is not in :data:`METRICS`."""

FLAG_EVALUATION: Final = "feature_flag.evaluation"

EVENTS: Final[dict[str, EventSpec]] = {
    FLAG_EVALUATION: EventSpec(
        per_call=True,
        severity="INFO",
        description="A feature flag was evaluated.",
    ),
    "tipkit.flags.reload_failed": EventSpec(
        per_call=False,
        severity="ERROR",
        description="A flag provider failed to reload and keeps the last good flags.",
    ),
    "tipkit.breaker.state_changed": EventSpec(
        per_call=False,
        severity="WARN",
        description="A circuit breaker changed state.",
    ),
    "tipkit.breaker.call_rejected": EventSpec(
        per_call=False,
        severity="WARN",
        description="A circuit breaker rejected a call (or would have, in shadow mode).",
    ),
    "tipkit.bulkhead.call_rejected": EventSpec(
        per_call=False,
        severity="WARN",
        description="A bulkhead rejected a call (or would have, in shadow mode).",
    ),
    "tipkit.ratelimit.rejected": EventSpec(
        per_call=False,
        severity="WARN",
        description="A rate limiter refused tokens (or would have, in shadow mode).",
    ),
    "tipkit.retry.scheduled": EventSpec(
        per_call=False,
        severity="INFO",
        description="An attempt failed with a retriable error; another is scheduled.",
    ),
    "tipkit.retry.gave_up": EventSpec(
        per_call=False,
        severity="WARN",
        description="Retrying stopped; the last error goes to the caller.",
    ),
    "tipkit.timeout.timed_out": EventSpec(
        per_call=False,
        severity="WARN",
        description="A call ran out of time.",
    ),
    "tipkit.experiment.compared": EventSpec(
        per_call=True,
        severity="INFO",
        description="A shadow experiment judged one candidate run.",
    ),
    "tipkit.experiment.callback_failed": EventSpec(
        per_call=False,
        severity="ERROR",
        description="A shadow experiment's callback raised; the caller was unaffected.",
    ),
    "tipkit.rollout.stage_changed": EventSpec(
        per_call=False,
        severity="INFO",
        description="A rollout moved to another stage (advanced, paused, resumed, completed).",
    ),
    "tipkit.rollout.judged": EventSpec(
        per_call=False,
        severity="INFO",
        description="A rollout's judge reached a verdict with its numbers.",
    ),
    "tipkit.rollout.judge.verdict": EventSpec(
        per_call=False,
        severity="INFO",
        description="A rollout check's verdict changed, with its bounds, margin,"
        " counts and dry-run flag.",
    ),
    "tipkit.rollout.rolled_back": EventSpec(
        per_call=False,
        severity="ERROR",
        description="A rollout sent every user back to the control, with the numbers why.",
    ),
    "feature_flag.killed": EventSpec(
        per_call=False,
        severity="ERROR",
        description="A tripwire killed a flag: its error rate passed the threshold.",
    ),
    "tipkit.store.unavailable": EventSpec(
        per_call=False,
        severity="ERROR",
        description="A primitive lost its store and follows its on_error policy.",
    ),
    "tipkit.store.recovered": EventSpec(
        per_call=False,
        severity="INFO",
        description="A primitive reached its store again.",
    ),
}
"""Event names with a non-default export. Every other event is a state change."""

COUNTED_EVENTS: Final[dict[str, tuple[str, ...]]] = {
    "tipkit.rollout.rolled_back": (),
    "tipkit.rollout.judged": (n.ROLLOUT_DECISION,),
    "feature_flag.killed": (),
    "tipkit.store.unavailable": (),
    "tipkit.store.recovered": (),
}
"""Events counted in ``tipkit.events`` while instrumented (with these attribute
keys copied from the event): the generated Prometheus alerts are written on them.
They are rare, so they are built whenever instrument() is in effect."""

DEFAULT_EVENT: Final = EventSpec(
    per_call=False, severity="INFO", description="A tipkit state change."
)
