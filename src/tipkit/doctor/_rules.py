"""The checks ``tipkit doctor`` runs, one function per concern, each yielding findings.

Every check reads public state of live objects (and one private attribute
where tipkit has no public reader yet: named where it is read). A check never
changes anything, never raises (a check that fails reports ``doctor-check-failed``
and the others go on) and performs no I/O but the Redis ``CONFIG GET``s.
"""

from __future__ import annotations

import importlib.util
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.doctor._discover import Inventory, innermost
from tipkit.doctor._model import Finding
from tipkit.stores import MemoryStore
from tipkit.telemetry import _otel

__all__ = ["RULES", "Settings", "compensation", "compensation_for"]

Rule = Callable[[Inventory, "Settings"], Iterator[Finding]]

_COMPENSATIONS: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Any]] = (
    weakref.WeakKeyDictionary()
)
# When doctor first saw each guard in shadow mode, on the settings' clock.
_SHADOW_SINCE: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def compensation(fn: Callable[..., Any], undo: Callable[..., Any]) -> None:
    """Declare that *undo* compensates irreversible *fn* (a refund for a charge).

    ``tipkit doctor`` then no longer reports *fn* under
    ``irreversible-no-compensation``. Shadow experiments and retries still want
    their own ``compensate=``: this records that an undo exists for the team's
    rollback runbook. Thread-safe; holds *fn* weakly.

    Raises:
        TypeError: *undo* is not callable.
    """
    if not callable(undo):
        raise TypeError(f"compensation: undo must be callable, got {undo!r}")
    _COMPENSATIONS[innermost(getattr(fn, "__func__", fn))] = undo


def compensation_for(fn: Callable[..., Any]) -> Callable[..., Any] | None:
    """Return the undo declared for *fn* with :func:`compensation`, or ``None``."""
    return _COMPENSATIONS.get(innermost(getattr(fn, "__func__", fn)))


class Settings:
    """The thresholds the checks use (see ``check()`` for each)."""

    __slots__ = ("clock", "max_pass_margin", "max_rollback_seconds", "max_shadow")

    def __init__(
        self,
        *,
        max_pass_margin: float = 0.02,
        max_rollback_seconds: float = 10.0,
        max_shadow: float = 14 * 86400.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_pass_margin = max_pass_margin
        self.max_rollback_seconds = max_rollback_seconds
        self.max_shadow = max_shadow
        self.clock = clock


# -- level 2: observability -------------------------------------------------------
def telemetry(inv: Inventory, cfg: Settings) -> Iterator[Finding]:  # noqa: ARG001  # rule signature
    """Telemetry must be exported to a real OpenTelemetry SDK."""
    sdk = importlib.util.find_spec("opentelemetry.sdk") is not None
    if not sdk:
        yield Finding(
            "telemetry-no-sdk",
            2,
            "error",
            "telemetry",
            "no OpenTelemetry SDK is installed: tipkit's metrics, spans and events "
            "go nowhere, so nobody sees a breaker open or a canary fail",
            "pip install opentelemetry-sdk (and an exporter), configure it at start-up",
        )
    inst = _otel.instrumentation()
    if inst is None:
        yield Finding(
            "telemetry-not-instrumented",
            2,
            "error",
            "telemetry",
            "tipkit.telemetry.instrument() was not called: no tipkit metric or event "
            "is exported",
            "call tipkit.telemetry.instrument() once at start-up, after the SDK",
        )
        return
    config = inst.config
    provider = config.meter_provider
    if provider is None:
        from opentelemetry import metrics  # noqa: PLC0415  # only when instrumented

        provider = metrics.get_meter_provider()
    if sdk and type(provider).__name__ in {"ProxyMeterProvider", "NoOpMeterProvider"}:
        yield Finding(
            "telemetry-no-meter-provider",
            2,
            "error",
            "telemetry",
            "instrument() found no SDK meter provider: the counters are created "
            "but never collected",
            "set a MeterProvider (metrics.set_meter_provider(...)) before "
            "instrument(), or pass instrument(meter_provider=...)",
        )
    if config.flag_context_id == "raw":
        yield Finding(
            "telemetry-raw-context-id",
            5,
            "error",
            "telemetry",
            "instrument(flag_context_id='raw') exports every user's targeting key "
            "with each flag evaluation: personal data in your telemetry",
            "use instrument(flag_context_id='hashed', context_id_key=SECRET), or 'off'",
        )


# -- level 3: flags and canaries --------------------------------------------------
def flags(inv: Inventory, cfg: Settings) -> Iterator[Finding]:
    """Every flag must have a kill path: an off variant, through a shared store."""
    if not inv.flags:
        yield Finding(
            "no-flags",
            3,
            "error",
            "flags",
            "no tipkit.Flags object was found: new code cannot be turned off "
            "without a deploy",
            "build Flags.from_file('flags.yaml', store=...) and gate new code paths",
        )
        return
    for f in inv.flags:
        flag_set = f.flag_set
        label = f"flags from {flag_set.source}" if flag_set else "flags (not ready)"
        for key, flag in sorted((flag_set.flags if flag_set else {}).items()):
            if flag.off_variant is None:
                yield Finding(
                    "flag-no-off-variant",
                    3,
                    "error",
                    f"flag {key!r}",
                    "the flag has no off_variant: killing it serves each caller's "
                    "default, which may not be the old behaviour",
                    f"add `off_variant: <the old behaviour>` to flag {key!r}",
                )
        if isinstance(f.store, MemoryStore):
            yield Finding(
                "flags-local-store",
                4,
                "warning",
                label,
                "kill switches live in this process's MemoryStore: a kill from an "
                "operator or another process never reaches it",
                "give Flags(..., store=RedisStore(url)) so a kill reaches the fleet",
            )
        interval = getattr(f._source.sync, "interval", 0.0)  # no public reader yet
        watching = getattr(f.store, "watching", False)
        if not watching and interval > cfg.max_rollback_seconds:
            yield Finding(
                "slow-rollback",
                4,
                "error",
                label,
                f"a kill or rollback reaches this process only after up to "
                f"{interval:g} s (refresh_interval), above "
                f"{cfg.max_rollback_seconds:g} s",
                "lower refresh_interval, or use a RedisStore with push=True",
            )


def guards(inv: Inventory, cfg: Settings) -> Iterator[Finding]:
    """Dependencies have breakers with runbooks; no guard stays in shadow forever."""
    if not inv.breakers and not inv.guards:
        yield Finding(
            "no-guards",
            3,
            "warning",
            "guards",
            "no breaker, rate limiter or bulkhead was found: a canary that breaks a "
            "dependency meets nothing that limits the damage",
            "wrap calls to each dependency in a CircuitBreaker (and a TokenBucket)",
        )
    for b in inv.breakers:
        if b.runbook is None:
            yield Finding(
                "breaker-no-runbook",
                5,
                "error",
                f"breaker {b.name!r}",
                "the breaker has no runbook: its open event and CircuitOpenError "
                "tell the on-call engineer nothing about what to do",
                f'CircuitBreaker({b.name!r}, runbook="https://...")',
            )
    for t in inv.tripwires:
        if t.runbook is None:
            yield Finding(
                "tripwire-no-runbook",
                5,
                "error",
                f"tripwire on flag {t.key!r}",
                "the tripwire has no runbook: the kill it makes links to nothing",
                f'Tripwire(flags, {t.key!r}, ..., runbook="https://...")',
            )
    now = cfg.clock.time()
    for g in [*inv.breakers, *inv.guards]:
        yield from _shadow(g, now, cfg)


def _shadow(guard: Any, now: float, cfg: Settings) -> Iterator[Finding]:
    if getattr(guard, "mode", "enforce") != "shadow":
        _SHADOW_SINCE.pop(guard, None)
        return
    try:
        since = _SHADOW_SINCE.setdefault(guard, now)
    except TypeError:  # a guard that takes no weak reference: judged at first sight
        since = now
    name = getattr(guard, "name", "?")
    kind = type(guard).__name__
    age = now - since
    if age >= cfg.max_shadow:
        yield Finding(
            "shadow-too-long",
            5,
            "error",
            f"{kind} {name!r}",
            f"in shadow mode for {age / 86400:.1f} days: it protects nothing, and "
            "what it would have rejected is evidence enough to decide",
            "read its would_reject count, then set mode='enforce' (or remove it)",
        )
    else:
        yield Finding(
            "shadow-mode",
            5,
            "info",
            f"{kind} {name!r}",
            f"in shadow mode (seen so for {age / 86400:.1f} days): it decides but "
            "enforces nothing",
            "once its shadow decisions look right, set mode='enforce'",
        )


# -- level 4: automated progressive delivery --------------------------------------
def rollouts(inv: Inventory, cfg: Settings) -> Iterator[Finding]:
    """Rollouts roll back on proven harm, pass only on bounded harm, link runbooks."""
    if not inv.rollouts:
        yield Finding(
            "no-rollouts",
            4,
            "error",
            "rollouts",
            "no tipkit.Rollout was found: canaries are promoted and rolled back by "
            "hand",
            "Rollout('my-change', flags=flags, stages=(1, 5, 25, 50, 100), "
            'runbook="https://...")',
        )
    for r in inv.rollouts:
        target = f"rollout {r.name!r}"
        if r.runbook is None:
            yield Finding(
                "rollout-no-runbook",
                4,
                "error",
                target,
                "the rollout has no runbook: an automatic rollback pages someone "
                "with no procedure to follow",
                f'Rollout({r.name!r}, ..., runbook="https://...")',
            )
        checks = tuple(getattr(r, "checks", None) or r.guards)
        if checks and all(getattr(c, "dry_run", False) for c in checks):
            yield Finding(
                "rollout-dry-run-only",
                4,
                "error",
                target,
                "every metric check is dry_run: the judge reports but can never "
                "roll back",
                "drop dry_run=True from at least the error-rate check",
            )
        for c in checks:
            margin = getattr(c, "pass_below", None)
            if margin is None or not getattr(c, "binary", True):
                continue
            if math.isinf(margin) or margin - c.max_increase > cfg.max_pass_margin:
                yield Finding(
                    "rollout-unsafe-margin",
                    4,
                    "error",
                    f"{target}, check {c.describe()}",
                    f"pass_below={margin:g}: a stage passes while the canary may be "
                    f"{100 * margin:.3g} percentage points worse than control",
                    "remove pass_below (the default margin is max_increase + 0.05 "
                    f"control SDs) or keep it within {cfg.max_pass_margin:g} of "
                    "max_increase",
                )


def irreversible(inv: Inventory, cfg: Settings) -> Iterator[Finding]:  # noqa: ARG001  # rule signature
    """Irreversible functions need an undo before a canary may run them."""
    covered = {
        id(innermost(fn))
        for e in inv.experiments
        if e.options.compensate is not None
        for fn in (e.control, *e.candidates.values())
    }
    for fn in inv.irreversible:
        if id(fn) in covered or compensation_for(fn) is not None:
            continue
        name = getattr(fn, "__qualname__", repr(fn))
        yield Finding(
            "irreversible-no-compensation",
            4,
            "error",
            f"function {name}",
            "marked @irreversible with no compensation: a rolled-back canary "
            "cannot undo what it did",
            f"tipkit.doctor.compensation({name}, undo) (a refund for a charge), "
            "and compensate= where it is shadowed or retried",
        )


def redis(inv: Inventory, cfg: Settings) -> Iterator[Finding]:  # noqa: ARG001  # rule signature
    """A Redis holding kill switches must persist them (AOF)."""
    kills = {id(f.store) for f in inv.flags}
    for store in inv.redis_stores:
        if id(store) not in kills:
            continue
        target = f"redis store {store!r}"
        try:
            client = store.client
            aof = client.config_get("appendonly").get("appendonly", "")
            save = client.config_get("save").get("save", "")
        except Exception as exc:  # a managed Redis may refuse CONFIG
            yield Finding(
                "redis-persistence-unknown",
                4,
                "warning",
                target,
                f"could not read its persistence settings ({type(exc).__name__}: "
                f"{exc})",
                "check by hand that appendonly is yes (CONFIG GET appendonly)",
            )
            continue
        if aof == "yes":
            continue
        if save.strip():
            yield Finding(
                "redis-rdb-only",
                4,
                "warning",
                target,
                f"kill switches live here with snapshots only (save {save!r}): a "
                "restart loses every kill made since the last snapshot",
                "CONFIG SET appendonly yes (and in redis.conf: appendonly yes)",
            )
        else:
            yield Finding(
                "redis-no-persistence",
                4,
                "error",
                target,
                "kill switches live here and Redis persists nothing: a restart "
                "revives every killed flag",
                "CONFIG SET appendonly yes (and in redis.conf: appendonly yes)",
            )


RULES: tuple[Rule, ...] = (telemetry, flags, guards, rollouts, irreversible, redis)
