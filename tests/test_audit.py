"""The audit log: records, filters, JSON Lines, replay, retention, outages and AOF."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.ops_support import App, unique_prefix

from tipkit import audit
from tipkit.audit import ActionAudited, AuditRecord
from tipkit.ops import Conflict, Operator
from tipkit.stores import MemoryStore
from tipkit.telemetry import add_listener, remove_listener
from tipkit.testing import FakeClock


def _record(store: Any, **kw: Any) -> AuditRecord | None:
    base: dict[str, Any] = {
        "actor": "alice",
        "action": "flag.kill",
        "target": "flag:checkout",
        "reason": "errors",
        "before": {"killed": False},
        "after": {"killed": True},
    }
    return audit.record(store, **{**base, **kw})


def test_records_have_ids_store_time_and_every_field() -> None:
    """A record carries id, store time, actor, action, target, reason, before/after, runbook."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    rec = _record(store, runbook="https://rb.invalid/x")
    assert rec is not None
    assert ("1767225600000-0", clock.time()) == (rec.id, rec.time)
    assert [rec] == audit.read(store)
    clock.advance(0.0001)
    second = _record(store)
    assert second is not None
    assert "1767225600000-1" == second.id  # same millisecond: the sequence counts up
    exported = json.loads(audit.to_jsonl([rec]))
    assert list(audit.FIELDS) == list(exported)
    assert "https://rb.invalid/x" == exported["runbook"]


def test_read_filters_by_target_actor_and_since() -> None:
    """read(store, target=, actor=, since=) keeps only the matching records."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    _record(store, actor="alice", target="flag:a")
    clock.advance(3600)
    _record(store, actor="bob", target="rollout:a")
    _record(store, actor="bob", target="flag:b")
    assert ["flag:a", "rollout:a"] == [r.target for r in audit.read(store, target="a")]
    assert ["rollout:a"] == [r.target for r in audit.read(store, target="rollout:a")]
    assert 2 == len(audit.read(store, actor="bob"))
    assert 2 == len(audit.read(store, since="30m", clock=clock))
    assert 3 == len(audit.read(store, since=0))
    with pytest.raises(ValueError, match="since must be"):
        audit.read(store, since="soon", clock=clock)


def test_memory_log_is_bounded_by_its_retention() -> None:
    """MemoryStore keeps the last audit_retention records."""
    store = MemoryStore()
    store.audit_retention = 3
    for i in range(5):
        _record(store, reason=f"r{i}")
    assert ["r2", "r3", "r4"] == [r.reason for r in audit.read(store)]
    with pytest.raises(ValueError, match="audit_retention"):
        store.audit_retention = 0


def test_an_appended_record_is_published_as_an_event() -> None:
    """Each record is an ActionAudited event (what telemetry exports and webhooks send)."""
    seen: list[ActionAudited] = []
    listener = add_listener(seen.append, types=ActionAudited)
    try:
        rec = _record(MemoryStore())
    finally:
        remove_listener(listener)
    assert [rec] == [e.record for e in seen]
    attrs = seen[0].otel_attributes()
    assert "errors" not in attrs.values()  # the reason text is not exported
    assert "flag.kill" == attrs["tipkit.audit.action"]


def test_an_operator_kill_is_an_opentelemetry_log_record_without_its_reason() -> None:
    """Real SDK logs pipeline: the audited kill is a log record; the reason text is not in it."""
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.telemetry._capture import capture_telemetry

    doc = {"flags": {"checkout": {"variants": {"on": True, "off": False},
                                  "default_variant": "on", "off_variant": "off"}}}  # fmt: skip
    flags = Flags(InMemoryProvider(doc), store=MemoryStore())
    with capture_telemetry() as cap:
        flags.kill("checkout", actor="alice", reason="card 4111 1111 leaks")
        logs = [log for log in cap.logs if log.event_name == "tipkit.audit.action"]
    (log,) = logs
    attrs = dict(log.attributes or {})
    assert ("flag:checkout", "flag.kill", "alice") == (
        attrs["tipkit.name"],
        attrs["tipkit.audit.action"],
        attrs["tipkit.audit.actor"],
    )
    assert "4111" not in json.dumps([attrs, str(log.body)])


def test_record_on_a_store_without_a_log_is_nothing() -> None:
    """A store that keeps no log records nothing and raises nothing."""
    assert None is _record(object())
    with pytest.raises(TypeError, match="keeps no audit log"):
        audit.read(object())


# -- Redis ----------------------------------------------------------------------------
def test_redis_stream_uses_server_time_and_explicit_retention(redis_store: Any) -> None:
    """XADD stamps the server's time; the stream is trimmed only when retention is set."""
    now = float(redis_store.client.time()[0])
    rec = _record(redis_store)
    assert rec is not None
    assert abs(rec.time - now) < 5
    for _ in range(200):
        _record(redis_store)
    assert 201 == redis_store.client.xlen(redis_store.audit_key)
    redis_store.audit_retention = 10
    _record(redis_store)
    assert 10 <= redis_store.client.xlen(redis_store.audit_key) < 202


def test_a_record_made_during_an_outage_is_appended_after_with_both_times(
    private_redis_server: Any,
) -> None:
    """The store is down: the record waits (made_at = wall clock) and is appended on recovery."""
    from tipkit.stores import RedisStore

    clock = FakeClock()
    store = RedisStore(private_redis_server.url, prefix=unique_prefix(), timeout=1.0)
    private_redis_server.stop()
    assert None is _record(store, clock=clock)
    assert 1 == audit.pending(store)
    private_redis_server.start()
    assert audit.flush_pending(store)
    [rec] = audit.read(store)
    assert clock.time() == rec.made_at
    assert rec.time > rec.made_at  # the server's time of the append, later than made
    assert 0 == audit.pending(store)
    store.close()


def _aof_server(directory: str) -> tuple[subprocess.Popen[str], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(  # noqa: S603 - the local redis-server, fixed arguments
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            if client.ping():
                break
        except redis.exceptions.ConnectionError:
            threading.Event().wait(0.02)
    client.close()
    return proc, port


def test_the_audit_stream_survives_a_sigkill_with_aof(redis_server: Any) -> None:
    """With appendonly yes, every record is still there after SIGKILL and restart."""
    from tipkit.stores import RedisStore

    directory = tempfile.mkdtemp(prefix="tipkit-aof-")
    proc, port = _aof_server(directory)
    try:
        store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="aof:", timeout=2.0)
        clock = FakeClock()
        App(store, clock)
        op = Operator(store, actor="alice", clock=clock)
        op.kill("checkout", reason="one")
        op.open_breaker("payments", reason="two")
        before = [r.as_dict() for r in audit.read(store)]
        store.close()
        proc.kill()
        proc.wait()
        proc, _ = _restart(directory, port)
        store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix="aof:", timeout=2.0)
        assert before == [r.as_dict() for r in audit.read(store)]
        assert {
            "flag:checkout": {"killed": True},
            "breaker:payments": {"state": "forced_open"},
        } == (audit.replay(audit.read(store)))
        store.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _restart(directory: str, port: int) -> tuple[subprocess.Popen[str], int]:
    exe = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(  # noqa: S603 - the local redis-server, fixed arguments
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--dir", directory],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port)
    for _ in range(500):
        try:
            if client.ping() and not client.info("persistence")["loading"]:
                break
        except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
            threading.Event().wait(0.02)
    client.close()
    return proc, port


# -- replay -----------------------------------------------------------------------------
ACTIONS = st.lists(
    st.tuples(
        st.integers(0, 2),  # which "process" (operator with its own actor)
        st.sampled_from(
            [
                "kill",
                "revive",
                "override",
                "clear_override",
                "split",
                "clear_split",
                "open",
                "reset",
                "disable",
            ]
        ),
        st.sampled_from(["checkout", "pricing"]),
    ),
    max_size=25,
)


def _apply(op: Operator, action: str, key: str) -> None:
    try:
        if action in ("kill", "revive", "clear_override", "clear_split"):
            getattr(op, action)(key, reason="prop")
        elif action == "override":
            op.set_override(key, "on" if key == "checkout" else "new", reason="prop")
        elif action == "split":
            weights = (
                {"on": 30, "off": 70} if key == "checkout" else {"new": 5, "old": 95}
            )
            op.set_split(key, weights, reason="prop")
        else:
            getattr(op, f"{action}_breaker")("payments", reason="prop")
    except Conflict:
        pass  # the loser is told; nothing written


def _final(op: Operator) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in ("checkout", "pricing"):
        f = op.flag(key)
        out[f"flag:{key}"] = {
            "killed": f["killed"],
            "override": f["override"],
            "split": f["split"],
        }
    out["breaker:payments"] = {"state": op.breaker("payments")["shared_state"]}
    return out


def _check_replay(
    store: Any, clock: FakeClock, steps: list[tuple[int, str, str]]
) -> None:
    App(store, clock)
    ops = [Operator(store, actor=f"proc{i}", clock=clock) for i in range(3)]
    per_proc: list[list[tuple[str, str]]] = [[], [], []]
    for proc, action, key in steps:
        per_proc[proc].append((action, key))
    # What the application wrote itself (the rollout's split) is the starting state.
    start = _final(ops[0])
    barrier = threading.Barrier(3)

    def worker(i: int) -> None:
        barrier.wait()
        for action, key in per_proc[i]:
            _apply(ops[i], action, key)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replayed = audit.replay(audit.read(store))
    for target, changes in replayed.items():
        start[target].update(changes)
    assert _final(ops[0]) == start


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ACTIONS)
def test_replaying_the_log_gives_the_final_state_memory(
    steps: list[tuple[int, str, str]],
) -> None:
    """Any actions from three concurrent writers: replaying the log gives the final state."""
    clock = FakeClock()
    _check_replay(MemoryStore(clock=clock), clock, steps)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=ACTIONS)
def test_replaying_the_log_gives_the_final_state_redis(
    redis_url: str, steps: list[tuple[int, str, str]]
) -> None:
    """The same on a real Redis, each writer with its own connection pool (a process each)."""
    from tipkit.stores import RedisStore

    prefix = unique_prefix()
    store = RedisStore(redis_url, prefix=prefix, timeout=5.0)
    try:
        _check_replay(store, FakeClock(), steps)
    finally:
        keys = list(store.client.scan_iter(match=f"{prefix}*"))
        if keys:
            store.client.delete(*keys)
        store.close()


def test_redis_append_sync_and_async_stamp_alike_and_fail_as_store_errors(
    private_redis_server: Any,
) -> None:
    """append_audit and aappend_audit both XADD and stamp; a down server is a StoreError."""
    import asyncio

    from tipkit.errors import StoreError
    from tipkit.stores import RedisStore

    store = RedisStore(private_redis_server.url, prefix=unique_prefix(), timeout=1.0)
    first = store.append_audit({"n": 1})
    second = asyncio.run(store.aappend_audit({"n": 2}))
    assert [first, second] == store.read_audit()
    assert ({"n": 1}, {"n": 2}) == (first.record, second.record)
    private_redis_server.stop()
    failures = []
    for append in (
        lambda: store.append_audit({"n": 3}),
        lambda: asyncio.run(store.aappend_audit({"n": 3})),
    ):
        with pytest.raises(StoreError) as info:
            append()
        failures.append(info.value.__cause__ is not None)
    private_redis_server.start()
    store.close()
    assert [True, True] == failures
