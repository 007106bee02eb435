"""``tipkit ops``: every command against a MemoryStore and a real Redis, bad input, outages."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from tests.ops_support import App, env, run, run_json, unique_prefix

from tipkit import audit, registry
from tipkit.ops import Conflict, Operator, Refused, serve_memory
from tipkit.ops import _cli as ops_cli
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock


class Target:
    """An application on a store, and the CLI arguments that reach that store."""

    def __init__(self, store: Any, args: list[str], clock: FakeClock) -> None:
        self.store = store
        self.args = args
        self.clock = clock
        self.app = App(store, clock)

    def ops(self, *argv: str) -> tuple[int, str, str]:
        return run("ops", *argv, *self.args)

    def json(self, *argv: str) -> Any:
        return run_json("ops", *argv, *self.args)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    ops_cli.CLOCK[0] = fake
    yield fake
    ops_cli.CLOCK[0] = ops_cli.SYSTEM_CLOCK


@pytest.fixture(params=["memory", "redis"])
def target(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Target]:
    if request.param == "memory":
        store = MemoryStore(clock=clock)
        url = serve_memory(f"ops-{id(store)}", store)
        yield Target(store, ["--store", url], clock)
        return
    from tipkit.stores import RedisStore

    url = request.getfixturevalue("redis_url")
    prefix = unique_prefix()
    store = RedisStore(url, prefix=prefix, timeout=5.0)
    yield Target(store, ["--store", url, "--prefix", prefix], clock)
    keys = list(store.client.scan_iter(match=f"{prefix}*"))
    if keys:
        store.client.delete(*keys)
    store.close()


def _nothing_changed(t: Target, before_versions: dict[str, int]) -> None:
    for ns, version in before_versions.items():
        assert version == t.store.version(ns), ns
    assert [] == audit.read(t.store)


def _versions(t: Target) -> dict[str, int]:
    return {ns: t.store.version(ns) for ns in ("flags", "tipkit.rollouts", "breakers")}


# -- flags -------------------------------------------------------------------------
def test_flags_list_shows_registered_flags_and_variants(target: Target) -> None:
    """`flags list --json` lists every registered flag with its variants and state."""
    listed = {f["key"]: f for f in target.json("flags", "list")}
    assert ["checkout", "pricing"] == sorted(listed)
    assert ["on", "off"] == listed["checkout"]["variants"]
    assert False is listed["checkout"]["killed"]


def test_kill_from_the_cli_is_seen_by_the_application_and_audited(
    target: Target,
) -> None:
    """A kill with --reason reaches the app's Flags and lands in the audit log."""
    code, out, err = target.ops(
        "flags", "kill", "checkout", "--reason", "errors up", "--actor", "alice"
    )
    assert (0, "") == (code, err)
    assert "flag.kill flag:checkout" in out
    assert (
        "off" == target.app.flags.evaluate("checkout", {"targeting_key": "u1"}).variant
    )
    [rec] = audit.read(target.store)
    assert ("alice", "flag.kill", "flag:checkout", "errors up") == (
        rec.actor,
        rec.action,
        rec.target,
        rec.reason,
    )
    assert ({"killed": False}, {"killed": True}) == (rec.before, rec.after)
    code, _, _ = target.ops("flags", "revive", "checkout", "--reason", "fixed")
    assert 0 == code
    assert "checkout" not in target.app.flags.killed()
    assert ["flag.kill", "flag.revive"] == [r.action for r in audit.read(target.store)]


def test_kill_twice_changes_nothing_the_second_time(target: Target) -> None:
    """Killing a killed flag exits 0, writes nothing and audits nothing."""
    assert 0 == target.ops("flags", "kill", "checkout", "--reason", "r")[0]
    code, out, _ = target.ops("flags", "kill", "checkout", "--reason", "r")
    assert (0, "checkout: nothing to change\n") == (code, out)
    assert 1 == len(audit.read(target.store))


def test_override_and_split_are_served(target: Target) -> None:
    """Override KEY VARIANT and split KEY on=.. off=.. reach the app; --clear undoes them."""
    assert 0 == target.ops("flags", "override", "pricing", "new", "--reason", "demo")[0]
    assert (
        "new" == target.app.flags.evaluate("pricing", {"targeting_key": "u1"}).variant
    )
    assert (
        0
        == target.ops("flags", "override", "pricing", "--clear", "--reason", "done")[0]
    )
    assert (
        0
        == target.ops("flags", "split", "checkout", "on=0", "off=100", "--reason", "r")[
            0
        ]
    )
    shown = target.json("flags", "show", "checkout")
    assert {"on": 0.0, "off": 100.0} == shown["split"]
    assert (
        "off" == target.app.flags.evaluate("checkout", {"targeting_key": "u7"}).variant
    )
    assert 0 == target.ops("flags", "split", "checkout", "--clear", "--reason", "r")[0]
    assert None is target.json("flags", "show", "checkout")["split"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["flags", "kill", "nope", "--reason", "r"], "unknown flag 'nope'"),
        (
            ["flags", "override", "pricing", "blue", "--reason", "r"],
            "has no variant 'blue'",
        ),
        (
            ["flags", "split", "checkout", "on=10", "off=80", "--reason", "r"],
            "sum to exactly 100",
        ),
        (["flags", "split", "checkout", "on=10", "blue=90", "--reason", "r"], "blue"),
        (["flags", "split", "checkout", "on", "--reason", "r"], "VARIANT=PERCENT"),
        (["flags", "kill", "checkout", "--reason", "  "], "needs --reason"),
        (["flags", "kill", "checkout"], "needs --reason"),
        (["rollouts", "rollback", "nope", "--reason", "r"], "unknown rollout 'nope'"),
        (["breakers", "open", "nope", "--reason", "r"], "unknown breaker 'nope'"),
        (["limits", "show", "nope"], "unknown limit 'nope'"),
        (["audit", "--since", "yesterday"], "since must be"),
    ],
)
def test_bad_input_is_refused_with_exit_1_and_nothing_changes(
    target: Target, argv: list[str], message: str
) -> None:
    """Bad input: a clear message, exit 1, no state written and no audit record."""
    before = _versions(target)
    code, out, err = target.ops(*argv)
    assert (1, "") == (code, out)
    assert message in err
    _nothing_changed(target, before)


def test_usage_errors_exit_2(target: Target) -> None:
    """An unknown action or a missing argument is a usage error (exit 2)."""
    assert 2 == target.ops("flags", "explode")[0]
    assert 2 == target.ops("flags", "kill")[0]
    assert 2 == run("ops", "flags", "list")[0]  # no store at all


def test_options_are_accepted_anywhere(target: Target) -> None:
    """--store/--json before the area, or after the action's arguments."""
    url_args = target.args
    code, out, _ = run("ops", *url_args, "--json", "flags", "show", "checkout")
    assert 0 == code
    assert "checkout" == json.loads(out)["key"]
    code, out, _ = run("ops", "flags", "show", "checkout", "--json", *url_args)
    assert "checkout" == json.loads(out)["key"]


def test_environment_variables_name_the_store(target: Target) -> None:
    """TIPKIT_STORE and TIPKIT_STORE_PREFIX mean what --store and --prefix mean."""
    values = dict(zip(target.args[::2], target.args[1::2], strict=True))
    variables = {"TIPKIT_STORE": values["--store"]}
    if "--prefix" in values:
        variables["TIPKIT_STORE_PREFIX"] = values["--prefix"]
    with env(**variables):
        listed = run_json("ops", "flags")
    assert ["checkout", "pricing"] == [f["key"] for f in listed]


# -- rollouts ----------------------------------------------------------------------
def test_rollout_controls_reach_the_application(target: Target) -> None:
    """pause, resume, promote and rollback from the CLI are what the Rollout serves."""
    rollout = target.app.rollout
    shown = target.json("rollouts", "show", "pricing")
    assert ("running", 10.0, 0) == (shown["status"], shown["percent"], shown["stage"])
    assert 0 == target.ops("rollouts", "pause", "pricing", "--reason", "weekend")[0]
    assert "paused" == rollout.status().status
    assert 0 == target.ops("rollouts", "resume", "pricing", "--reason", "monday")[0]
    assert (
        0 == target.ops("rollouts", "promote", "pricing", "--reason", "looks good")[0]
    )
    assert 50.0 == target.json("rollouts", "show", "pricing")["percent"]
    rollout.status()
    assert 50.0 == rollout.percent
    assert 0 == target.ops("rollouts", "rollback", "pricing", "--reason", "p99 up")[0]
    rollout.status()
    assert 0.0 == rollout.percent
    actions = [r.action for r in audit.read(target.store, target="pricing")]
    assert [
        "rollout.pause",
        "rollout.resume",
        "rollout.promote",
        "rollout.rollback",
    ] == actions
    assert "https://runbooks.invalid/pricing" == audit.read(target.store)[-1].runbook


def test_promote_of_a_rolled_back_rollout_is_refused(target: Target) -> None:
    """A control the rollout's state forbids exits 1 and writes nothing more."""
    assert 0 == target.ops("rollouts", "rollback", "pricing", "--reason", "r")[0]
    code, _, err = target.ops("rollouts", "promote", "pricing", "--reason", "r")
    assert 1 == code
    assert "rolled back" in err
    assert 1 == len(audit.read(target.store))


def test_rollouts_list_and_show_text(target: Target) -> None:
    """The text views name the stage, the canary share and the time in stage."""
    target.clock.advance(125)
    code, out, _ = target.ops("rollouts")
    assert 0 == code
    assert "pricing  running  10%     2m05s" in out
    code, out, _ = target.ops("rollouts", "show", "pricing")
    assert "stage 1/3 at 10% canary" in out
    assert "2m05s in stage" in out


# -- breakers and limits ------------------------------------------------------------
def test_breaker_open_and_reset_reach_every_process(target: Target) -> None:
    """Open forces the app's shared breaker open; reset closes it."""
    assert (
        0 == target.ops("breakers", "open", "payments", "--reason", "provider down")[0]
    )
    target.app.breaker.sync()
    assert "forced_open" == target.app.breaker.state.value
    assert "forced_open" == target.json("breakers", "show", "payments")["state"]
    assert (
        0 == target.ops("breakers", "reset", "payments", "--reason", "provider back")[0]
    )
    target.app.breaker.sync()
    assert "closed" == target.app.breaker.state.value
    assert 0 == target.ops("breakers", "disable", "payments", "--reason", "noisy")[0]
    assert "disabled" == target.json("breakers", "show", "payments")["shared_state"]


def test_limits_list_and_show(target: Target) -> None:
    """A registered shared limiter is listed with its rate and capacity."""
    from tipkit.ratelimit import TokenBucket

    bucket = TokenBucket(
        "api", rate=10, capacity=20, store=target.store, clock=target.clock
    )
    assert ["api"] == [x["name"] for x in target.json("limits")]
    assert {"rate": 10, "capacity": 20, "keyed": False} == target.json(
        "limits", "show", "api"
    )["config"]
    del bucket  # registered when built; kept alive until here


# -- the audit command ---------------------------------------------------------------
def test_audit_json_filters_and_follow(target: Target) -> None:
    """`audit --json` prints one object per record; --target, --actor, --since filter."""
    target.ops("flags", "kill", "checkout", "--reason", "one", "--actor", "alice")
    target.clock.advance(7200)
    assert 3 <= registry.beat()  # heartbeats keep the registrations alive
    target.ops("breakers", "open", "payments", "--reason", "two", "--actor", "bob")
    lines = target.ops("audit", "--json")[1].splitlines()
    first = json.loads(lines[0])
    assert list(audit.FIELDS) == list(first)[: len(audit.FIELDS)]
    assert 2 == len(lines)
    by_bob = run_json("ops", "audit", "--actor", "bob", *target.args)
    assert "breaker:payments" == by_bob["target"]
    code, out, _ = target.ops("audit", "--target", "checkout", "--json")
    assert ["flag:checkout"] == [json.loads(x)["target"] for x in out.splitlines()]
    if isinstance(target.store, MemoryStore):  # Redis stamps with its own (real) time
        code, out, _ = target.ops("audit", "--since", "1h", "--json")
        assert ["bob"] == [json.loads(x)["actor"] for x in out.splitlines()]
    code, out, _ = target.ops("audit", "--follow", "--follow-polls", "2")
    assert (0, 2) == (code, len(out.splitlines()))


# -- outages and concurrency -----------------------------------------------------------
def test_store_unreachable_exits_3() -> None:
    """A store nobody answers at: exit 3, a message naming the store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(
        "ops",
        "flags",
        "kill",
        "x",
        "--reason",
        "r",
        "--store",
        f"redis://127.0.0.1:{port}/0",
    )
    assert 3 == code
    assert "store unreachable" in err


class _CutAtExec:
    """A loopback TCP proxy to Redis that drops the connection when a client sends EXEC."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(
                target=self._pipe, args=(client, server, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pipe, args=(server, client, False), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and b"EXEC" in data:
                    self.cut.set()
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_store_going_away_mid_command_exits_3_and_writes_nothing(
    redis_server: Any, clock: FakeClock
) -> None:
    """The connection drops when the write is sent: exit 3, no state and no audit record."""
    from tipkit.stores import RedisStore

    prefix = unique_prefix()
    store = RedisStore(redis_server.url, prefix=prefix, timeout=5.0)
    App(store, clock)
    proxy = _CutAtExec(redis_server.port)
    try:
        before = store.version("flags")
        code, _, err = run(
            "ops",
            "flags",
            "kill",
            "checkout",
            "--reason",
            "r",
            "--store",
            f"redis://127.0.0.1:{proxy.port}/0",
            "--prefix",
            prefix,
        )
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert 3 == code, err
    assert before == store.version("flags")
    assert [] == audit.read(store)
    assert None is store.get("flags", "kill/checkout")
    store.close()


def test_concurrent_writers_one_wins_the_loser_is_told(target: Target) -> None:
    """Many threads act on one flag at once: each either wins (audited) or gets Conflict."""
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def act(i: int) -> None:
        op = Operator(target.store, actor=f"op{i}", clock=target.clock)
        barrier.wait()
        try:
            if i % 2:
                done = op.kill("checkout", reason="race")
            else:
                done = op.set_override("checkout", "on", reason="race")
            outcomes.append("unchanged" if done is None else "won")
        except Conflict:
            outcomes.append("lost")

    threads = [threading.Thread(target=act, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = audit.read(target.store)
    assert outcomes.count("won") == len(records)
    state = audit.replay(records)["flag:checkout"]
    shown = Operator(target.store, clock=target.clock).flag("checkout")
    assert {k: shown[k] for k in state} == state


def test_a_stale_write_is_refused_and_appends_nothing(target: Target) -> None:
    """audited_compare_and_set with a stale version writes and appends nothing."""
    entry_version = target.store.version("flags")
    Operator(target.store, clock=target.clock).kill("checkout", reason="first")
    assert None is target.store.audited_compare_and_set(
        "flags", "kill/checkout", False, version=0, record={"action": "x"}
    )
    assert 1 == len(audit.read(target.store))
    assert entry_version < target.store.version("flags")


def test_operator_api_refuses_without_a_reason(target: Target) -> None:
    """The API refuses an empty reason before touching the store."""
    with pytest.raises(Refused, match="non-empty string"):
        Operator(target.store).kill("checkout", reason="")


def test_the_demo_ending_kills_from_the_cli_and_shows_the_log(clock: FakeClock) -> None:
    """operator_ending() runs the kill and the audit read the demo ends with."""
    from tipkit.ops._demo_end import operator_ending

    store = MemoryStore(clock=clock)
    app = App(store, clock)
    out = operator_ending(store, app.flags, "checkout")
    assert "flag.kill flag:checkout" in out
    assert "on-call" in out.splitlines()[-1]
    assert "checkout" in app.flags.killed()
