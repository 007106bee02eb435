"""Flag documents: load, validate everything, report every problem, compile once.

:func:`compile_document` turns a parsed document (YAML or JSON, same schema) into
an immutable :class:`FlagSet` whose flags are closures over precomputed outcomes
and split tables (``_compiled``), by way of the compiler (``_compile``). Any
problem raises one :class:`~tipkit.errors.ConfigError` listing every problem
found, each with its source, line (YAML), flag and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tipkit.errors import ConfigError
from tipkit.flags._compile import Compiler
from tipkit.flags._compiled import CompiledFlag, CompiledRule, FlagSet, Serve
from tipkit.flags._yaml import ParseError, parse_json, parse_yaml

__all__ = [
    "CompiledFlag",
    "CompiledRule",
    "FlagSet",
    "Serve",
    "check_split",
    "compile_document",
    "format_of",
    "load_file",
    "load_text",
]


def compile_document(doc: Any, source: str = "<dict>") -> FlagSet:
    """Validate *doc* and compile it; return the :class:`FlagSet`.

    Raises:
        ConfigError: listing every problem, each with its source, flag, field
            and (for YAML) line.
    """
    return Compiler(source).document(doc)


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


def load_text(text: str, source: str, *, fmt: str) -> FlagSet:
    """Parse *text* as ``"yaml"`` or ``"json"`` and compile it.

    Raises:
        ConfigError: the text does not parse, or the document is invalid.
    """
    try:
        doc, dupes = parse_yaml(text) if fmt == "yaml" else parse_json(text)
    except ParseError as exc:
        raise ConfigError(exc.message, source=source, line=exc.line) from exc
    compiler = Compiler(source)
    for d in dupes:
        compiler.problems.add(d.message, line=d.line)
    return compiler.document(doc)


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


def load_file(path: str | Path) -> FlagSet:
    """Read and compile the flag file at *path* (JSON or YAML by extension).

    Raises:
        ConfigError: the file is missing or unreadable, or the document is invalid.
    """
    p = Path(path)
    fmt = format_of(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("flag file not found", source=str(p)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read flag file: {exc}", source=str(p)) from exc
    return load_text(text, str(p), fmt=fmt)
