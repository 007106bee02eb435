"""``tipkit flags check|explain|buckets``: a thin shell over the flags library.

``check`` prints every error (exit 1) and every lint warning (exit 0 with
warnings, 1 with ``--strict``), each with file, line, column, flag and field,
sorted by position; ``--against OLD`` also compares splits with an earlier
version of the file.
"""
# ruff: noqa: T201  # a CLI prints

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tipkit._cli import COMMANDS
from tipkit.errors import ConfigError
from tipkit.flags._bucketing import BUCKETS, bucket_of
from tipkit.flags._compiled import CompiledFlag, FlagSet, Serve
from tipkit.flags._document import format_of, load_file, read_text
from tipkit.flags._engine import Flags
from tipkit.flags._lint import lint
from tipkit.flags._model import EvaluationContext
from tipkit.flags._providers import InMemoryProvider
from tipkit.flags._yaml import parse_json, parse_yaml

__all__ = ["configure"]


def _load(path: str) -> FlagSet | None:
    try:
        return load_file(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}")
        return None


def _check(args: argparse.Namespace) -> int:
    flag_set = _load(args.file)
    if flag_set is None:
        return 1
    previous = None
    if args.against is not None:
        previous = _load(args.against)
        if previous is None:
            return 1
    path = Path(args.file)
    text = read_text(path)
    doc, _ = parse_yaml(text) if format_of(path) == "yaml" else parse_json(text)
    warnings = lint(doc, flag_set, previous)
    for warning in warnings:
        print(f"warning: {warning}")
    print(
        f"ok: {args.file}: {len(flag_set.flags)} flags, "
        f"{len(flag_set.segments)} segments, {len(warnings)} warnings"
    )
    return 1 if warnings and args.strict else 0


def _parse_attr(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def _explain(args: argparse.Namespace) -> int:
    flag_set = _load(args.file)
    if flag_set is None:
        return 1
    if args.flag not in flag_set.flags:
        print(
            f"error: flag {args.flag!r} is not in {args.file}; "
            f"flags: {', '.join(sorted(flag_set.flags))}"
        )
        return 1
    attrs = dict(args.attr or [])
    flags = Flags(_provider_of(flag_set))
    explanation = flags.explain(args.flag, EvaluationContext(args.key, attrs))
    detail = explanation.detail
    print(f"flag:    {args.flag}")
    print(f"context: key={args.key!r} attributes={attrs!r}")
    print(f"variant: {detail.variant}")
    print(f"value:   {json.dumps(detail.value)}")
    print(f"reason:  {detail.reason.value}")
    print(f"rule:    {detail.rule_id or '-'}")
    print(f"bucket:  {'-' if explanation.bucket is None else explanation.bucket}")
    if detail.error_code is not None:
        print(f"error:   {detail.error_code.value}: {detail.error_message}")
    print("why:")
    for step in explanation.steps:
        print(f"  - {step}")
    return 0


def _provider_of(flag_set: FlagSet) -> InMemoryProvider:
    provider = InMemoryProvider(source=flag_set.source)
    provider._snapshot = flag_set  # already validated: serve it as is
    return provider


def _splits(flag: CompiledFlag) -> list[tuple[str, Serve]]:
    found = [(f"rule {r.id!r}", r.serve) for r in flag.rules if r.serve.is_split]
    if flag.fallthrough.is_split:
        found.append(("fallthrough", flag.fallthrough))
    return found


def _buckets(args: argparse.Namespace) -> int:
    flag_set = _load(args.file)
    if flag_set is None:
        return 1
    flag = flag_set.flags.get(args.flag)
    if flag is None:
        print(
            f"error: flag {args.flag!r} is not in {args.file}; "
            f"flags: {', '.join(sorted(flag_set.flags))}"
        )
        return 1
    if args.sample <= 0:
        print(f"error: --sample must be positive, got {args.sample}")
        return 2
    splits = _splits(flag)
    if not splits:
        print(
            f"flag {args.flag!r} has no percentage split: every key gets the same variant per rule"
        )
        return 0
    prefix = f"{flag.salt}."
    print(
        f"flag {args.flag!r}: salt {flag.salt!r}, {args.sample} synthetic keys "
        f"{args.prefix}0..{args.prefix}{args.sample - 1}"
    )
    for where, serve in splits:
        counts = [0] * len(serve.outcomes)
        bounds = serve.bounds
        index = {o.variant: n for n, o in enumerate(serve.outcomes)}
        for i in range(args.sample):
            if flag.scheme is not None:  # a vendor's bucketing: ask the split itself
                counts[index[serve.run({}, f"{args.prefix}{i}").variant]] += 1
                continue
            b = bucket_of(prefix, f"{args.prefix}{i}")
            idx = 0
            while b >= bounds[idx]:
                idx += 1
            counts[idx] += 1
        print(f"{where}:")
        print(f"  {'variant':<16} {'configured':>10} {'observed':>10} {'count':>10}")
        assert serve.weights is not None
        for out, weight, count in zip(
            serve.outcomes, serve.weights, counts, strict=True
        ):
            configured = 100 * weight / BUCKETS
            observed = 100 * count / args.sample
            print(
                f"  {out.variant!s:<16} {configured:>9.3f}% {observed:>9.3f}% {count:>10}"
            )
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``flags`` subcommands to *parser*."""
    sub = parser.add_subparsers(
        title="flags commands", dest="flags_command", metavar="COMMAND"
    )

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)

    check = sub.add_parser(
        "check",
        help="validate a flag file: every error and lint warning with its location",
    )
    check.add_argument("file", help="a .yaml, .yml or .json flag document")
    check.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too, not only errors"
    )
    check.add_argument(
        "--against",
        metavar="OLD",
        default=None,
        help="an earlier version of the file: warn when a split moves users needlessly",
    )
    check.set_defaults(handler=_check)

    explain = sub.add_parser(
        "explain", help="evaluate one flag for one context and say why"
    )
    explain.add_argument("file")
    explain.add_argument("flag")
    explain.add_argument("--key", default=None, help="the targeting key")
    explain.add_argument(
        "--attr",
        action="append",
        type=_parse_attr,
        metavar="NAME=VALUE",
        help=(
            "a context attribute (repeatable); VALUE is read as JSON when it "
            "parses, else as a string"
        ),
    )
    explain.set_defaults(handler=_explain)

    buckets = sub.add_parser(
        "buckets",
        help="show the observed split over N synthetic keys beside the weights",
    )
    buckets.add_argument("file")
    buckets.add_argument("flag")
    buckets.add_argument(
        "--sample",
        type=int,
        default=10_000,
        help="how many synthetic keys (default 10000)",
    )
    buckets.add_argument(
        "--prefix",
        default="key-",
        help="synthetic keys are PREFIX0, PREFIX1, ... (default key-)",
    )
    buckets.set_defaults(handler=_buckets)
    _configure_import(sub)


# -- import: another vendor's flags, keeping every user's cohort (flags12b) -----------
IMPORT_PARTIAL = 3
"""Exit code of ``flags import`` when some flags did not translate (listed on stderr)."""


def _import(args: argparse.Namespace) -> int:
    from tipkit.flags._import import import_flags  # noqa: PLC0415  # only this command

    try:
        data = json.loads(Path(args.file).read_text("utf-8"))
        result = import_flags(
            args.vendor, data, env=args.env, flagd_version=args.flagd_version
        )
    except (OSError, ValueError, RecursionError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    if args.output and Path(args.output).suffix in (".yaml", ".yml"):
        import yaml  # noqa: PLC0415  # a dependency; only this branch needs it

        text = yaml.safe_dump(result.document, sort_keys=False, allow_unicode=True)
    else:
        text = json.dumps(result.document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        Path(args.output).write_text(text, "utf-8")
    else:
        sys.stdout.write(text)
    for line in result.report():
        print(line, file=sys.stderr)
    done = len(result.document["flags"])
    print(
        f"{'ok' if result.complete else 'partial'}: {done} flags imported from "
        f"{args.vendor}, {len(result.skipped)} not translated",
        file=sys.stderr,
    )
    return 0 if result.complete else IMPORT_PARTIAL


def _configure_import(sub: Any) -> None:
    imp = sub.add_parser(
        "import",
        help="turn LaunchDarkly, Unleash, GrowthBook or flagd flag JSON into a "
        "tipkit document that keeps every user's variant",
    )
    imp.add_argument(
        "--from",
        dest="vendor",
        required=True,
        choices=("launchdarkly", "unleash", "growthbook", "flagd"),
    )
    imp.add_argument("file", help="the vendor's exported flag JSON")
    imp.add_argument(
        "-o",
        "--output",
        default=None,
        help="write the document here (.json, or .yaml/.yml); default: stdout",
    )
    imp.add_argument(
        "--env",
        default=None,
        help="the environment of a LaunchDarkly REST export or Unleash export "
        "(default: production, or the only one)",
    )
    imp.add_argument(
        "--flagd-version",
        type=int,
        choices=(2, 3),
        default=3,
        help="the flagd fractional hash your flags were served with: 3 (the current "
        "spec, CBOR; default) or 2 (flagd before it)",
    )
    imp.set_defaults(handler=_import)


COMMANDS["flags"] = (
    "feature flags: check a file, explain an evaluation, show bucket splits, import",
    configure,
)
