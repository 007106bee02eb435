"""``tipkit console``: serve the operator's web console over a store.

::

    tipkit console --store redis://... [--prefix P] [--host 127.0.0.1] [--port 8377]
                   [--token T | $TIPKIT_CONSOLE_TOKEN]

Binds the loopback interface unless ``--host`` says otherwise; another host
needs a token (a console others can reach is never anonymous). Without a
token the console is read-only. Exit codes: 0 stopped, 2 usage.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Final

from tipkit._cli import COMMANDS
from tipkit.ops._stores import ENV_PREFIX, ENV_STORE, open_store

__all__ = ["DEFAULT_PORT", "ENV_TOKEN", "configure", "plan"]

ENV_TOKEN: Final = "TIPKIT_CONSOLE_TOKEN"  # noqa: S105  # a variable name, not a secret
DEFAULT_PORT: Final = 8377


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``console`` options to *parser*."""
    parser.add_argument("--store", help=f"store URL (default: ${ENV_STORE})")
    parser.add_argument(
        "--prefix", help=f"key prefix (default: ${ENV_PREFIX} or 'tipkit:')"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--token",
        help=f"token operators sign in with to act (default: ${ENV_TOKEN}; "
        "none: read-only)",
    )
    parser.set_defaults(handler=_handler)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plan(args: argparse.Namespace) -> tuple[str | None, tuple[str, ...]]:
    """Return (token, allowed Host names) for *args*, or raise ``ValueError`` (usage).

    A non-loopback ``--host`` needs a token and answers that name besides the
    loopback ones.
    """
    token = args.token or os.environ.get(ENV_TOKEN) or None
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    if not _loopback(args.host):
        if token is None:
            raise ValueError(
                f"--host {args.host} is reachable from other machines: give --token "
                f"(or ${ENV_TOKEN}); a console others reach is never anonymous"
            )
        hosts = ("*",) if args.host in {"0.0.0.0", "::"} else (*hosts, args.host)  # noqa: S104  # the operator asked
    return token, hosts


def _handler(args: argparse.Namespace) -> int:  # pragma: no cover - runs a server
    import uvicorn  # noqa: PLC0415  # the optional extra

    from tipkit.console import create_app  # noqa: PLC0415  # the optional extra

    try:
        token, hosts = plan(args)
        store = open_store(args.store, args.prefix)
        app = create_app(store, token=token, allowed_hosts=hosts)
    except ValueError as exc:
        print(f"tipkit console: {exc}", file=sys.stderr)  # noqa: T201  # a CLI prints
        return 2
    mode = "actions need the token" if token else "read-only (no --token)"
    print(  # noqa: T201  # a CLI prints
        f"tipkit console on http://{args.host}:{args.port}/ ({mode})", file=sys.stderr
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


COMMANDS["console"] = (
    "serve the operator's web console (flags, rollouts, breakers, limits, audit log)",
    configure,
)
