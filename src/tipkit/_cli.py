"""The ``tipkit`` command: a thin argparse shell over library functions.

Each subcommand registers itself in :data:`COMMANDS` with a function that adds
its parser; ``main(argv)`` returns the exit code and is tested in-process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (help, function that configures the subparser and sets `handler`)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every registered subcommand."""
    from tipkit import __version__  # noqa: PLC0415  # avoid an import cycle at module load

    parser = argparse.ArgumentParser(
        prog="tipkit",
        description="Safety primitives for testing in production deliberately.",
    )
    parser.add_argument("--version", action="version", version=f"tipkit {__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, (help_text, configure) in sorted(COMMANDS.items()):
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with *argv* (default: ``sys.argv[1:]``); return the exit code."""
    _load_commands()
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return handler(args)


def _load_commands() -> None:
    """Import the modules that register subcommands (kept lazy: the CLI starts fast)."""
    import tipkit._demo._cli  # noqa: PLC0415  # registers `tipkit demo`
    import tipkit.console._cli  # noqa: PLC0415  # registers `tipkit console`
    import tipkit.doctor._cli  # noqa: PLC0415  # registers `tipkit doctor`
    import tipkit.flags._cli  # noqa: PLC0415  # registers `tipkit flags`
    import tipkit.ops._cli  # noqa: PLC0415  # registers `tipkit ops`
    import tipkit.telemetry._cli  # noqa: F401, PLC0415  # registers `tipkit telemetry`
