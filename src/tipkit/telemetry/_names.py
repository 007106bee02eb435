"""Every exported signal name and attribute key, in one place.

tipkit depends on ``opentelemetry-api`` only (the semantic-conventions package
pins the API to an exact version), so the semantic-convention strings it uses are
copied here. Counters in :mod:`tipkit.telemetry._counters` are registered under
these metric names and attribute keys, so in-process readings and exported
metrics agree.
"""

from __future__ import annotations

from typing import Final

SCOPE: Final = "tipkit"

# -- metrics (OTel naming: no _total suffix, UCUM units) ------------------------
FLAG_EVALUATIONS: Final = "tipkit.flag.evaluations"  # {evaluation}
BREAKER_CALLS: Final = "tipkit.breaker.calls"  # {call}
BREAKER_STATE: Final = "tipkit.breaker.state"  # gauge, 1 for the current state
BREAKER_TRANSITIONS: Final = "tipkit.breaker.transitions"  # {transition}
BULKHEAD_CALLS: Final = "tipkit.bulkhead.calls"  # {call}
BULKHEAD_ACTIVE: Final = "tipkit.bulkhead.active"  # gauge, {call}
RATELIMIT_REQUESTS: Final = "tipkit.ratelimit.requests"  # {request}
RATELIMIT_TOKENS: Final = "tipkit.ratelimit.tokens"  # gauge, {token}
RATELIMIT_WAIT: Final = "tipkit.ratelimit.wait"  # histogram, s
RETRY_ATTEMPTS: Final = "tipkit.retry.attempts"  # {attempt}
TIMEOUT_CALLS: Final = "tipkit.timeout.calls"  # {call}
CALL_DURATION: Final = "tipkit.call.duration"  # histogram, s
ROLLOUT_REQUESTS: Final = "tipkit.rollout.requests"  # {request}
ROLLOUT_STAGE: Final = "tipkit.rollout.stage"  # gauge, percent
JUDGE_BOUND: Final = "tipkit.rollout.judge.bound"  # gauge, a check's bound of d
JUDGE_MARGIN: Final = "tipkit.rollout.judge.margin"  # gauge, what the bound must cross
JUDGE_VERDICTS: Final = "tipkit.rollout.judge.verdicts"  # {verdict}, per check
EXPERIMENT_COMPARISONS: Final = "tipkit.experiment.comparisons"  # {comparison}
EVENTS: Final = "tipkit.events"  # {event}: state changes alerts are written on

# -- attribute keys -------------------------------------------------------------
FEATURE_FLAG_KEY: Final = "feature_flag.key"
FEATURE_FLAG_VARIANT: Final = "feature_flag.result.variant"
FEATURE_FLAG_REASON: Final = "feature_flag.result.reason"
FEATURE_FLAG_VALUE: Final = "feature_flag.result.value"
FEATURE_FLAG_PROVIDER: Final = "feature_flag.provider.name"
FEATURE_FLAG_VERSION: Final = "feature_flag.version"
FEATURE_FLAG_CONTEXT_ID: Final = "feature_flag.context.id"
FEATURE_FLAG_ERROR_MESSAGE: Final = "feature_flag.error.message"
ERROR_TYPE: Final = "error.type"
SYNTHETIC_TYPE: Final = "user_agent.synthetic.type"
EXCEPTION_TYPE: Final = "exception.type"
CALL_NAME: Final = "tipkit.call.name"  # the name given to traced()

BREAKER_NAME: Final = "tipkit.breaker.name"
BULKHEAD_NAME: Final = "tipkit.bulkhead.name"
RATELIMIT_NAME: Final = "tipkit.ratelimit.name"
RETRY_NAME: Final = "tipkit.retry.name"
TIMEOUT_NAME: Final = "tipkit.timeout.name"
ROLLOUT_NAME: Final = "tipkit.rollout.name"
EXPERIMENT_NAME: Final = "tipkit.experiment.name"
EXPERIMENT_CANDIDATE: Final = "tipkit.experiment.candidate"
EXPERIMENT_CALLBACK: Final = "tipkit.experiment.callback"  # compare, clean, ...

OUTCOME: Final = "tipkit.outcome"  # success | failure | slow | rejected | ignored | ...
RESULT: Final = "tipkit.result"  # acquired | rejected
STATE: Final = "tipkit.state"  # a breaker state, lowercase
MODE: Final = "tipkit.mode"  # enforce | shadow
ARM: Final = "tipkit.rollout.arm"  # canary | control
ROLLOUT_PERCENT: Final = "tipkit.rollout.percent"  # canary share, percent
ROLLOUT_FROM_PERCENT: Final = "tipkit.rollout.from_percent"
ROLLOUT_DECISION: Final = "tipkit.rollout.decision"  # PASS | FAIL | INCONCLUSIVE
ROLLOUT_GUARD: Final = "tipkit.rollout.guard"  # error_rate | latency>0.25s
ROLLOUT_AUTOMATIC: Final = "tipkit.rollout.automatic"
ROLLOUT_LOWER: Final = "tipkit.rollout.lower"  # confidence bound of canary - control
ROLLOUT_UPPER: Final = "tipkit.rollout.upper"
JUDGE_SIDE: Final = "tipkit.rollout.judge.side"  # upper (PASS side) | lower (FAIL side)
ROLLOUT_CANARY_COUNT: Final = "tipkit.rollout.canary.count"
ROLLOUT_CANARY_BAD: Final = "tipkit.rollout.canary.bad"
ROLLOUT_CONTROL_COUNT: Final = "tipkit.rollout.control.count"
ROLLOUT_CONTROL_BAD: Final = "tipkit.rollout.control.bad"
TRIPWIRE_ERROR_RATE: Final = "tipkit.tripwire.error_rate"
TRIPWIRE_CALLS: Final = "tipkit.tripwire.calls"
TRIPWIRE_FAILURES: Final = "tipkit.tripwire.failures"
RUNBOOK: Final = "tipkit.runbook.url"
EVENT: Final = "tipkit.event"  # the OTel event name counted in tipkit.events
SUBJECT: Final = "tipkit.name"  # what the event is about (a breaker, a rollout...)
