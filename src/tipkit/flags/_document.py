"""Flag documents: load, validate everything, report every problem, compile once.

:func:`compile_document` turns a parsed document (YAML or JSON, same schema) into
an immutable :class:`FlagSet` whose flags are closures over precomputed outcomes
and split tables (``_compiled``), by way of the compiler (``_compile``). Any
problem raises one :class:`~tipkit.errors.ConfigError` listing every problem
found, sorted by position, each with its source, line and column (YAML; JSON
syntax errors too), flag and field.

Every refusal is a ``ConfigError``: the size limits (:class:`Limits`) are
checked before the compiler reads anything, and anything else the compiler
might raise on hostile data is turned into a ``ConfigError`` too, never let out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tipkit.errors import ConfigError
from tipkit.flags._compile import Compiler
from tipkit.flags._compiled import CompiledFlag, CompiledRule, FlagSet, Serve
from tipkit.flags._limits import (
    DEFAULT_LIMITS,
    LimitError,
    Limits,
    check_counts,
    checked_copy,
    gc_paused,
)
from tipkit.flags._yaml import ParseError, parse_json, parse_yaml, position_of

__all__ = [
    "CompiledFlag",
    "CompiledRule",
    "FlagSet",
    "Limits",
    "Serve",
    "check_split",
    "compile_document",
    "compile_plain",
    "format_of",
    "load_file",
    "load_text",
    "read_text",
    "where",
]


def compile_document(
    doc: Any, source: str = "<dict>", *, limits: Limits = DEFAULT_LIMITS
) -> FlagSet:
    """Check *doc* against *limits*, validate it and compile it; return the :class:`FlagSet`.

    *doc* is copied as plain data while its limits are checked, so the caller
    may change it afterwards.

    Raises:
        ConfigError: listing every problem, each with its source, flag, field
            and (for YAML) line and column.
    """
    if not isinstance(doc, Mapping):
        raise ConfigError(
            f"a flag document must be a mapping with 'flags', got {type(doc).__name__}",
            source=source,
        )
    with gc_paused():
        try:
            plain = checked_copy(doc, limits)
        except LimitError as exc:
            raise ConfigError(exc.message, source=source, **where(exc.path)) from None
        return _compile(plain, Compiler(source, limits), limits)


def compile_plain(doc: Any, source: str, limits: Limits = DEFAULT_LIMITS) -> FlagSet:
    """Compile *doc*, a plain copy already checked by :func:`checked_copy`.

    Raises:
        ConfigError: listing every problem, sorted by position.
    """
    with gc_paused():
        return _compile(doc, Compiler(source, limits), limits)


def where(path: tuple[Any, ...]) -> dict[str, Any]:
    """Return the flag and field a data path points at (``flags.<key>.<field>...``)."""
    if len(path) >= 2 and path[0] == "flags":  # flags, key
        rest = ".".join(str(p) for p in path[2:])
        return {"flag": str(path[1]), "field": rest or None}
    return {"field": ".".join(str(p) for p in path) or None}


def _compile(doc: Any, compiler: Compiler, limits: Limits) -> FlagSet:
    """Compile *doc*, raising every problem (limits first) sorted by position."""
    for message, flag, field in check_counts(doc, limits):
        compiler.problems.add(message, flag=flag, field=field, line=_line_of(doc, flag))
    if compiler.problems and any(
        "Limits." in p.message for p in compiler.problems.found
    ):
        raise _sorted(compiler.problems.error())
    try:
        return compiler.document(doc)
    except ConfigError as exc:
        raise _sorted(exc) from None
    except (RecursionError, ValueError, TypeError, OverflowError, MemoryError) as exc:
        # A defect in validation must still answer with a ConfigError.
        raise ConfigError(
            f"the document could not be compiled: {type(exc).__name__}: {exc}",
            source=compiler.source,
        ) from exc


def _line_of(doc: Any, flag: str | None) -> int | None:
    flags = doc.get("flags") if isinstance(doc, dict) else None
    if flag is None:
        return getattr(flags, "line", None)
    fdoc = flags.get(flag) if isinstance(flags, dict) else None
    line_of = getattr(fdoc, "line_of", None)
    return None if line_of is None else line_of("rules")


def _sorted(exc: ConfigError) -> ConfigError:
    """Return *exc* with its problems sorted by line and column (unplaced last)."""
    problems = sorted(
        exc.problems,
        key=lambda p: (
            p.line is None,
            p.line or 0,
            p.column or 0,
        ),
    )
    return ConfigError(problems=problems)


def check_split(
    key: str, weights: object, variants: Mapping[str, Any], field: str, source: str
) -> dict[str, int]:
    """Validate run-time split *weights* exactly as a document's split; return thousandths.

    Raises:
        ConfigError: listing every problem (unknown variant, a weight that is
            negative, a bool, not a number or has more than 3 decimals, weights
            not summing to exactly 100), each naming the flag and the weight.
    """
    compiler = Compiler(source)
    if not isinstance(weights, Mapping):
        compiler.problems.add(
            f"split weights must be a mapping of variant to percent, got {weights!r}",
            flag=key,
            field=f"{field}.split",
        )
        raise compiler.problems.error()
    pairs = compiler.serve_spec(
        key, {"split": dict(weights)}, set(variants), field, None
    )
    if pairs is None:
        raise compiler.problems.error()
    return dict(pairs)


def load_text(
    text: str, source: str, *, fmt: str, limits: Limits = DEFAULT_LIMITS
) -> FlagSet:
    """Parse *text* as ``"yaml"`` or ``"json"`` and compile it.

    Raises:
        ConfigError: the text does not parse, exceeds *limits*, or the
            document is invalid (every problem, sorted by line and column).
    """
    with gc_paused():
        try:
            if fmt == "yaml":
                doc, dupes = parse_yaml(text, limits)
            else:
                doc, dupes = parse_json(text, limits)
                doc = checked_copy(doc, limits)
        except ParseError as exc:
            raise ConfigError(exc.message, source=source, line=exc.line) from None
        except LimitError as exc:
            raise ConfigError(exc.message, source=source, **where(exc.path)) from None
        compiler = Compiler(source, limits)
        for d in dupes:
            compiler.problems.add(d.message, line=d.line)
        return _compile(doc, compiler, limits)


def format_of(path: Path) -> str:
    """Return ``"json"`` or ``"yaml"`` from *path*'s extension.

    Raises:
        ConfigError: the extension is neither.
    """
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    raise ConfigError(
        f"unknown flag file type {suffix!r}: use .yaml, .yml or .json", source=str(path)
    )


def read_text(p: Path, limits: Limits = DEFAULT_LIMITS) -> str:
    """Return the text of flag file *p*, refusing one larger than ``limits.max_bytes``.

    Raises:
        ConfigError: the file is missing, unreadable, too large, not UTF-8
            or holds a NUL byte.
    """
    try:
        with p.open("rb") as f:
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError as exc:
        raise ConfigError("flag file not found", source=str(p)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read flag file: {exc}", source=str(p)) from exc
    if len(data) > limits.max_bytes:
        raise ConfigError(
            f"the file is larger than Limits.max_bytes ({limits.max_bytes} bytes)",
            source=str(p),
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read flag file: {exc}",
            source=str(p),
            line=position_of(data.decode("utf-8", "replace"), exc.start),
        ) from exc


def load_file(path: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> FlagSet:
    """Read and compile the flag file at *path* (JSON or YAML by extension).

    Raises:
        ConfigError: the file is missing, unreadable or too large, or the
            document is invalid.
    """
    p = Path(path)
    fmt = format_of(p)
    return load_text(read_text(p, limits), str(p), fmt=fmt, limits=limits)
