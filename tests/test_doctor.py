"""tipkit doctor: the level a configuration supports and each gap, on real objects."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from datetime import timedelta
from pathlib import Path

import pytest
from tests.redis_server import RedisServer

from tipkit import (
    CircuitBreaker,
    ErrorRateCheck,
    Experiment,
    Flags,
    Rollout,
    TokenBucket,
    Tripwire,
    doctor,
    irreversible,
)
from tipkit._cli import main
from tipkit.breaker import CountWindow
from tipkit.doctor._cli import load_app
from tipkit.stores import RedisStore
from tipkit.testing import FakeClock, capture_telemetry

ROOT = Path(__file__).resolve().parents[1]
GOOD_FLAG = {
    "variants": {"on": True, "off": False},
    "default_variant": "off",
    "off_variant": "off",
}
WEAK_FLAG = {"variants": {"on": True, "off": False}, "default_variant": "off"}


def app(**objects: object) -> types.ModuleType:
    """Return a module standing for an application whose globals are *objects*."""
    module = types.ModuleType("doctor_test_app")
    vars(module).update(objects)
    return module


def redis_store(server: RedisServer, *, aof: bool) -> RedisStore:
    """Return a store on *server*, with append-only persistence on or off."""
    store = RedisStore(server.url, prefix="doctor:", timeout=5.0, push=False)
    store.client.config_set("appendonly", "yes" if aof else "no")
    store.client.config_set("save", "")
    return store


def weak_app(server: RedisServer, clock: FakeClock) -> types.ModuleType:
    """A configuration with one of each gap doctor knows."""
    store = redis_store(server, aof=False)
    flags = Flags.from_dict(
        {"flags": {"new-checkout": WEAK_FLAG}},
        store=store,
        refresh_interval=30.0,
        clock=clock,
    )
    breaker = CircuitBreaker("payments", mode="shadow", clock=clock)
    rollout = Rollout(
        "new-checkout",
        flags=flags,
        checks=[ErrorRateCheck(pass_below=0.05)],
        clock=clock,
    )
    wire = Tripwire(flags, "new-checkout", max_error_rate=0.05, window=CountWindow(100))

    @irreversible(reason="sends an email")
    def send_receipt(order_id: str) -> None:
        """Send the receipt (cannot be unsent)."""

    return app(
        flags=flags, breaker=breaker, rollout=rollout, wire=wire, send=send_receipt
    )


def good_app(server: RedisServer, clock: FakeClock) -> types.ModuleType:
    """A configuration doctor has nothing to say about."""
    store = redis_store(server, aof=True)
    flags = Flags.from_dict(
        {"flags": {"new-checkout": GOOD_FLAG}}, store=store, clock=clock
    )
    breaker = CircuitBreaker(
        "payments", runbook="https://runbooks.example/p", clock=clock
    )
    bucket = TokenBucket("payments", rate=10.0, capacity=10, clock=clock)
    rollout = Rollout(
        "new-checkout",
        flags=flags,
        checks=[ErrorRateCheck()],
        runbook="https://runbooks.example/c",
        clock=clock,
    )

    @irreversible(reason="charges a card")
    def charge(order_id: str) -> str:
        """Charge a card."""
        return order_id

    doctor.compensation(charge, lambda order_id: None)
    return app(
        flags=flags, breaker=breaker, bucket=bucket, rollout=rollout, charge=charge
    )


WEAK_CODES = {
    "telemetry-not-instrumented",
    "flag-no-off-variant",
    "slow-rollback",
    "rollout-no-runbook",
    "rollout-unsafe-margin",
    "irreversible-no-compensation",
    "redis-no-persistence",
    "breaker-no-runbook",
    "tripwire-no-runbook",
    "shadow-mode",
}


@pytest.mark.redis
def test_weak_configuration_gets_every_finding(
    private_redis_server: RedisServer, clock: FakeClock
) -> None:
    """A configuration with every gap reports each one and supports level 1 only."""
    report = doctor.check(weak_app(private_redis_server, clock), clock=clock)
    assert WEAK_CODES == set(report.codes())
    assert 1 == report.level
    assert 1 == report.exit_code()
    assert all(f.fix and f.docs.endswith(f"#{f.code}") for f in report.findings)


@pytest.mark.redis
def test_good_configuration_reaches_level_five(
    private_redis_server: RedisServer, clock: FakeClock
) -> None:
    """With telemetry on an SDK, AOF, runbooks and compensation, nothing is missing."""
    target = good_app(private_redis_server, clock)
    with capture_telemetry():
        report = doctor.check(target, clock=clock)
    assert [] == report.codes()
    assert 5 == report.level
    assert 0 == report.exit_code(strict=True)
    assert "level 5 of 5" in report.render()


@pytest.mark.redis
def test_snapshots_only_is_a_warning(private_redis_server: RedisServer) -> None:
    """Redis with RDB snapshots but no AOF warns that recent kills can be lost."""
    store = redis_store(private_redis_server, aof=False)
    store.client.config_set("save", "3600 1")
    flags = Flags.from_dict({"flags": {"f": GOOD_FLAG}}, store=store)
    with capture_telemetry():
        report = doctor.check(app(flags=flags))
    assert ["redis-rdb-only"] == [f.code for f in report.findings if "redis" in f.code]
    assert "warning" == report.findings[-1].severity or report.warnings


def test_unreachable_redis_is_reported_not_raised() -> None:
    """A store that cannot answer CONFIG GET gives a warning, never an exception."""
    store = RedisStore("redis://127.0.0.1:9/0", timeout=0.5, push=False)
    flags = Flags.from_dict({"flags": {"f": GOOD_FLAG}}, store=store)
    report = doctor.check(app(flags=flags))
    assert "redis-persistence-unknown" in report.codes()


def test_shadow_mode_turns_into_an_error_after_max_shadow(clock: FakeClock) -> None:
    """A guard first seen in shadow is info; max_shadow later it blocks level 5."""
    limiter = TokenBucket("shadowed", rate=1.0, capacity=1, mode="shadow", clock=clock)
    target = app(limiter=limiter)
    first = doctor.check(target, clock=clock, max_shadow=timedelta(days=14))
    assert "shadow-mode" in first.codes()
    clock.advance(timedelta(days=15))
    later = doctor.check(target, clock=clock, max_shadow=timedelta(days=14))
    assert "shadow-too-long" in later.codes()
    limiter.mode = "enforce"
    assert not {"shadow-mode", "shadow-too-long"} & set(doctor.check(target).codes())


def test_experiment_compensation_covers_an_irreversible_candidate() -> None:
    """An irreversible candidate shadowed with compensate= needs no other undo."""

    @irreversible
    def write_v2(x: int) -> int:
        return x

    exp = Experiment(
        "writes", control=lambda x: x, candidate=write_v2, compensate=lambda *a: None
    )
    report = doctor.check(app(exp=exp))
    assert "irreversible-no-compensation" not in report.codes()


def test_no_flags_no_rollouts_in_an_empty_app() -> None:
    """An app with no tipkit object is told where to start."""
    report = doctor.check(app(nothing=1))
    assert {"no-flags", "no-rollouts", "no-guards"} <= set(report.codes())


def test_exit_code_require_level_forgives_higher_levels() -> None:
    """--require-level N fails below N and ignores errors of levels above N."""
    findings = [doctor.Finding("no-rollouts", 4, "error", "rollouts", "m", "f")]
    report = doctor.Report.build(findings, {})
    assert 3 == report.level
    assert 0 == report.exit_code(require=3)
    assert 1 == report.exit_code(require=4)
    assert 1 == report.exit_code()


def test_json_report_has_level_and_findings(clock: FakeClock) -> None:
    """The JSON form carries the level, its name and every finding's fields."""
    report = doctor.check(app(nothing=1), clock=clock)
    data = json.loads(report.to_json())
    assert report.level == data["level"]
    assert {"code", "level", "severity", "target", "message", "fix", "docs"} == set(
        data["findings"][0]
    )


def test_every_code_has_a_docs_section() -> None:
    """Each finding code the rules can emit has its section in docs/doctor.md."""
    rules = (ROOT / "src/tipkit/doctor/_rules.py").read_text(encoding="utf-8")
    init = (ROOT / "src/tipkit/doctor/__init__.py").read_text(encoding="utf-8")
    codes = set(re.findall(r'Finding\(\s*"([a-z-]+)"', rules + init))
    page = (ROOT / "docs/doctor.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^### `([a-z-]+)`", page, re.MULTILINE))
    assert len(codes) >= 18
    assert codes == documented


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m tipkit doctor ARGS` beside docs/examples/shop.py."""
    return subprocess.run(  # noqa: S603  # our own interpreter and module
        [sys.executable, "-m", "tipkit", "doctor", *args],
        cwd=ROOT / "docs/examples",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_on_the_tutorial_shop() -> None:
    """The tutorial's shop reaches level 5 with one warning: 0, or 1 with --strict."""
    proc = run_cli("--app", "shop:app")
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert proc.stdout.startswith("tipkit doctor: level 5 of 5")
    assert "WARNING [flags-local-store]" in proc.stdout
    assert all(
        len(line) <= 80 for line in proc.stdout.splitlines() if " docs: " not in line
    )
    assert 1 == run_cli("--app", "shop:app", "--strict").returncode


def test_cli_exit_codes_for_usage_and_load_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing app module exits 3; a bad option exits 2."""
    assert 3 == main(["doctor", "--app", "no_such_module_xyz:app"])
    assert "cannot load 'no_such_module_xyz:app'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--require-level", "9"])
    assert 2 == exc.value.code


def test_load_app_follows_dotted_attributes() -> None:
    """module:a.b resolves attributes; a missing one is a ValueError naming it."""
    assert doctor.Report is load_app("tipkit.doctor:Report")
    assert "build" == load_app("tipkit.doctor:Report.build").__name__
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        load_app("tipkit.doctor:Nope")
    with pytest.raises(ValueError, match="module:object"):
        load_app(":app")


def test_check_at_startup_logs_the_report(caplog: pytest.LogCaptureFixture) -> None:
    """check(log=True) logs the report as a warning when something blocks a level."""
    with caplog.at_level("INFO", logger="tipkit.doctor"):
        doctor.check(app(nothing=1), log=True)
    assert any("tipkit doctor: level" in r.getMessage() for r in caplog.records)
    assert "WARNING" == caplog.records[-1].levelname


def test_whole_process_scan_finds_live_objects() -> None:
    """check() with no app finds primitives through the garbage collector."""
    breaker = CircuitBreaker("doctor-gc-scan")
    report = doctor.check()
    assert report.inventory["breakers"] >= 1
    assert any("doctor-gc-scan" in f.target for f in report.findings)
    del breaker
