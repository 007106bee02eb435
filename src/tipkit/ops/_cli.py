"""``tipkit ops``: the operator's command line over a store.

::

    tipkit ops flags [list | show KEY | kill KEY | revive KEY | override KEY VARIANT
                      | split KEY on=10 off=90]
    tipkit ops rollouts [list | show NAME | pause NAME | resume NAME | promote NAME
                         | rollback NAME]
    tipkit ops breakers [list | show NAME | open NAME | disable NAME | reset NAME]
    tipkit ops limits [list | show NAME]
    tipkit ops audit [--since 1h] [--target KEY] [--actor NAME] [--follow]

``--store``, ``--prefix``, ``--json``, ``--actor`` and ``--reason`` are accepted
anywhere on the line. Exit codes: 0 done, 1 refused (the message says why;
nothing changed), 2 usage, 3 store unreachable (nothing half-written).
"""

from __future__ import annotations

# ruff: noqa: T201  # a CLI prints
import argparse
import json
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TextIO

from tipkit._cli import COMMANDS
from tipkit.audit import AuditRecord, to_jsonl
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.errors import StoreError
from tipkit.ops._api import Operator, Refused
from tipkit.ops._render import render
from tipkit.ops._stores import ENV_PREFIX, ENV_STORE, open_store

__all__ = ["EXIT_REFUSED", "EXIT_STORE", "EXIT_USAGE", "configure"]

EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_STORE: Final = 3

CLOCK: list[Clock] = [SYSTEM_CLOCK]
"""The clock ``--follow`` polls on (tests put a FakeClock here)."""

_AREAS: Final = {
    "flags": (
        ("list", None),
        ("show", "KEY"),
        ("kill", "KEY"),
        ("revive", "KEY"),
        ("override", "KEY"),
        ("split", "KEY"),
    ),
    "rollouts": (
        ("list", None),
        ("show", "NAME"),
        ("pause", "NAME"),
        ("resume", "NAME"),
        ("promote", "NAME"),
        ("rollback", "NAME"),
    ),
    "breakers": (
        ("list", None),
        ("show", "NAME"),
        ("open", "NAME"),
        ("disable", "NAME"),
        ("reset", "NAME"),
    ),
    "limits": (("list", None), ("show", "NAME")),
}
_WRITES: Final = {
    "kill",
    "revive",
    "override",
    "split",
    "pause",
    "resume",
    "promote",
    "rollback",
    "open",
    "disable",
    "reset",
}


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Top level: real defaults. Leaves: SUPPRESS, so a value given before the
    # subcommand is not overwritten by the leaf's default.
    d: Callable[[Any], Any] = (lambda v: v) if top else (lambda _v: argparse.SUPPRESS)
    parser.add_argument(
        "--store", default=d(None), help=f"store URL (default: ${ENV_STORE})"
    )
    parser.add_argument(
        "--prefix",
        default=d(None),
        help=f"key prefix (default: ${ENV_PREFIX} or 'tipkit:')",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=d(False),  # noqa: FBT003
        help="print JSON",
    )
    parser.add_argument(
        "--actor", default=d(None), help="who acts (default: the OS user)"
    )
    parser.add_argument(
        "--reason", default=d(None), help="why (required by every write)"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``ops`` subcommands to *parser*."""
    _common(parser, top=True)
    areas = parser.add_subparsers(dest="area", metavar="AREA")
    for area, verbs in _AREAS.items():
        ap = areas.add_parser(area, help=f"see and act on {area}")
        _common(ap, top=False)
        ap.set_defaults(handler=_handler, verb="list")
        vs = ap.add_subparsers(dest="verb", metavar="ACTION")
        for verb, arg in verbs:
            vp = vs.add_parser(verb)
            _common(vp, top=False)
            if arg is not None:
                vp.add_argument("target", metavar=arg)
            if verb == "override":
                vp.add_argument("variant", nargs="?", help="the variant to serve")
                vp.add_argument(
                    "--clear", action="store_true", help="remove the override"
                )
            if verb == "split":
                vp.add_argument("weights", nargs="*", metavar="VARIANT=PERCENT")
                vp.add_argument("--clear", action="store_true", help="remove the split")
    ap = areas.add_parser("audit", help="read the audit log")
    _common(ap, top=False)
    ap.add_argument("--since", help="only records since (15m, 1h, 2d or an ISO time)")
    ap.add_argument(
        "--target", help="only this target (a flag key, rollout or breaker name)"
    )
    ap.add_argument("--follow", action="store_true", help="keep printing new records")
    ap.add_argument("--follow-polls", type=int, default=None, help=argparse.SUPPRESS)
    ap.set_defaults(handler=_handler, verb="audit")
    parser.set_defaults(handler=lambda _a: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _handler(args: argparse.Namespace, out: TextIO | None = None) -> int:  # noqa: PLR0911  # one exit code per outcome
    out = out or sys.stdout
    args.verb = args.verb or "list"
    try:
        store = open_store(args.store, args.prefix)
    except ValueError as exc:
        print(f"tipkit ops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        op = Operator(store, actor=args.actor, clock=CLOCK[0])
        if args.verb in _WRITES:
            return _write(op, args, out)
        if args.verb == "audit":
            return _audit(op, args, out)
        return _read(op, args, out)
    except Refused as exc:
        print(f"tipkit ops: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:  # a bad --actor
        print(f"tipkit ops: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except StoreError as exc:
        print(f"tipkit ops: store unreachable: {exc}", file=sys.stderr)
        return EXIT_STORE
    finally:
        if not args.store or not str(args.store).startswith("memory://"):
            store.close()


def _read(op: Operator, args: argparse.Namespace, out: TextIO) -> int:
    area, verb = args.area, args.verb
    if verb == "list":
        data: Any = {
            "flags": op.flags,
            "rollouts": op.rollouts,
            "breakers": op.breakers,
            "limits": op.limits,
        }[area]()
    else:
        data = {
            "flags": op.flag,
            "rollouts": op.rollout,
            "breakers": op.breaker,
            "limits": op.limit,
        }[area](args.target)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True), file=out)
    else:
        print(render(area, verb, data, op.clock), file=out)
    return 0


def _weights(raw: list[str]) -> dict[str, Decimal]:
    weights: dict[str, Decimal] = {}
    for item in raw:
        name, sep, pct = item.partition("=")
        if not sep or not name:
            raise Refused(f"a split weight is VARIANT=PERCENT, got {item!r}")
        try:
            weights[name] = Decimal(pct.rstrip("%"))
        except InvalidOperation:
            raise Refused(f"weight of {name!r} is not a number: {pct!r}") from None
    if not weights:
        raise Refused("a split needs weights: split KEY on=10 off=90")
    return weights


def _write(op: Operator, args: argparse.Namespace, out: TextIO) -> int:
    verb, target, reason = args.verb, args.target, args.reason
    if reason is None or not str(reason).strip():
        raise Refused(f"{verb} needs --reason saying why (it goes to the audit log)")
    clear = getattr(args, "clear", False)
    done: AuditRecord | None
    if verb == "override":
        if clear:
            done = op.clear_override(target, reason=reason)
        elif args.variant is None:
            raise Refused("override needs a VARIANT (or --clear)")
        else:
            done = op.set_override(target, args.variant, reason=reason)
    elif verb == "split":
        done = (
            op.clear_split(target, reason=reason)
            if clear
            else op.set_split(target, _weights(args.weights), reason=reason)
        )
    else:
        action: Callable[..., AuditRecord | None] = {
            "kill": op.kill,
            "revive": op.revive,
            "pause": op.pause,
            "resume": op.resume,
            "promote": op.promote,
            "rollback": op.rollback,
            "open": op.open_breaker,
            "disable": op.disable_breaker,
            "reset": op.reset_breaker,
        }[verb]
        done = action(target, reason=reason)
    if done is None:
        message = {
            "ok": True,
            "changed": False,
            "message": f"{target}: nothing to change",
        }
        print(json.dumps(message) if args.json else message["message"], file=out)
        return 0
    if args.json:
        to_jsonl([done], out)
    else:
        print(
            f"{done.action} {done.target}: {_short(done.before)} -> {_short(done.after)}"
            f"  (audit {done.id}, by {done.actor})",
            file=out,
        )
    return 0


def _short(state: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in state.items())


def _audit(op: Operator, args: argparse.Namespace, out: TextIO) -> int:
    def show(records: list[AuditRecord]) -> None:
        if args.json:
            to_jsonl(records, out)
        elif records:
            print(render("audit", "list", records, op.clock), file=out)
        out.flush()

    records = op.audit(target=args.target, actor=args.actor, since=args.since)
    show(records)
    if not args.follow:
        return 0
    last = records[-1].id if records else None
    polls = args.follow_polls
    clock = CLOCK[0]
    try:
        while polls is None or polls > 0:
            clock.sleep(1.0)
            polls = None if polls is None else polls - 1
            new = op.audit(target=args.target, actor=args.actor, after=last)
            if new:
                last = new[-1].id
                show(new)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        return 0
    return 0


COMMANDS["ops"] = (
    "operate a fleet: see and act on flags, rollouts, breakers, limits; read the audit log",
    configure,
)
