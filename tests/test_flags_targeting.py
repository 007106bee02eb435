# CONVENTIONS.md asks for `expected == actual` asserts
from datetime import UTC, datetime
from typing import Any

import pytest

from tipkit.flags import EvaluationContext, Flags, Reason
from tipkit.flags._targeting import MAX_MATCH_INPUT, parse_semver


def matches(cond: dict[str, Any], attrs: dict[str, Any], key: str | None = "u") -> bool:
    doc = {
        "flags": {
            "f": {
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "rules": [{"id": "r", "if": cond, "serve": "on"}],
            }
        }
    }
    detail = Flags.from_dict(doc).evaluate(
        "f", EvaluationContext(key, attrs), default=False
    )
    assert detail.error_code is None
    return detail.reason is Reason.TARGETING_MATCH


CASES: list[tuple[str, Any, Any, bool]] = [
    ("eq", "NZ", "NZ", True),
    ("eq", "NZ", "AU", False),
    ("eq", 1, 1.0, True),
    ("eq", 1, True, False),  # bool is not a number
    ("eq", True, 1, False),
    ("eq", True, True, True),
    ("eq", "1", 1, False),
    ("ne", "NZ", "AU", True),
    ("ne", "NZ", "NZ", False),
    ("in", ["NZ", "AU"], "AU", True),
    ("in", ["NZ", "AU"], "FR", False),
    ("in", ["NZ"], ["NZ"], False),
    ("in", [1, 2, True], 2, True),
    ("in", [1, 2], True, False),
    ("in", [True], True, True),
    ("in", [1, "a"], "a", True),
    ("in", [1, "a"], {"a": 1}, False),
    ("not_in", ["NZ"], "AU", True),
    ("not_in", ["NZ"], "NZ", False),
    ("contains", "@ex", "a@ex.com", True),
    ("contains", "@ex", "a@other", False),
    ("contains", "beta", ["alpha", "beta"], True),
    ("contains", 3, [1, 2, 3], True),
    ("contains", 3, "123", False),
    ("contains", "x", 5, False),
    ("starts_with", "user-", "user-1", True),
    ("starts_with", ["a", "b"], "bob", True),
    ("starts_with", "user-", 1, False),
    ("ends_with", "@example.com", "a@example.com", True),
    ("ends_with", ["@a.com", "@b.com"], "x@c.com", False),
    ("ends_with", "@x", None, False),
    ("matches", r"^v\d+$", "v12", True),
    ("matches", r"^v\d+$", "w12", False),
    ("matches", "a", 5, False),
    ("lt", 10, 9, True),
    ("lt", 10, 10, False),
    ("le", 10, 10, True),
    ("gt", 10, 10.5, True),
    ("gt", 10, "11", False),
    ("gt", 0, True, False),
    ("ge", 2**60, 2**60, True),
    ("semver_eq", "2.3.0", "2.3.0+build", True),
    ("semver_eq", "2.3.0", "v2.3.0", True),
    ("semver_lt", "2.3.0", "2.3.0-rc.1", True),
    ("semver_lt", "1.0.0-alpha.1", "1.0.0-alpha", True),
    ("semver_lt", "1.0.0-alpha.beta", "1.0.0-alpha.1", True),
    ("semver_le", "2.3.0", "2.3.0", True),
    ("semver_gt", "2.3.0", "2.10.0", True),
    ("semver_gt", "2.3.0", "2.3", False),
    ("semver_ge", "2.3.0", "2.2.9", False),
    ("semver_ge", "2.3.0", 3, False),
    ("before", "2026-03-01T00:00:00Z", "2026-02-28T23:59:59Z", True),
    ("before", "2026-03-01T00:00:00Z", "2026-03-01T00:00:00+00:00", False),
    ("before", "2026-03-01T00:00:00Z", "2026-03-01T00:59:00+01:00", True),
    ("before", "2026-03-01", datetime(2025, 1, 1), True),  # noqa: DTZ001  # naive means UTC
    ("after", "2026-03-01T00:00:00Z", datetime(2026, 3, 2, tzinfo=UTC), True),
    ("after", "2026-03-01T00:00:00Z", 1_900_000_000, True),
    ("after", "2026-03-01T00:00:00Z", "not a date", False),
    ("after", "2026-03-01T00:00:00Z", 10**30, False),
    ("after", "2026-03-01T00:00:00Z", ["x"], False),
]


@pytest.mark.parametrize(("op", "value", "attr", "expected"), CASES)
def test_operator(op, value, attr, expected):
    """Each operator compares with its documented, type-strict semantics."""
    assert expected == matches({"attr": "a", "op": op, "value": value}, {"a": attr})


@pytest.mark.parametrize("op", sorted({c[0] for c in CASES}))
def test_missing_attribute_is_false(op):
    """An attribute missing from the context makes any condition false, never an error."""
    value = next(c[1] for c in CASES if c[0] == op)
    assert False is matches({"attr": "a", "op": op, "value": value}, {})
    assert False is matches({"attr": "a", "op": op, "value": value}, {"a": None})


def test_exists():
    """Exists is true for a present, non-null attribute."""
    assert matches({"attr": "a", "op": "exists"}, {"a": 0}) is True
    assert False is matches({"attr": "a", "op": "exists"}, {"a": None})
    assert False is matches({"attr": "a", "op": "exists"}, {})


def test_targeting_key_attribute():
    """attr: targeting_key reads the context's targeting key."""
    assert (
        matches(
            {"attr": "targeting_key", "op": "starts_with", "value": "admin-"},
            {},
            key="admin-1",
        )
        is True
    )
    assert False is matches(
        {"attr": "targeting_key", "op": "eq", "value": "x"}, {}, key=None
    )
    assert matches({"attr": "targeting_key", "op": "exists"}, {}, key="k") is True
    assert False is matches({"attr": "targeting_key", "op": "exists"}, {}, key=None)


def test_combinators():
    """all, any and not combine conditions."""
    nz = {"attr": "country", "op": "eq", "value": "NZ"}
    pro = {"attr": "plan", "op": "eq", "value": "pro"}
    assert matches({"all": [nz, pro]}, {"country": "NZ", "plan": "pro"}) is True
    assert False is matches({"all": [nz, pro]}, {"country": "NZ"})
    assert matches({"any": [nz, pro]}, {"plan": "pro"}) is True
    assert False is matches({"any": [nz, pro]}, {})
    assert matches({"not": nz}, {"country": "AU"}) is True
    assert matches({"not": nz}, {}) is True
    assert matches({"all": [nz]}, {"country": "NZ"}) is True


def test_matches_caps_input_length():
    """Matches never matches input longer than the cap."""
    assert (
        matches(
            {"attr": "a", "op": "matches", "value": "x"}, {"a": "x" * MAX_MATCH_INPUT}
        )
        is True
    )
    assert False is matches(
        {"attr": "a", "op": "matches", "value": "x"}, {"a": "x" * (MAX_MATCH_INPUT + 1)}
    )


EMAIL = r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ada@example.com", True),
        ("a.b+tag@mail.example.co", True),
        ("x_1%y@sub-domain.io", True),
        ("ada@example", False),
        ("ada@example.c", False),
        ("@example.com", False),
        ("ada@@example.com", False),
        ("Ada@example.com", False),
        ("ada@example.com ", False),
        ("a" * 500 + "@" + "b" * 500 + ".com", True),
        ("a" * 600 + "@" + "b" * 600 + ".com", False),  # over the 1024-character cap
    ],
)
def test_email_pattern_loads_and_matches(address, expected):
    """The usual email pattern is accepted: each quantifier's end is pinned by a separator."""
    assert (
        matches({"attr": "a", "op": "matches", "value": EMAIL}, {"a": address})
        is expected
    )


def test_semver_parse():
    """Semver precedence follows SemVer 2.0.0; junk is None."""
    assert parse_semver("1.0.0") > parse_semver("1.0.0-rc.1")  # type: ignore[operator]
    assert parse_semver("1.2") is None
    assert parse_semver("01.2.3") is None
    assert parse_semver("1." * 200) is None


SEGMENTS = {
    "beta": {
        "include": ["user-1", 7],
        "exclude": ["user-9"],
        "if": {"attr": "plan", "op": "eq", "value": "beta"},
    },
    "listed": {"include": ["user-2"]},
    "nested": {
        "if": {
            "any": [{"segment": "beta"}, {"attr": "staff", "op": "eq", "value": True}]
        }
    },
}


def seg(name: str, key: Any, attrs: dict[str, Any]) -> bool:
    doc = {
        "flags": {
            "f": {
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "rules": [{"if": {"segment": name}, "serve": "on"}],
            }
        },
        "segments": SEGMENTS,
    }
    return Flags.from_dict(doc).get("f", EvaluationContext(key, attrs), default=False)


def test_segment_include_exclude_condition():
    """Include wins over the condition, exclude wins over include and the condition."""
    assert seg("beta", "user-1", {}) is True
    assert seg("beta", 7, {}) is True
    assert False is seg("beta", "user-9", {"plan": "beta"})
    assert seg("beta", "user-5", {"plan": "beta"}) is True
    assert False is seg("beta", "user-5", {"plan": "pro"})
    assert False is seg("beta", None, {})
    assert False is seg("beta", 1.5, {})
    assert seg("listed", "user-2", {}) is True
    assert False is seg("listed", "user-3", {"plan": "beta"})


def test_nested_segments():
    """Segments may reference segments (without cycles)."""
    assert seg("nested", "user-1", {}) is True
    assert seg("nested", "x", {"staff": True}) is True
    assert False is seg("nested", "user-9", {"plan": "beta"})
