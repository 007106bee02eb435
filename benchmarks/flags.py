"""Flag evaluation: tipkit against GrowthBook, OpenFeature, LaunchDarkly and Unleash.

Run: python benchmarks/flags.py [--quick]

The same work for every library: a boolean flag with one attribute rule
(country is NZ) serving a 50% split, evaluated for N distinct keys (100k), all
offline (no network: each peer is configured from a local definition). Each row
is the median of >= 5 repeats, in ns per evaluation; the ratio is peer / tipkit
(the reused-EvaluationContext row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tipkit.flags import EvaluationContext, FlagEvaluated, Flags
from tipkit.telemetry._events import BUS

DOC = {
    "flags": {
        "bench": {
            "variants": {"on": True, "off": False},
            "default_variant": "off",
            "rules": [
                {
                    "id": "nz",
                    "if": {"attr": "country", "op": "eq", "value": "NZ"},
                    "serve": {"split": {"on": 50, "off": 50}},
                }
            ],
        }
    }
}


def run(fn: Callable[[], Any], n: int, repeats: int) -> float:
    """Return the median ns per evaluation over *repeats* runs of *fn* (n evaluations)."""
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n * 1e9


def tipkit_cases(keys: list[str]) -> dict[str, Callable[[], Any]]:
    flags = Flags.from_dict(DOC)
    ie = flags.is_enabled
    ctxs = [EvaluationContext(k, {"country": "NZ"}) for k in keys]
    assert abs(sum(ie("bench", c) for c in ctxs) / len(ctxs) - 0.5) < 0.02

    def reused() -> None:
        for c in ctxs:
            ie("bench", c)

    def dict_per_call() -> None:
        for k in keys:
            ie("bench", {"targeting_key": k, "country": "NZ"})

    def ctx_per_call() -> None:
        for k in keys:
            ie("bench", EvaluationContext(k, {"country": "NZ"}))

    return {
        "tipkit, reused EvaluationContext": reused,
        "tipkit, dict built per call": dict_per_call,
        "tipkit, EvaluationContext built per call": ctx_per_call,
    }


def growthbook_case(keys: list[str]) -> Callable[[], Any]:
    from growthbook import GrowthBook

    features = {
        "bench": {
            "defaultValue": False,
            "rules": [
                {
                    "condition": {"country": "NZ"},
                    "force": True,
                    "coverage": 0.5,
                    "hashAttribute": "id",
                }
            ],
        }
    }
    gb = GrowthBook(features=features)
    attrs = [{"id": k, "country": "NZ"} for k in keys]
    got = 0
    for a in attrs[:2000]:
        gb.set_attributes(a)
        got += gb.is_on("bench")
    assert 800 < got < 1200, got

    def fn() -> None:
        for a in attrs:
            gb.set_attributes(a)
            gb.is_on("bench")

    return fn


def openfeature_case(keys: list[str]) -> Callable[[], Any]:
    import mmh3
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext as OFContext
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    def evaluator(flag: InMemoryFlag, ctx: OFContext) -> FlagResolutionDetails[Any]:
        if ctx.attributes.get("country") == "NZ" and ctx.targeting_key is not None:
            b = (mmh3.hash(f"bench.{ctx.targeting_key}", 0, False) * 100_000) >> 32
            variant = "on" if b < 50_000 else "off"
            return FlagResolutionDetails(
                flag.variants[variant], variant=variant, reason=Reason.SPLIT
            )
        return FlagResolutionDetails(False, variant="off", reason=Reason.DEFAULT)

    flag = InMemoryFlag("off", {"on": True, "off": False}, context_evaluator=evaluator)
    api.set_provider(InMemoryProvider({"bench": flag}))
    client = api.get_client()
    ctxs = [OFContext(targeting_key=k, attributes={"country": "NZ"}) for k in keys]
    get = client.get_boolean_value

    def fn() -> None:
        for c in ctxs:
            get("bench", False, c)

    return fn


def launchdarkly_case(
    keys: list[str], tmp: Path
) -> tuple[Callable[[], Any], Callable[[], None]]:
    import ldclient
    from ldclient import Context
    from ldclient.config import Config
    from ldclient.integrations import Files

    data = {
        "flags": {
            "bench": {
                "key": "bench",
                "on": True,
                "version": 1,
                "salt": "bench",
                "variations": [True, False],
                "offVariation": 1,
                "fallthrough": {"variation": 1},
                "targets": [],
                "prerequisites": [],
                "rules": [
                    {
                        "id": "nz",
                        "clauses": [
                            {
                                "attribute": "country",
                                "op": "in",
                                "values": ["NZ"],
                                "negate": False,
                            }
                        ],
                        "rollout": {
                            "variations": [
                                {"variation": 0, "weight": 50000},
                                {"variation": 1, "weight": 50000},
                            ]
                        },
                    }
                ],
            }
        }
    }
    path = tmp / "ld.json"
    path.write_text(json.dumps(data))
    config = Config(
        "bench-sdk-key",
        update_processor_class=Files.new_data_source(paths=[str(path)]),
        send_events=False,
        diagnostic_opt_out=True,
    )
    client = ldclient.LDClient(config=config, start_wait=5)
    assert client.is_initialized()
    ctxs = [Context.builder(k).set("country", "NZ").build() for k in keys]
    got = sum(client.variation("bench", c, False) for c in ctxs[:2000])
    assert 800 < got < 1200, got
    variation = client.variation

    def fn() -> None:
        for c in ctxs:
            variation("bench", c, False)

    return fn, client.close


def unleash_case(
    keys: list[str], tmp: Path
) -> tuple[Callable[[], Any], Callable[[], None]]:
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    features = {
        "version": 1,
        "features": [
            {
                "name": "bench",
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {
                            "rollout": "50",
                            "stickiness": "userId",
                            "groupId": "bench",
                        },
                        "constraints": [
                            {
                                "contextName": "country",
                                "operator": "IN",
                                "values": ["NZ"],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    cache = FileCache("tipkit-bench", directory=str(tmp / "unleash"))
    cache.bootstrap_from_dict(features)
    client = UnleashClient(
        url="http://127.0.0.1:9",  # never contacted: fetch_toggles=False
        app_name="tipkit-bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    client.initialize_client(fetch_toggles=False)
    ctxs = [{"userId": k, "properties": {"country": "NZ"}} for k in keys]
    got = sum(client.is_enabled("bench", c) for c in ctxs[:2000])
    assert 800 < got < 1200, got
    is_enabled = client.is_enabled

    def fn() -> None:
        for c in ctxs:
            is_enabled("bench", c)

    return fn, client.destroy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="10k keys, 5 repeats (smoke run)"
    )
    parser.add_argument(
        "--keys", type=int, default=None, help="distinct keys per run (default 100000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="repeats per row (>= 5; default 7)"
    )
    args = parser.parse_args()
    n = args.keys or (10_000 if args.quick else 100_000)
    repeats = max(5, 5 if args.quick else args.repeats)
    keys = [f"user-{i}" for i in range(n)]
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    rows: list[tuple[str, float]] = []
    cases = tipkit_cases(keys)
    for name, fn in cases.items():
        rows.append((name, run(fn, n, repeats)))

    seen: list[Any] = []

    def listener(event: Any) -> None:
        seen.append(None)

    BUS.add_listener(listener, types=FlagEvaluated)
    try:
        rows.append(
            (
                "tipkit, reused EvaluationContext, one listener",
                run(cases["tipkit, reused EvaluationContext"], n, repeats),
            )
        )
    finally:
        BUS.remove_listener(listener)
    assert seen

    closers: list[Callable[[], None]] = []
    peers: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for name, build in (
            ("GrowthBook", lambda: (growthbook_case(keys), None)),
            (
                "OpenFeature SDK, InMemoryProvider",
                lambda: (openfeature_case(keys), None),
            ),
            (
                "LaunchDarkly SDK, file data source",
                lambda: launchdarkly_case(keys, tmp),
            ),
            ("Unleash client, bootstrapped offline", lambda: unleash_case(keys, tmp)),
        ):
            try:
                fn, close = build()
            except Exception as exc:
                print(
                    f"# {name}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr
                )
                continue
            if close is not None:
                closers.append(close)
            peers.append((name, run(fn, n, repeats)))
        for close in closers:
            with contextlib.suppress(Exception):
                close()

    base = rows[0][1]
    print(
        f"flag evaluation, {n} distinct keys, median of {repeats} repeats, "
        f"Python {sys.version.split()[0]}"
    )
    print()
    print(f"| {'library / mode':<48} | {'ns/op':>8} | {'ratio to tipkit':>15} |")
    print(f"| {'-' * 48} | {'-' * 8}:| {'-' * 15}:|")
    for name, ns in rows + peers:
        print(f"| {name:<48} | {ns:>8.0f} | {ns / base:>14.2f}x |")
    if peers:
        fastest = min(peers, key=lambda r: r[1])
        print()
        print(
            f"fastest peer: {fastest[0]} at {fastest[1]:.0f} ns/op = "
            f"{fastest[1] / base:.1f}x tipkit (target >= 5x)"
        )
    print(
        f"tipkit reused context: {base:.0f} ns/op (target <= 1000); "
        f"dict per call: {rows[1][1]:.0f} ns/op (target <= 1500)"
    )


if __name__ == "__main__":
    main()
