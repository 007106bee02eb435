"""Fleet-correct evidence: three processes, lost replies, exact fleet totals.

Each child runs one rollout on a real Redis server through a fault proxy of
its own, and makes the proxy *mute* (the server applies the request, the reply
is discarded) during some of its batch writes: the write times out in the
client after Redis applied it. The batch is sent again with the same id, so
the fleet's totals must equal the sum of what the three processes counted,
exactly.
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from tests.redis_server import RedisServer, run_children

from tipkit.rollout._persist import NAMESPACE
from tipkit.stores import RedisStore

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import json, random, sys, threading
    root, port, prefix, index, requests, lose = sys.argv[1:7]
    sys.path.insert(0, root)
    from tests.fault_proxy import FaultProxy
    from tipkit.flags import Flags, InMemoryProvider
    from tipkit.rollout import ErrorRateCheck, Rollout
    from tipkit.stores import RedisStore

    index, requests, lose = int(index), int(requests), int(lose)
    applied_after_timeout = []

    class LossyStore(RedisStore):
        # Mute the proxy during the 2nd, 4th, ... batch write of this process.
        writes = 0

        def compare_and_set(self, namespace, key, value, *, version, ttl=None):
            if "/counts/" not in key:
                return super().compare_and_set(
                    namespace, key, value, version=version, ttl=ttl
                )
            LossyStore.writes += 1
            muted = (
                LossyStore.writes % 2 == 0
                and sum(applied_after_timeout) < lose
                and len(applied_after_timeout) < 40 * lose
            )
            if muted:
                proxy.set("mute")
            try:
                return super().compare_and_set(
                    namespace, key, value, version=version, ttl=ttl
                )
            except Exception as exc:
                if "not tried" in str(exc):  # refused: the store is known down
                    raise
                if muted:  # did Redis apply the write whose reply we never got?
                    # (Not when another process wrote first: then the
                    # compare-and-set found a newer version and wrote nothing.)
                    pid = rollout._local.fleet.pid
                    entry = direct.get(namespace, key)
                    applied_after_timeout.append(
                        entry is not None
                        and entry.value["seq"].get(pid, 0) >= value["seq"][pid]
                    )
                raise
            finally:
                proxy.set("pass")

    with FaultProxy(int(port)) as proxy:
        # The timeout is what a muted write waits for; everything else is
        # idempotent, so a slow reply under load only sends a batch again.
        store = LossyStore(proxy.url, prefix=prefix, timeout=1.5)
        direct = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, timeout=30.0)
        flags = Flags(InMemoryProvider(), store=store)
        rollout = Rollout(
            "fleet-exact", flags=flags, store=store, stages=[50, 100],
            min_samples=10**9, min_stage_duration=10**9, max_stage_duration=None,
            checks=[ErrorRateCheck(max_increase=0.9)], fleet_counts=True,
            flush_every=50,
        )
        print("ready", flush=True)
        sys.stdin.readline()
        rng = random.Random(index)
        counted = [0, 0, 0, 0]  # control, control errors, canary, canary errors
        i = 0
        # The requests, then more until one muted write was applied by Redis
        # (another process writing first makes a muted write apply nothing).
        while i < requests or (sum(applied_after_timeout) < lose and i < 5 * requests):
            with rollout.observe(f"p{index}-u{i}") as arm:
                bad = rng.random() < 0.05
                if bad:
                    arm.fail()
            if arm.judged:
                k = 2 if arm.is_canary else 0
                counted[k] += 1
                counted[k + 1] += bad
            i += 1
        fleet = rollout._local.fleet
        tick = threading.Event()
        for _ in range(500):  # send what is pending or unacknowledged
            if fleet.inflight is None and not fleet.pending:
                break
            rollout.evaluate()
            tick.wait(0.02)  # a store that timed out is probed 0.25 s later
        print(json.dumps({
            "counted": counted,
            "key": fleet.key,
            "flushed": fleet.inflight is None and not fleet.pending,
            "applied_after_timeout": applied_after_timeout,
            "writes": LossyStore.writes,
            "requests": i,
        }))
    """
)


def test_three_processes_with_lost_replies_count_every_outcome_once(
    redis_server: RedisServer,
) -> None:
    """Batch writes that time out after Redis applied them are not counted twice."""
    prefix = f"judge-fleet-{uuid.uuid4().hex[:10]}:"
    argv = [
        [str(ROOT), str(redis_server.port), prefix, str(i), "1500", "1"]
        for i in range(3)
    ]
    results = run_children(CHILD, argv, timeout=300)
    assert [True, True, True] == [r["flushed"] for r in results]
    assert 1 == len({r["key"] for r in results})
    # Every process had at least one write applied by Redis whose reply it
    # never got (it timed out, kept the batch and sent it again).
    applied = [sum(r["applied_after_timeout"]) for r in results]
    assert [True, True, True] == [a >= 1 for a in applied], results
    store = RedisStore(redis_server.url, prefix=prefix, timeout=30.0)
    try:
        entry = store.get(NAMESPACE, results[0]["key"])
    finally:
        store.close()
    assert entry is not None
    totals = entry.value["totals"]
    expected = [sum(r["counted"][k] for r in results) for k in range(4)]
    assert sum(r["requests"] for r in results) == expected[0] + expected[2]
    assert expected == [
        totals.get("n0", 0),
        totals.get("b0.0", 0),
        totals.get("n1", 0),
        totals.get("b1.0", 0),
    ]
    assert 3 == len(entry.value["seq"])
