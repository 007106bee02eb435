"""Shadow experiments: run new code beside the old on live inputs, serve only the old.

::

    exp = Experiment("pricing-v2", control=price_v1, candidate=price_v2,
                     sample=5.0, sample_key=lambda order: order.customer_id,
                     mode="background", timeout=0.2)
    price = exp(order)          # always price_v1's result, or price_v1's exception

On a sampled call the candidate (or several named candidates) runs on the same
arguments, its result is compared with the control's, and the outcome is counted
(``tipkit.experiment.comparisons``), published as an :class:`ExperimentCompared`
event per candidate and handed to ``publish=`` as an :class:`ExperimentResult`.
Outcomes: ``matched``, ``mismatched``, ``ignored``, ``candidate_error``,
``timeout`` and ``skipped``.

**Isolation.** Nothing the candidate or the experiment's callbacks do changes what
the caller gets: every ``Exception`` they raise is caught, counted and logged once.
What they cost depends on the mode:

* ``mode="inline"`` (the default) runs control and candidates one after the other
  on the caller's thread (or task), in random order, so the call takes the
  control's time *plus* the candidates' and the callbacks' time. A sync candidate
  cannot be preempted: one that runs past ``timeout`` is reported as ``timeout``
  when it returns, and the caller has waited for it. An async candidate is
  cancelled at ``timeout``, measured on the experiment's ``clock=``.
* ``mode="background"`` returns the control's result as soon as the control is
  done; candidates, comparison and publishing run on a small pool of daemon
  threads (sync) or on bounded asyncio tasks (async). At most
  ``max_workers + queue_size`` runs are in flight; beyond that a run is skipped
  and counted ``skipped``, never queued without limit. A sync candidate still
  running after ``timeout`` is reported as ``timeout`` (it keeps its thread until
  it returns: Python cannot kill a thread); an async one is cancelled.

Only ``sample_key``, ``run_if`` and, in inline mode, everything else run on the
caller's path; keep ``sample_key`` and ``run_if`` fast.

**How it is built.** One engine serves the four run paths: the plan (sampling,
order, judging, reporting) is written once; inline and background, sync and
async are thin drivers over it that differ only in where the behaviours run and
whether they are awaited. ``mode=`` takes a :data:`RunMode`; :data:`Mode` is its
old name, kept as an alias (it is not the enforce/shadow mode of the guards).

**Irreversible operations.** A function marked :func:`irreversible` (it charges a
card, deletes, sends an email) must not run a second time in the shadow of the
control: an experiment with such a candidate is refused with a
:class:`~tipkit.errors.ConfigError` unless ``compensate=`` undoes each run.

**What is exported.** Counters and events carry the experiment's name, the
candidate's name and the outcome, nothing else: never arguments, values, context
or exception messages. Those stay in process (``publish=``, :meth:`Experiment.mismatches`).
"""

from __future__ import annotations

from tipkit.experiment._compare import same_error
from tipkit.experiment._events import ExperimentCallbackFailed, ExperimentCompared
from tipkit.experiment._experiment import Experiment
from tipkit.experiment._irreversible import (
    irreversible,
    irreversible_reason,
    is_irreversible,
)
from tipkit.experiment._options import RunMode
from tipkit.experiment._result import (
    OUTCOMES,
    ExperimentResult,
    Mismatch,
    MismatchError,
    Observation,
    Outcome,
)

__all__ = [
    "OUTCOMES",
    "Experiment",
    "ExperimentCallbackFailed",
    "ExperimentCompared",
    "ExperimentResult",
    "Mismatch",
    "MismatchError",
    "Mode",
    "Observation",
    "Outcome",
    "RunMode",
    "irreversible",
    "irreversible_reason",
    "is_irreversible",
    "same_error",
]

Mode = RunMode
"""The old name of :data:`RunMode`, kept as an alias (``"inline"`` or ``"background"``).

Not :data:`tipkit._core._mode.Mode`, the guards' enforce/shadow mode.
"""

# Public names say where users import them from (reprs, pickles, docs).
for _obj in (
    Experiment,
    ExperimentCallbackFailed,
    ExperimentCompared,
    ExperimentResult,
    Mismatch,
    MismatchError,
    Observation,
    irreversible,
    irreversible_reason,
    is_irreversible,
    same_error,
):
    _obj.__module__ = __name__
del _obj
