"""The experiment engine's one core: what runs, in which order, and what it means.

:class:`Plan` decides per call (sample it? in which order do the behaviours
run?) and :class:`Trial` holds one sampled call: what each behaviour did, how
each candidate compares, and what the caller gets. Neither waits, awaits, starts
a thread or reads the clock: the drivers (``_drivers.py``) run the behaviours
where the mode says (inline or on a pool, sync or async), time them, and hand
each observation to the trial. Every run path goes through these two classes
(judging is in ``_compare.py``, the books in ``_report.py``), so a change to
sampling, ordering, judging or reporting is made once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from tipkit.experiment._compare import Judge
from tipkit.experiment._options import Options
from tipkit.experiment._report import Ledger
from tipkit.experiment._result import (
    CONTROL,
    ExperimentResult,
    MismatchError,
    Observation,
    Outcome,
)
from tipkit.flags._bucketing import BUCKETS, bucket_of

__all__ = ["Behaviour", "Plan", "Trial"]

# Named tuples are built per sampled call: tuple.__new__ skips their Python-level
# __new__, about 0.2 µs of each of the three a sampled call builds.
_new: Final = tuple.__new__

Behaviour = tuple[str, Callable[..., Any]]
"""A behaviour to run: the control (named ``"control"``) or a named candidate."""
_NONE_REPORTED: Final[frozenset[str]] = frozenset()

logger = logging.getLogger("tipkit")


class Plan:
    """An experiment's decisions, from its :class:`Options`.

    Thread-safe: it holds no per-call state. The user callbacks it calls
    (``sample_key``, ``run_if``, ``call_context``, ``clean`` and, through its
    :class:`Judge`, the comparators) are isolated: their errors go to the
    ledger and the call goes on as documented.
    """

    __slots__ = (
        "_always",
        "_cut",
        "_items",
        "_pair",
        "_prefix",
        "_rng",
        "_run_if",
        "_sample_key",
        "call_context",
        "clean",
        "context",
        "control",
        "control_only",
        "judge",
        "ledger",
        "name",
        "options",
        "timeout",
    )

    def __init__(self, options: Options, ledger: Ledger) -> None:
        self.name = options.name
        self.options = options
        self.ledger = ledger
        self.control = options.control
        self.control_only: Sequence[Behaviour] = ((CONTROL, options.control),)
        self.context = options.context
        self.call_context = options.call_context
        self.clean = options.clean
        self.timeout = options.timeout
        self.judge: Callable[[Observation, Observation], Outcome] = Judge(
            options.compare, options.compare_errors, options.ignore, ledger.failed
        ).outcome
        self._rng = options.rng
        self._sample_key = options.sample_key
        self._run_if = options.run_if
        self._always = options.sample == 100
        self._cut = options.sample * (BUCKETS / 100)
        self._prefix = f"{options.name}."
        self._items: tuple[Behaviour, ...] = tuple(options.candidates.items())
        if options.mode == "inline":
            self._items += ((CONTROL, options.control),)
        # One or two behaviours: the possible orders built once (a shuffle per
        # call costs more than the rest of the bookkeeping). Same draw, same
        # order as the shuffle below: below 0.5 swaps the two.
        self._pair: tuple[Sequence[Behaviour], Sequence[Behaviour]] | None = None
        if len(self._items) <= 2:
            self._pair = (self._items[::-1], self._items)

    def should_run(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Return whether this call runs the candidates: sampled and ``run_if``."""
        if not self._always:
            key_fn = self._sample_key
            if key_fn is None:
                if self._rng.random() * BUCKETS >= self._cut:
                    return False
            else:
                try:
                    key = key_fn(*args, **kwargs)
                    text = key if isinstance(key, str) else str(key)
                except Exception as exc:
                    self.ledger.failed("sample_key", exc)
                    return False
                if bucket_of(self._prefix, text) >= self._cut:
                    return False
        run_if = self._run_if
        if run_if is not None:
            try:
                if not run_if(*args, **kwargs):
                    return False
            except Exception as exc:
                self.ledger.failed("run_if", exc)
                return False
        self.ledger.sampled.inc()
        return True

    def order(self) -> Sequence[Behaviour]:
        """Return the behaviours to run (inline: with the control), in random order."""
        pair = self._pair
        if pair is not None:
            return pair[0] if self._rng.random() < 0.5 else pair[1]
        items = list(self._items)
        rand = self._rng.random
        for i in range(len(items) - 1, 0, -1):
            j = int(rand() * (i + 1))
            items[i], items[j] = items[j], items[i]
        return items

    def context_for(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """Return the static context merged with ``call_context(*args, **kwargs)``."""
        fn = self.call_context
        if fn is None:
            return self.context
        try:
            return {**self.context, **fn(*args, **kwargs)}
        except Exception as exc:
            self.ledger.failed("call_context", exc)
            return self.context

    def observation(
        self,
        name: str,
        value: Any,
        exc: BaseException | None,
        duration: float,
        timed_out: bool,
    ) -> Observation:
        """Return what a behaviour did, with its value cleaned for showing."""
        cleaned = value
        clean = self.clean
        if clean is not None and exc is None and not timed_out:
            try:
                cleaned = clean(value)
            except Exception as error:
                self.ledger.failed("clean", error)
                cleaned = None
        return _new(Observation, (name, value, exc, duration, cleaned, timed_out))


class Trial:
    """One sampled call: its arguments and what each behaviour did.

    Built on the caller's path; filled by one driver at a time (the caller's
    thread or task inline, one worker in the background), so it needs no lock.
    The control's run is kept raw (``value``, ``error``, ``took``, set by
    :meth:`observe` before anything reads them) and cleaned when the trial
    finishes: in the background, that is on the worker, off the caller's path.
    """

    __slots__ = (
        "args",
        "context",
        "error",
        "kwargs",
        "observed",
        "plan",
        "reported",
        "took",
        "value",
    )

    def __init__(
        self, plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.plan = plan
        self.args = args
        self.kwargs = kwargs
        self.context = plan.context
        self.observed: dict[str, Observation] = {}
        self.reported = _NONE_REPORTED
        # The control's run: set by observe() before anything reads them.
        self.value: Any
        self.error: Exception | None
        self.took: float

    def observe(
        self, name: str, value: Any, error: Exception | None, took: float, late: bool
    ) -> Observation | None:
        """Record what behaviour *name* did; return a candidate's observation.

        *late*: the driver saw it pass its timeout (cancelled, or counted while
        running); a candidate that took longer than the timeout is late too.
        """
        if name == CONTROL:
            self.value = value
            self.error = error
            self.took = took
            return None
        plan = self.plan
        timeout = plan.timeout
        late = late or (timeout is not None and took > timeout)
        if plan.clean is None:
            obs = _new(Observation, (name, value, error, took, value, late))
        else:
            obs = plan.observation(name, value, error, took, late)
        self.observed[name] = obs
        return obs

    def mark_reported(self, name: str) -> None:
        """Note that *name*'s timeout was counted while it ran (count it once)."""
        self.reported = self.reported | {name}

    def finish(self) -> ExperimentResult | None:
        """Judge every candidate, then count, keep and publish; never raises."""
        plan = self.plan
        try:
            if plan.clean is None:
                value = self.value
                control = _new(
                    Observation, (CONTROL, value, self.error, self.took, value, False)
                )
            else:
                control = plan.observation(
                    CONTROL, self.value, self.error, self.took, timed_out=False
                )
            judge = plan.judge
            observed = self.observed
            outcomes: dict[str, Outcome] = {}
            for cname in plan.ledger.candidates:
                obs = observed.get(cname)
                outcomes[cname] = "skipped" if obs is None else judge(control, obs)
            result: ExperimentResult = _new(
                ExperimentResult,
                (
                    plan.name,
                    control,
                    observed,
                    outcomes,
                    self.context,
                    self.args,
                    self.kwargs,
                ),
            )
            plan.ledger.report(result, self.reported)
        except Exception:  # pragma: no cover - never let a tipkit bug reach the caller
            logger.exception("experiment %r: internal error while reporting", plan.name)
            return None
        return result

    def serve(self) -> Any:
        """Return the control's value or raise its exception, as the caller expects."""
        if self.error is not None:
            raise self.error
        return self.value

    def conclude(self) -> Any:
        """Finish the trial, then serve the control's result (inline).

        Raises:
            MismatchError: a candidate disagreed and ``raise_on_mismatch`` is set
                (the control's exception, if any, is its ``__cause__``).
        """
        result = self.finish()
        if (
            result is not None
            and self.plan.options.raise_on_mismatch
            and result.disagreeing
        ):
            raise MismatchError(result) from self.error
        return self.serve()
