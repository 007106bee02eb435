"""Which maturity level does a running configuration support, and what is missing?

``tipkit doctor --app module:object`` (or :func:`check` at start-up) examines
the live tipkit objects of an application and reports, against the maturity
model of ``docs/adoption.md`` (1 staging only, 2 observability, 3 flags and
canaries, 4 automated progressive delivery, 5 testing in production as
culture), every gap it finds: telemetry not exported, flags without a kill
path, rollouts without runbooks or with an unsafe pass margin, irreversible
functions without compensation, a Redis without persistence holding kill
switches, guards left in shadow mode. Each finding says how to fix it and links
its section of ``docs/doctor.md``.

It reads the configuration as built and changes nothing; the only I/O is two
``CONFIG GET`` commands per Redis store that holds kill switches.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from tipkit._core._durations import to_seconds
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.doctor._discover import Inventory, discover
from tipkit.doctor._model import DOCS, LEVELS, Finding, Report, Severity, docs_url
from tipkit.doctor._rules import RULES, Settings, compensation, compensation_for

__all__ = [
    "DOCS",
    "LEVELS",
    "Finding",
    "Inventory",
    "Report",
    "Severity",
    "check",
    "compensation",
    "compensation_for",
    "docs_url",
]

_log = logging.getLogger("tipkit.doctor")


def check(
    app: object | None = None,
    *,
    max_pass_margin: float = 0.02,
    max_rollback: float | timedelta = 10.0,
    max_shadow: float | timedelta = timedelta(days=14),
    clock: Clock = SYSTEM_CLOCK,
    log: bool = False,
) -> Report:
    """Examine the tipkit objects *app* reaches (the whole process if ``None``).

    Args:
        app: the application object (or module); its module's globals are
            examined too. ``None``: every live tipkit object of the process.
        max_pass_margin: the largest ``pass_below - max_increase`` of a rate
            check that is not reported as ``rollout-unsafe-margin`` (0.02: two
            percentage points).
        max_rollback: seconds a kill may take to reach this process before it
            is ``slow-rollback``.
        max_shadow: how long a guard may stay in shadow mode, counted from
            the first ``check()`` that saw it there, before ``shadow-too-long``.
        clock: the wall clock shadow ages are read from.
        log: also log the report to the ``tipkit.doctor`` logger (a warning
            when there are errors, else info): for a call at start-up.

    Returns:
        The :class:`Report`: ``report.level``, ``report.findings``,
        ``report.exit_code()``.

    Never raises for a bad configuration (that is a finding); a check that
    fails unexpectedly is reported as ``doctor-check-failed``. Thread-safe.
    """
    settings = Settings(
        max_pass_margin=max_pass_margin,
        max_rollback_seconds=to_seconds(max_rollback, "max_rollback"),
        max_shadow=to_seconds(max_shadow, "max_shadow"),
        clock=clock,
    )
    inventory = discover(app)
    findings: list[Finding] = []
    for rule in RULES:
        try:
            findings.extend(rule(inventory, settings))
        except Exception as exc:
            findings.append(
                Finding(
                    "doctor-check-failed",
                    1,
                    "warning",
                    f"check {rule.__name__}",
                    f"the check failed: {type(exc).__name__}: {exc}",
                    "report it to the tipkit developers, with the traceback in the "
                    "tipkit.doctor log",
                )
            )
            _log.debug("doctor check %s failed", rule.__name__, exc_info=True)
    report = Report.build(findings, inventory.counts())
    if log:
        _log.log(logging.WARNING if report.errors else logging.INFO, "%s", report)
    return report
