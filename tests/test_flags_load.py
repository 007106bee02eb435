"""Safe loading: limits, the YAML 1.2 core schema, aliases, and every refusal a ConfigError."""

import json
from pathlib import Path

import pytest

from tipkit.errors import ConfigError
from tipkit.flags import Flags
from tipkit.flags._document import compile_document, load_file, load_text
from tipkit.flags._limits import DEFAULT_LIMITS, Limits
from tipkit.flags._yaml import parse_yaml

LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "flags: {}\n"
)


def refusal(
    text: str, fmt: str = "yaml", limits: Limits = DEFAULT_LIMITS
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(text, f"f.{fmt}", fmt=fmt, limits=limits)
    return info.value


def test_yaml_12_core_schema_numbers():
    """017 is 17, 0o17 is 15, 0x1f is 31; 1:20 and 12:30:00 are strings."""
    data, _ = parse_yaml("a: [017, 0o17, 0x1f, 1:20, 12:30:00, 1e3, -5, ~, null]")
    assert {"a": [17, 15, 31, "1:20", "12:30:00", 1000.0, -5, None, None]} == data


def test_billion_laughs_refused_at_once_with_line_and_column():
    """Nested aliases past the expansion budget are a ConfigError naming the line, in no time."""
    err = refusal(LAUGHS)
    assert "Limits.alias_expansion" in str(err)
    assert (err.line, err.column) == (6, 8)


def test_aliases_are_shared_not_copied():
    """A modest alias is resolved by reference: both places hold the same object."""
    data, _ = parse_yaml("a: &x [1, 2]\nb: *x\n")
    assert data["a"] is data["b"]


def test_merge_keys_resolve():
    """<< merges a mapping; explicit keys win."""
    data, _ = parse_yaml("base: &b {x: 1, y: 2}\nc: {<<: *b, y: 3}\n")
    assert {"x": 1, "y": 3} == dict(data["c"])


@pytest.mark.parametrize(
    ("text", "words", "where"),
    [
        ("a: &a [1, *a]\n", "refers to itself", (1, 11)),
        ("a: *nope\n", "undefined alias", (1, 4)),
        ("a: b\x00\n", "control characters", (1, 5)),
        ("a: " + "[" * 100 + "]" * 100, "Limits.max_depth", (1, 67)),
        ("- " * 200 + "x\n", "Limits.max_depth", (1, 129)),
        ("a: " + "9" * 5000, "too long", (1, 4)),
        ("a: " + "9" * 400, "beyond the range of a float", (1, 4)),
        (
            "flags: !!python/object/apply:os.system ['echo hi']\n",
            "unsupported tag",
            (1, 8),
        ),
        ("a: !!binary aGk=\n", "unsupported tag", (1, 4)),
        ("a: .inf\n", "finite", (1, 4)),
        ("a: 1\n---\nb: 2\n", "single document", (2, 1)),
        ("a:\n\t- b\n", "invalid YAML", (2, 1)),
    ],
)
def test_hostile_yaml_is_a_config_error_with_line_and_column(text, words, where):
    """Each hostile YAML input is refused with a ConfigError naming line and column."""
    err = refusal(text)
    assert words in str(err)
    assert where == (err.line, err.column)
    assert "f.yaml" == err.source


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[" * 5000 + "]" * 5000, "Limits.max_depth"),
        ('{"a": ' + "9" * 5000 + "}", "beyond the range of a float"),
        ('{"a": 1e999}', "finite"),
        ('{"a": NaN}', "NaN"),
        ('{"flags": {,}}', "invalid JSON"),
    ],
)
def test_hostile_json_is_a_config_error(text, words):
    """Deep nesting, huge numbers and bad JSON are ConfigErrors."""
    assert words in str(refusal(text, "json"))


@pytest.mark.parametrize("doc", [None, [], "flags", 3, b"x"])
def test_from_dict_refuses_non_mappings(doc):
    """from_dict(None) and other non-mappings are ConfigErrors."""
    with pytest.raises(ConfigError, match="must be a mapping"):
        Flags.from_dict(doc)


def test_from_dict_deep_and_cyclic_documents_are_config_errors():
    """A dict nested 10,000 deep, or containing itself, is refused, never a RecursionError."""
    deep: dict = {}
    node = deep
    for _ in range(10_000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(ConfigError, match="max_depth"):
        Flags.from_dict(
            {"flags": {"f": {"variants": {"a": deep}, "default_variant": "a"}}}
        )
    cyclic: dict = {"flags": {}}
    cyclic["flags"]["f"] = {"variants": {"a": cyclic}, "default_variant": "a"}
    with pytest.raises(ConfigError, match="max_depth") as info:
        Flags.from_dict(cyclic)
    assert ("f", "variants.a.flags.f.variants.a.flags") == (
        info.value.flag,
        info.value.field[:35],
    )


def test_limits_on_flags_rules_strings_and_bytes():
    """Each limit refuses past its bound and can be raised."""
    rule = {"if": {"attr": "a", "op": "eq", "value": "x"}, "serve": "on"}
    flag = {
        "variants": {"on": True, "off": False},
        "default_variant": "off",
        "rules": [rule] * 3,
    }
    doc = {"flags": {f"f{i}": flag for i in range(3)}}
    small = Limits(max_flags=2, max_rules=2)
    with pytest.raises(ConfigError) as info:
        compile_document(doc, limits=small)
    messages = [p.message for p in info.value.problems]
    assert any("Limits.max_flags" in m for m in messages)
    assert 3 == sum("Limits.max_rules" in m for m in messages)
    assert 3 == len(compile_document(doc, limits=Limits(max_rules=3)).flags)
    with pytest.raises(ConfigError, match="max_string"):
        compile_document({"flags": {}, "x": "y" * 20}, limits=Limits(max_string=10))
    with pytest.raises(ConfigError, match="max_bytes"):
        load_text(json.dumps(doc), "f.json", fmt="json", limits=Limits(max_bytes=10))


def test_file_larger_than_max_bytes_is_not_read(tmp_path: Path):
    """A file over max_bytes is refused before it is parsed."""
    path = tmp_path / "f.yaml"
    path.write_text("flags: {}\n" + "#" * 100)
    with pytest.raises(ConfigError, match="max_bytes") as info:
        load_file(path, limits=Limits(max_bytes=50))
    assert str(path) == info.value.source
    flags = Flags.from_file(path, limits=Limits(max_bytes=500))
    assert [] == list(flags.keys())
    flags.provider.close()


def test_limits_are_validated():
    """A limit must be a positive int."""
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)


def test_huge_int_with_a_float_default_never_raises():
    """An int variant beyond a float's range is refused at load; in range, get() coerces."""
    with pytest.raises(ConfigError, match="float"):
        Flags.from_dict(
            {"flags": {"n": {"variants": {"a": 10**400}, "default_variant": "a"}}}
        )
    flags = Flags.from_dict(
        {"flags": {"n": {"variants": {"a": 10**300}, "default_variant": "a"}}}
    )
    assert 1e300 == flags.get("n", default=0.5)


def test_unknown_key_suggests_the_nearest():
    """A misspelt key names the key it probably meant."""
    with pytest.raises(ConfigError, match="did you mean 'fallthrough'"):
        Flags.from_dict({"flags": {"f": {"variants": {"a": 1}, "fallthorugh": "a"}}})


def test_errors_sorted_by_line_and_column():
    """Problems come sorted by position, whatever order the compiler found them in."""
    text = (
        "flags:\n  b:\n    variants: {on: true}\n    default_variant: x\n"
        "  a:\n    variants: {on: true}\n    default_variant: y\nsegments: {s: 3}\n"
    )
    err = refusal(text)
    lines = [(p.line, p.column) for p in err.problems]
    assert sorted(lines) == lines
    assert 3 == len(lines)
