import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tipkit.errors import ConfigError
from tipkit.flags import Flags, compile_document, load_file
from tipkit.flags._yaml import parse_json, parse_yaml

BOOL = {"variants": {"on": True, "off": False}, "default_variant": "off"}


def problems_of(doc: Any) -> list[tuple[str | None, str | None, str]]:
    with pytest.raises(ConfigError) as info:
        compile_document(doc, "doc.yaml")
    assert all(p.source == "doc.yaml" for p in info.value.problems)
    return [(p.flag, p.field, p.message) for p in info.value.problems]


def one(doc: Any) -> tuple[str | None, str | None, str]:
    found = problems_of(doc)
    assert len(found), found == 1
    return found[0]


def flag(**fields: Any) -> dict[str, Any]:
    return {"flags": {"f": {**BOOL, **fields}}}


@pytest.mark.parametrize(
    ("doc", "field", "needle"),
    [
        (flag(default_variant="maybe"), "default_variant", "unknown variant 'maybe'"),
        (flag(off_variant="maybe"), "off_variant", "unknown variant"),
        (flag(fallthrough="maybe"), "fallthrough", "unknown variant"),
        (
            flag(
                rules=[
                    {"if": {"attr": "a", "op": "eq", "value": "x"}, "serve": "maybe"}
                ]
            ),
            "rules[0].serve",
            "unknown variant",
        ),
        (
            flag(fallthrough={"split": {"on": 50, "maybe": 50}}),
            "fallthrough.split.maybe",
            "unknown variant",
        ),
        (
            flag(fallthrough={"split": {"on": -10, "off": 110}}),
            "fallthrough.split.on",
            "negative",
        ),
        (
            flag(fallthrough={"split": {"on": True, "off": 100}}),
            "fallthrough.split.on",
            "must be a number",
        ),
        (
            flag(fallthrough={"split": {"on": "50", "off": 50}}),
            "fallthrough.split.on",
            "must be a number",
        ),
        (
            flag(fallthrough={"split": {"on": 33.3333, "off": 66.667}}),
            "fallthrough.split.on",
            "3 decimals",
        ),
        (
            flag(fallthrough={"split": {"on": 50, "off": 49.999}}),
            "fallthrough.split",
            "sum to exactly 100, got 99.999",
        ),
        (flag(fallthrough={"split": {}}), "fallthrough.split", "at least one"),
        (flag(fallthrough={"splat": {}}), "fallthrough", "expected a variant name"),
        (
            {"flags": {"f": {"variants": {"a": "x", "b": 1}, "default_variant": "a"}}},
            "variants",
            "mixed value types",
        ),
        (
            {"flags": {"f": {"variants": {"a": None}, "default_variant": "a"}}},
            "variants.a",
            "no value type",
        ),
        (
            {"flags": {"f": {"variants": {}, "default_variant": "a"}}},
            "variants",
            "non-empty mapping",
        ),
        (
            {"flags": {"f": {"variants": {True: 1}, "default_variant": "a"}}},
            "variants",
            "variant name must be a non-empty string",
        ),
        (
            flag(
                rules=[{"if": {"attr": "a", "op": "nope", "value": 1}, "serve": "on"}]
            ),
            "rules[0].if.op",
            "unknown operator 'nope'",
        ),
        (
            flag(
                rules=[
                    {
                        "if": {"attr": "a", "op": "matches", "value": "(a+)+$"},
                        "serve": "on",
                    }
                ]
            ),
            "rules[0].if.value",
            "backtrack",
        ),
        (
            flag(
                rules=[
                    {"if": {"attr": "a", "op": "matches", "value": "(x"}, "serve": "on"}
                ]
            ),
            "rules[0].if.value",
            "invalid regular expression",
        ),
        (
            flag(rules=[{"if": {"segment": "ghost"}, "serve": "on"}]),
            "rules[0].if.segment",
            "unknown segment 'ghost'",
        ),
        (
            flag(
                rules=[
                    {"id": "a", "if": {"attr": "x", "op": "exists"}, "serve": "on"},
                    {"id": "a", "if": {"attr": "x", "op": "exists"}, "serve": "on"},
                ]
            ),
            "rules[1].id",
            "duplicate rule id 'a'",
        ),
        (flag(rules=[{"serve": "on"}]), "rules[0].if", "needs a condition"),
        (
            flag(rules=[{"if": {"attr": "a", "op": "exists"}}]),
            "rules[0].serve",
            "needs 'serve'",
        ),
        (
            flag(
                rules=[{"if": {"attr": "a", "op": "exists"}, "serve": "on", "extra": 1}]
            ),
            "rules[0].extra",
            "unknown key 'extra'",
        ),
        (flag(rules="nope"), "rules", "must be a list"),
        (flag(rules=["nope"]), "rules[0]", "a rule must be a mapping"),
        (flag(state="off"), "state", "'enabled' or 'disabled'"),
        (flag(salt=""), "salt", "non-empty string"),
        (flag(bucket_by=3), "bucket_by", "attribute name"),
        (flag(description=3), "description", "must be a string"),
        (flag(colour="red"), "colour", "unknown key 'colour'"),
        (
            {"flags": {"f": {"variants": {"on": True}}}},
            "default_variant",
            "needs 'default_variant' or 'fallthrough'",
        ),
        ({"flags": {"f": "on"}}, "", "a flag must be a mapping"),
    ],
)
def test_config_errors_name_flag_and_field(doc, field, needle):
    """Every kind of bad flag raises ConfigError naming the flag and the field."""
    flag_name, got_field, message = one(doc)
    assert ("f", field) == (flag_name, got_field)
    assert needle in message


@pytest.mark.parametrize(
    ("cond", "field", "needle"),
    [
        ({"attr": "a", "op": "in", "value": "x"}, ".value", "must be a list"),
        ({"attr": "a", "op": "in", "value": [{"x": 1}]}, ".value", "list items"),
        ({"attr": "a", "op": "lt", "value": "3"}, ".value", "must be a number"),
        ({"attr": "a", "op": "lt", "value": True}, ".value", "must be a number"),
        (
            {"attr": "a", "op": "semver_ge", "value": "2.x"},
            ".value",
            "semantic version",
        ),
        ({"attr": "a", "op": "before", "value": "yesterday"}, ".value", "ISO-8601"),
        (
            {"attr": "a", "op": "eq", "value": [1]},
            ".value",
            "string, number or boolean",
        ),
        ({"attr": "a", "op": "eq"}, ".value", "needs a value"),
        ({"attr": "a", "op": "exists", "value": 1}, ".value", "takes no value"),
        (
            {"attr": "a", "op": "starts_with", "value": 3},
            ".value",
            "string or a list of strings",
        ),
        (
            {"attr": "a", "op": "matches", "value": 3},
            ".value",
            "regular expression string",
        ),
        ({"attr": "a", "op": "matches", "value": r"(a)\1"}, ".value", "backreference"),
        ({"attr": "a", "op": "matches", "value": "(a|aa)*$"}, ".value", "backtrack"),
        ({"attr": "", "op": "eq", "value": 1}, ".attr", "attribute name"),
        ({"attr": "a", "value": 1}, ".op", "must name an operator"),
        ({"attr": "a", "op": "eq", "value": 1, "x": 2}, "", "one form"),
        ({"all": []}, ".all", "non-empty list"),
        ({"any": "x"}, ".any", "non-empty list"),
        ({"wat": 1}, "", "unknown condition form"),
        ({"segment": 3}, ".segment", "must name a segment"),
        ("country == NZ", "", "must be a mapping"),
    ],
)
def test_condition_errors(cond, field, needle):
    """Bad conditions are reported with the field path down to the operand."""
    flag_name, got_field, message = one(flag(rules=[{"if": cond, "serve": "on"}]))
    assert ("f", "rules[0].if" + field) == (flag_name, got_field)
    assert needle in message


def test_nested_condition_paths():
    """Problems inside combinators carry their full path."""
    cond = {
        "all": [
            {"attr": "a", "op": "exists"},
            {"not": {"any": [{"attr": "b", "op": "zz", "value": 1}]}},
        ]
    }
    assert (
        "rules[0].if.all[1].not.any[0].op"
        == one(flag(rules=[{"if": cond, "serve": "on"}]))[1]
    )


@pytest.mark.parametrize(
    ("doc", "field", "needle"),
    [
        ({"flags": {}, "flagz": {}}, "flagz", "unknown top-level key 'flagz'"),
        ({"version": 2, "flags": {}}, "version", "unsupported document version"),
        ({"flags": []}, "flags", "must be a mapping"),
        ({"flags": {}, "segments": []}, "segments", "must be a mapping"),
        (
            {"flags": {}, "segments": {"s": {"include": "u1"}}},
            "segments.s.include",
            "list of targeting keys",
        ),
        (
            {
                "flags": {},
                "segments": {"s": {"if": {"attr": "a", "op": "x", "value": 1}}},
            },
            "segments.s.if.op",
            "unknown operator",
        ),
        (
            {"flags": {}, "segments": {"s": {"colour": 1}}},
            "segments.s.colour",
            "unknown key",
        ),
        (
            {"flags": {}, "segments": {"s": 3}},
            "segments.s",
            "a segment must be a mapping",
        ),
    ],
)
def test_document_level_errors(doc, field, needle):
    """Top-level and segment problems name their field."""
    _, got_field, message = one(doc)
    assert field == got_field
    assert needle in message


def test_not_a_mapping():
    """A document that is not a mapping is refused."""
    assert "must be a mapping" in one(["flags"])[2]


def test_segment_cycles_reported():
    """Segment cycles (direct and through another segment) are ConfigErrors naming the cycle."""
    doc = {
        "flags": {},
        "segments": {
            "a": {"if": {"segment": "b"}},
            "b": {"if": {"any": [{"segment": "a"}]}},
            "self": {"if": {"segment": "self"}},
        },
    }
    messages = [m for _, _, m in problems_of(doc)]
    assert any("segment cycle: a -> b -> a" in m for m in messages)
    assert any("segment cycle: self -> self" in m for m in messages)


def test_all_problems_reported_at_once():
    """A document with many problems reports every one, not just the first."""
    doc = {
        "flags": {
            "a": {**BOOL, "default_variant": "x"},
            "b": {**BOOL, "fallthrough": {"split": {"on": 1, "off": 1}}},
            "c": {"variants": {"a": 1, "b": "s"}, "default_variant": "a"},
        },
        "junk": 1,
    }
    found = problems_of(doc)
    assert {"a", "b", "c", None} == {f for f, _, _ in found}
    with pytest.raises(ConfigError, match="4 problems"):
        compile_document(doc)


def test_int_and_float_variants_make_a_float_flag():
    """Ints among floats are a float flag, served as floats."""
    flags = Flags.from_dict(
        {"flags": {"f": {"variants": {"a": 1, "b": 2.5}, "default_variant": "a"}}}
    )
    assert flags.get("f", default=0.0) == 1.0
    assert isinstance(flags.get("f"), float)


def test_documents_are_never_mutated():
    """Compiling leaves the caller's document as it was."""
    doc = flag(rules=[{"if": {"attr": "a", "op": "in", "value": ["x"]}, "serve": "on"}])
    before = copy.deepcopy(doc)
    compile_document(doc)
    assert before == doc


# -- YAML ------------------------------------------------------------------------------
YAML = textwrap.dedent(
    """\
    version: 1
    flags:
      new-checkout:
        variants: {on: true, off: false}
        default_variant: off
        rules:
          - id: staff
            if: {attr: email, op: ends_with, value: "@example.com"}
            serve: on
          - id: nz
            if: {attr: country, op: in, value: [NZ, AU]}
            serve: {split: {on: 10, off: 90}}
        fallthrough: {split: {on: 1.5, off: 98.5}}
    """
)


def test_yaml_on_off_are_strings():
    """In flag YAML, on/off/yes/no are strings; only true/false are booleans."""
    data, dupes = parse_yaml("a: [on, off, yes, no, y, n, true, false, True, FALSE]")
    assert [] == dupes
    assert {"a": ["on", "off", "yes", "no", "y", "n", True, False, True, False]} == data


def test_yaml_issue_example_loads(tmp_path: Path):
    """The issue's example (variants named on/off) loads and evaluates."""
    path = tmp_path / "flags.yaml"
    path.write_text(YAML)
    flags = Flags.from_file(path)
    assert flags.is_enabled("new-checkout", {"email": "a@example.com"}) is True
    assert {"on", "off"} == set(load_file(path).flags["new-checkout"].variants)


def test_yaml_non_string_variant_name_is_error(tmp_path: Path):
    """A variant name that YAML reads as a non-string (1, true) is a ConfigError with its line."""
    path = tmp_path / "f.yaml"
    path.write_text(
        "flags:\n  f:\n    variants: {true: 1, 2: 3}\n    default_variant: x\n"
    )
    with pytest.raises(ConfigError) as info:
        load_file(path)
    names = [p for p in info.value.problems if "variant name" in p.message]
    assert 2 == len(names)
    assert {3} == {p.line for p in names}
    assert str(path) == info.value.source


def test_yaml_problems_carry_lines(tmp_path: Path):
    """Problems in a YAML file carry the line of the offending field."""
    path = tmp_path / "f.yaml"
    path.write_text(
        YAML.replace("op: in", "op: inside").replace("off: 98.5", "off: 98.4")
    )
    with pytest.raises(ConfigError) as info:
        load_file(path)
    got = {(p.flag, p.field, p.line) for p in info.value.problems}
    assert ("new-checkout", "rules[1].if.op", 11) in got
    assert ("new-checkout", "fallthrough.split", 13) in got
    assert f"{path}:11" in str(info.value)


def test_yaml_duplicate_keys(tmp_path: Path):
    """Duplicate keys are reported with both lines."""
    path = tmp_path / "f.yaml"
    path.write_text("flags: {}\nflags: {}\n")
    with pytest.raises(
        ConfigError, match=r"duplicate key 'flags' \(first at line 1\)"
    ) as info:
        load_file(path)
    assert 2 == info.value.line


def test_yaml_syntax_error_has_line(tmp_path: Path):
    """Invalid YAML is a ConfigError with the line."""
    path = tmp_path / "f.yml"
    path.write_text("flags:\n  a: [1, 2\n  b: 3\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_file(path)
    assert info.value.line is not None


def test_yaml_is_never_code(tmp_path: Path):
    """Python tags are refused: documents are data."""
    path = tmp_path / "f.yaml"
    path.write_text("flags: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_file(path)


def test_yaml_empty_document(tmp_path: Path):
    """An empty YAML file is an empty document... which has no flags (valid)."""
    path = tmp_path / "f.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_file(path)


def test_yaml_non_scalar_key():
    """A mapping key that is a list is reported, not a crash."""
    _, dupes = parse_yaml("? [a, b]\n: 1\n")
    assert "must be a scalar" in dupes[0].message


# -- JSON ------------------------------------------------------------------------------
def test_json_file(tmp_path: Path):
    """JSON files load with the same schema; big ints stay exact."""
    path = tmp_path / "f.json"
    path.write_text(
        '{"flags": {"n": {"variants": {"a": 9007199254740993}, "default_variant": "a"}}}'
    )
    assert 9007199254740993 == Flags.from_file(path).get("n", default=0)


def test_json_errors(tmp_path: Path):
    """Bad JSON, NaN, and duplicate keys are ConfigErrors."""
    path = tmp_path / "f.json"
    path.write_text('{"flags": {,}}')
    with pytest.raises(ConfigError, match="invalid JSON") as info:
        load_file(path)
    assert info.value.line == 1
    _, dupes = parse_json('{"a": 1, "a": 2}')
    assert "duplicate key 'a'" in dupes[0].message
    with pytest.raises(ValueError, match="NaN"):
        parse_json('{"a": NaN}')


def test_unknown_extension_and_missing_file(tmp_path: Path):
    """A file that is not .json/.yaml/.yml, or that is missing, is a ConfigError."""
    with pytest.raises(ConfigError, match="unknown flag file type"):
        load_file(tmp_path / "f.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(bad)
