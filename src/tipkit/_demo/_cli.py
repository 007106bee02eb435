"""``tipkit demo``: register the subcommand (a thin shell over :func:`run_demo`)."""

from __future__ import annotations

import argparse

from tipkit._cli import COMMANDS

__all__ = ["configure"]


def _run(args: argparse.Namespace) -> int:
    from tipkit._demo import run_demo  # noqa: PLC0415  # the CLI starts fast; the demo is heavy

    result = run_demo(
        seed=args.seed, fast=args.fast, full=args.full, out=args.out, live=args.live
    )
    return 0 if result.ok else 1


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to *parser*."""
    from tipkit._demo import DEFAULT_OUT, DEFAULT_SEED  # noqa: PLC0415  # see _run

    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help=f"seed of every random draw: same seed, same numbers (default {DEFAULT_SEED})",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--fast",
        action="store_true",
        help="smaller traffic where the story allows it (what the test suite runs)",
    )
    size.add_argument(
        "--full",
        action="store_true",
        help="a longer, richer run: more users, longer stages and outage, more"
        " orders (about 1.5 times the default's CPU)",
    )
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=None,
        help=f"the timeline chart's PNG file, or a directory for {DEFAULT_OUT.name}"
        " (default: ./" + DEFAULT_OUT.name + ")",
    )
    parser.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        help="print outcomes only, without the live progress view",
    )
    parser.set_defaults(handler=_run)


HELP = (
    "simulate a service on a virtual clock and watch tipkit catch a bad canary,"
    " promote a good one, ride out an outage and find a shadow mismatch"
)

COMMANDS["demo"] = (HELP, configure)
