"""``tipkit doctor``: register the subcommand (a thin shell over :func:`check`)."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from tipkit._cli import COMMANDS

__all__ = ["configure", "load_app"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_LOAD = 0, 1, 2, 3


def load_app(spec: str) -> object:
    """Import ``module:attribute`` (or ``module``) and return the object.

    Raises:
        ValueError: *spec* is malformed or the attribute is missing.
        ImportError: the module cannot be imported.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ValueError(f"--app wants module:object, got {spec!r}")
    obj: object = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _run(args: argparse.Namespace) -> int:
    from tipkit.doctor import check  # noqa: PLC0415  # the CLI starts fast

    app: object | None = None
    if args.app:
        if "." not in sys.path and "" not in sys.path:
            sys.path.insert(0, "")  # as `python -m` does: the app is beside the caller
        try:
            app = load_app(args.app)
        except Exception as exc:
            traceback.print_exc()
            sys.stderr.write(f"tipkit doctor: cannot load {args.app!r}: {exc}\n")
            return EXIT_LOAD
    report = check(
        app,
        max_pass_margin=args.max_pass_margin,
        max_rollback=args.max_rollback,
    )
    sys.stdout.write((report.to_json() if args.json else report.render()) + "\n")
    return report.exit_code(require=args.require_level, strict=args.strict)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the doctor's options to *parser*."""
    parser.add_argument(
        "--app",
        metavar="MODULE:OBJECT",
        help="import MODULE and examine OBJECT and the module's globals "
        "(default: everything importing tipkit built, i.e. nothing in a fresh CLI)",
    )
    parser.add_argument(
        "--require-level",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="exit 1 unless the configuration supports level N (1-5); errors of "
        "higher levels are then forgiven",
    )
    parser.add_argument(
        "--strict", action="store_true", help="warnings fail the check too"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--max-pass-margin",
        type=float,
        default=0.02,
        metavar="F",
        help="largest tolerated pass_below - max_increase of a rate check (0.02)",
    )
    parser.add_argument(
        "--max-rollback",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="longest tolerated time for a kill to reach a process (10)",
    )
    parser.epilog = (
        "exit codes: 0 no failing finding, 1 findings (or below --require-level), "
        "2 usage error, 3 the app could not be loaded"
    )
    parser.set_defaults(handler=_run)


HELP = (
    "say which maturity level a running configuration supports and what is missing,"
    " each gap with its fix (exit 1 on errors, for CI)"
)

COMMANDS["doctor"] = (HELP, configure)
