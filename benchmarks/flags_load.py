"""Loading a flag document: CPU time and memory per flag, from a dict, JSON and YAML.

Run: python benchmarks/flags_load.py [--sizes 100,1000,10000,100000] [--repeats 3]

Every flag has two boolean variants, a default and one rule
(``country in [NZ, AU]``) serving a 10/90 split: the issue's reference
document. Each cell is the median CPU time (``time.process_time``) of
``--repeats`` loads, each in a fresh child process so one load's garbage does
not bill the next; memory is what the loaded ``Flags`` keeps (tracemalloc,
after a collection), per flag. Targets at 10,000 flags: dict and JSON <= 2 s,
YAML <= 2 s and <= 3x JSON, <= 2 KB per flag, cost linear in size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import gc, json, sys, time, tracemalloc
from tipkit.flags import Flags, Limits

n, fmt, path, memory = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
limits = Limits(max_flags=10**6, max_nodes=10**8, max_bytes=2**31 - 1)
doc = json.loads(open(path).read()) if fmt == "dict" else None
gc.collect()
if memory:
    tracemalloc.start()
start = time.process_time()
if fmt == "dict":
    flags = Flags.from_dict(doc, limits=limits)
else:
    flags = Flags.from_file(path, limits=limits)
    flags.provider.close()
cpu = time.process_time() - start
kept = 0
if memory:
    del doc
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0]
assert len(list(flags.keys())) == n
print(cpu, kept / n)
"""


def document(n: int) -> dict[str, object]:
    return {
        "version": 1,
        "flags": {
            f"flag-{i}": {
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "rules": [
                    {
                        "id": "anz",
                        "if": {"attr": "country", "op": "in", "value": ["NZ", "AU"]},
                        "serve": {"split": {"on": 10, "off": 90}},
                    }
                ],
            }
            for i in range(n)
        },
    }


def yaml_text(n: int) -> str:
    lines = ["version: 1", "flags:"]
    for i in range(n):
        lines += [
            f"  flag-{i}:",
            "    variants: {on: true, off: false}",
            "    default_variant: off",
            "    rules:",
            "      - id: anz",
            "        if: {attr: country, op: in, value: [NZ, AU]}",
            "        serve: {split: {on: 10, off: 90}}",
        ]
    return "\n".join(lines) + "\n"


def child(n: int, fmt: str, path: Path, *, memory: bool) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), fmt, str(path), "1" if memory else "0"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        "| flags | dict (s CPU) | JSON (s CPU) | YAML (s CPU) | YAML / JSON "
        "| µs per flag (YAML) | memory per flag |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            jpath = Path(tmp) / f"f{n}.json"
            ypath = Path(tmp) / f"f{n}.yaml"
            jpath.write_text(json.dumps(document(n)))
            ypath.write_text(yaml_text(n))
            times = {}
            for fmt, path in (("dict", jpath), ("json", jpath), ("yaml", ypath)):
                times[fmt] = statistics.median(
                    child(n, fmt, path, memory=False)[0] for _ in range(args.repeats)
                )
            _, kept = child(n, "json", jpath, memory=True)
            print(
                f"| {n:,} | {times['dict']:.3f} | {times['json']:.3f} "
                f"| {times['yaml']:.3f} | {times['yaml'] / times['json']:.2f}x "
                f"| {1e6 * times['yaml'] / n:.0f} | {kept / 1024:.2f} KB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
