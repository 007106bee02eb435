"""An experiment's books: counters, events, kept mismatches, callback errors, publish."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from tipkit._core import _fork
from tipkit.experiment._events import ExperimentCallbackFailed, ExperimentCompared
from tipkit.experiment._result import (
    CONTROL,
    DISAGREE,
    OUTCOMES,
    ExperimentResult,
    Mismatch,
    Observation,
    Outcome,
)
from tipkit.telemetry import _names as names
from tipkit.telemetry._counters import REGISTRY, Counter
from tipkit.telemetry._events import BUS

__all__ = ["Ledger"]

logger = logging.getLogger("tipkit")

_new: Final = tuple.__new__  # builds a named tuple without its Python-level __new__


class Ledger:
    """Count, publish and keep what one experiment observed.

    Every counter exists before the first call, so the hot path pays one
    ``inc()`` per count. Thread-safe: counters are atomic, the mismatch deque
    appends atomically and new callback-error counters are made under a lock.
    Never raises into the caller: ``publish`` failures are counted like any
    callback's.
    """

    __slots__ = (
        "__weakref__",
        "_errors",
        "_lock",
        "_mismatches",
        "_publish",
        "_tally",
        "calls",
        "candidates",
        "context",
        "name",
        "sampled",
    )

    def __init__(
        self,
        name: str,
        candidates: Iterable[str],
        *,
        context: Any,
        publish: Callable[[ExperimentResult], object] | None,
        keep: int,
    ) -> None:
        self.name = name
        self.candidates = tuple(candidates)
        self.context = context
        self._publish = publish
        self._mismatches: deque[Mismatch] = deque(maxlen=keep)
        self.calls = Counter("calls", {})
        self.sampled = Counter("sampled", {})
        # (candidate, outcome) -> (the exported counter, this experiment's tally)
        self._tally: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        for cname in self.candidates:
            for outcome in OUTCOMES:
                attrs = {
                    names.EXPERIMENT_NAME: name,
                    names.EXPERIMENT_CANDIDATE: cname,
                    names.OUTCOME: outcome,
                }
                self._tally[cname, outcome] = (
                    REGISTRY.counter(names.EXPERIMENT_COMPARISONS, attrs),
                    Counter(outcome, attrs),
                )
        self._errors: dict[str, Counter] = {}
        self._lock = _fork.new_lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = _fork.new_lock()

    def failed(self, callback: str, exc: BaseException) -> None:
        """Count that *callback* raised *exc*; log its first failure, publish an event."""
        counter = self._errors.get(callback)
        if counter is None:
            with self._lock:
                counter = self._errors.setdefault(callback, Counter(callback, {}))
            logger.error(
                "experiment %r: %s raised %s; the caller is not affected and later "
                "errors of this callback are counted, not logged",
                self.name,
                callback,
                type(exc).__name__,
                exc_info=exc,
            )
        counter.inc()
        if ExperimentCallbackFailed.listened:
            BUS.publish(
                ExperimentCallbackFailed(self.name, callback, type(exc).__name__)
            )

    def count(
        self, candidate: str, outcome: Outcome, result: ExperimentResult | None
    ) -> None:
        """Count one *outcome* of *candidate* and publish its event."""
        exported, tally = self._tally[candidate, outcome]
        exported.inc()
        tally.inc()
        if ExperimentCompared.listened:
            BUS.publish(ExperimentCompared(self.name, candidate, outcome, result))

    def report(
        self, result: ExperimentResult, reported: frozenset[str] | set[str]
    ) -> None:
        """Count, keep and publish a judged call (*reported*: already counted)."""
        control = result.control
        listened = ExperimentCompared.listened
        for cname, outcome in result.outcomes.items():
            if cname not in reported:  # count() inlined: this is the hot path
                exported, tally = self._tally[cname, outcome]
                exported.inc()
                tally.inc()
                if listened:
                    BUS.publish(ExperimentCompared(self.name, cname, outcome, result))
            if outcome in DISAGREE and self._mismatches.maxlen:
                self._mismatches.append(
                    Mismatch(
                        self.name,
                        cname,
                        outcome,
                        result.args,
                        result.kwargs,
                        control,
                        result.candidates[cname],
                        result.context,
                    )
                )
        if self._publish is not None:
            try:
                self._publish(result)
            except Exception as exc:
                self.failed("publish", exc)

    def skip(
        self,
        value: Any,
        error: BaseException | None,
        took: float,
        args: tuple[Any, ...],
        kwargs: Any,
    ) -> None:
        """Count a run that found no room: on the caller's path, so never publish=.

        *value*, *error* and *took* are the control's, uncleaned.
        """
        result = None
        if ExperimentCompared.listened:
            obs = _new(Observation, (CONTROL, value, error, took, value, False))
            outcomes: dict[str, Outcome] = dict.fromkeys(self.candidates, "skipped")
            result = _new(
                ExperimentResult,
                (self.name, obs, {}, outcomes, self.context, args, kwargs),
            )
        for cname in self.candidates:
            self.count(cname, "skipped", result)

    def stats(self, candidate: str | None) -> dict[str, int]:
        """Return the count of each outcome (of one *candidate*, or of all)."""
        counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        for (cname, outcome), (_, tally) in self._tally.items():
            if candidate is None or cname == candidate:
                counts[outcome] += tally.value
        return counts

    def errors(self) -> dict[str, int]:
        """Return how often each callback raised (only those that did)."""
        return {k: c.value for k, c in self._errors.items() if c.value}

    def mismatches(self, candidate: str | None) -> list[Mismatch]:
        """Return the kept disagreements (of one *candidate*, or all), oldest first."""
        return [
            m for m in self._mismatches if candidate is None or m.candidate == candidate
        ]
