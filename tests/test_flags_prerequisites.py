"""Prerequisites: a flag's rules serve only while its parents serve listed variants."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.errors import ConfigError
from tipkit.flags import EvaluationContext, Flags, Limits, Reason

BOOL = {"on": True, "off": False}


def doc(**flags: Any) -> dict[str, Any]:
    return {"flags": flags}


def parent(**extra: Any) -> dict[str, Any]:
    """A parent on for plan 'pro', off otherwise."""
    return {
        "variants": BOOL,
        "default_variant": "off",
        "rules": [{"if": {"attr": "plan", "op": "eq", "value": "pro"}, "serve": "on"}],
        **extra,
    }


def child(*parents: str, off: str | None = "off", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "variants": BOOL,
        "default_variant": "on",
        "prerequisites": [{"flag": p, "variants": ["on"]} for p in parents],
        **extra,
    }
    if off is not None:
        out["off_variant"] = off
    return out


PRO = {"targeting_key": "u1", "plan": "pro"}
FREE = {"targeting_key": "u1", "plan": "free"}


def served(flags: Flags, key: str, ctx: Any) -> tuple[Any, str | None, Reason]:
    d = flags.evaluate(key, ctx)
    return d.value, d.variant, d.reason


def test_child_serves_its_rules_while_the_parent_serves_a_listed_variant():
    """Parent on: the child's own rules decide; parent off: the child's off variant."""
    flags = Flags.from_dict(doc(parent=parent(), child=child("parent")))
    assert (True, "on", Reason.STATIC) == served(flags, "child", PRO)
    assert (False, "off", Reason.PREREQUISITE_FAILED) == served(flags, "child", FREE)


def test_killed_parent_fails_its_children_even_if_its_off_variant_is_listed():
    """A killed (or disabled) parent fails the prerequisite whatever it serves."""
    d = doc(
        parent=parent(off_variant="on"),
        child={
            **child("parent"),
            "prerequisites": [{"flag": "parent", "variants": ["on", "off"]}],
        },
    )
    flags = Flags.from_dict(d)
    assert (True, "on", Reason.STATIC) == served(flags, "child", FREE)
    flags.kill("parent")
    assert (False, "off", Reason.PREREQUISITE_FAILED) == served(flags, "child", PRO)
    flags.revive("parent")
    assert (True, "on", Reason.STATIC) == served(flags, "child", PRO)
    d["flags"]["parent"]["state"] = "disabled"
    disabled = Flags.from_dict(d)
    assert (False, "off", Reason.PREREQUISITE_FAILED) == served(disabled, "child", PRO)


def test_child_without_off_variant_serves_the_callers_default():
    """No off_variant: a failed prerequisite gives the caller's default."""
    flags = Flags.from_dict(doc(parent=parent(), child=child("parent", off=None)))
    assert flags.get("child", FREE, default=True) is True
    assert Reason.PREREQUISITE_FAILED == flags.evaluate("child", FREE, False).reason
    assert flags.is_enabled("child", FREE) is False


def test_overrides_of_parent_and_child_follow_the_precedence():
    """An override of the child wins over its prerequisites; a parent override counts."""
    flags = Flags.from_dict(doc(parent=parent(), child=child("parent")))
    flags.set_override("parent", "on")
    assert (True, "on", Reason.STATIC) == served(flags, "child", FREE)
    flags.clear_override("parent")
    flags.set_override("child", "on")
    assert (True, "on", Reason.STATIC) == served(flags, "child", FREE)


def test_chain_fails_when_the_grandparent_fails():
    """A parent failing its own prerequisite fails its children, all the way down."""
    d = doc(
        parent=parent(),
        middle=child("parent"),
        leaf={
            **child("middle"),
            "prerequisites": [{"flag": "middle", "variants": ["on", "off"]}],
        },
    )
    flags = Flags.from_dict(d)
    assert (True, "on", Reason.STATIC) == served(flags, "leaf", PRO)
    assert (False, "off", Reason.PREREQUISITE_FAILED) == served(flags, "middle", FREE)
    assert (False, "off", Reason.PREREQUISITE_FAILED) == served(flags, "leaf", FREE)


def test_every_prerequisite_must_hold():
    """Two parents: both must serve a listed variant."""
    d = doc(a=parent(), b={**parent(), "default_variant": "on"}, c=child("a", "b"))
    flags = Flags.from_dict(d)
    assert (True, "on", Reason.STATIC) == served(flags, "c", PRO)
    assert Reason.PREREQUISITE_FAILED == served(flags, "c", FREE)[2]
    flags.kill("b")
    assert Reason.PREREQUISITE_FAILED == served(flags, "c", PRO)[2]


def test_parent_that_cannot_be_bucketed_fails_the_prerequisite():
    """A split parent given no targeting key fails the prerequisite, not the child."""
    d = doc(
        parent={"variants": BOOL, "fallthrough": {"split": {"on": 50, "off": 50}}},
        child=child("parent"),
    )
    flags = Flags.from_dict(d)
    assert (False, "off", Reason.PREREQUISITE_FAILED) == served(flags, "child", {})


def test_flags_without_prerequisites_keep_their_plain_evaluator():
    """Zero cost unless used: a flag without prerequisites runs its compiled evaluator."""
    flags = Flags.from_dict(doc(parent=parent(), child=child("parent")))
    fs = flags.flag_set
    assert fs is not None
    assert fs.flags["parent"].run is flags._table["parent"]
    assert fs.flags["child"].run is not flags._table["child"]


def test_async_evaluation_checks_prerequisites_too():
    """Async evaluation applies the same prerequisites."""
    flags = Flags.from_dict(doc(parent=parent(), child=child("parent")))
    detail = asyncio.run(flags.aevaluate("child", FREE))
    assert (False, Reason.PREREQUISITE_FAILED) == (detail.value, detail.reason)


def test_explain_shows_the_chain():
    """Flags.explain narrates each prerequisite, its parent's chain indented, and the result."""
    d = doc(parent=parent(), middle=child("parent"), leaf=child("middle"))
    flags = Flags.from_dict(d)
    steps = flags.explain("leaf", FREE).steps
    assert [
        "prerequisite 'middle' (needs 'on'): serves 'off' (PREREQUISITE_FAILED): not met",
        "  prerequisite 'parent' (needs 'on'): serves 'off' (DEFAULT): not met",
        "a prerequisite failed: serves the off variant ('off')",
        "result: variant 'off', value False, reason PREREQUISITE_FAILED",
    ] == list(steps)
    flags.kill("parent")
    steps = flags.explain("middle", PRO).steps
    assert "prerequisite 'parent' (needs 'on'): is killed: not met" == steps[0]
    ok = flags.explain("parent", PRO)
    assert not any("prerequisite" in s for s in ok.steps)


def yaml_error(tmp_path: Path, text: str, **kw: Any) -> ConfigError:
    p = tmp_path / "flags.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        Flags.from_file(p, **kw)
    return info.value


CYCLE = """\
flags:
  a:
    variants: {on: true, off: false}
    default_variant: on
    prerequisites:
      - {flag: b, variants: [on]}
  b:
    variants: {on: true, off: false}
    default_variant: on
    prerequisites:
      - {flag: a, variants: [on]}
"""


def test_cycle_is_refused_naming_file_line_flag_and_field(tmp_path: Path):
    """A cycle is a ConfigError at load, naming where it is."""
    err = yaml_error(tmp_path, CYCLE)
    (p,) = err.problems
    assert ("b", "prerequisites[0].flag", 11) == (p.flag, p.field, p.line)
    assert "a -> b -> a" in p.message
    assert str(tmp_path / "flags.yaml") == p.source


@pytest.mark.parametrize(
    ("prereqs", "field", "needle"),
    [
        (
            [{"flag": "nope", "variants": ["on"]}],
            "prerequisites[0].flag",
            "not defined",
        ),
        (
            [{"flag": "p", "variants": ["maybe"]}],
            "prerequisites[0].variants",
            "no variant 'maybe'",
        ),
        (
            [{"flag": "c", "variants": ["on"]}],
            "prerequisites[0].flag",
            "own prerequisite",
        ),
        ([{"flag": "p"}], "prerequisites[0].variants", "non-empty list"),
        (
            [{"flag": "p", "variants": []}],
            "prerequisites[0].variants",
            "non-empty list",
        ),
        (
            [{"flag": "p", "variants": ["on"], "gate": 1}],
            "prerequisites[0].gate",
            "unknown key",
        ),
        (
            [{"flag": "p", "variants": ["on"]}] * 2,
            "prerequisites[1].flag",
            "listed twice",
        ),
        ("p", "prerequisites", "must be a list"),
        ([1], "prerequisites[0]", "must be a mapping"),
    ],
)
def test_bad_prerequisites_are_refused(prereqs: Any, field: str, needle: str):
    """Missing parents, unknown variants, self-reference and bad shapes are ConfigErrors."""
    d = doc(p=parent(), c={**child(), "prerequisites": prereqs})
    with pytest.raises(ConfigError) as info:
        Flags.from_dict(d)
    (p,) = info.value.problems
    assert ("c", field) == (p.flag, p.field)
    assert needle in p.message


def chain(n: int) -> dict[str, Any]:
    flags = {"f0": parent()}
    for i in range(1, n + 1):
        flags[f"f{i}"] = child(f"f{i - 1}")
    return doc(**flags)


def test_depth_is_bounded_by_limits():
    """A chain deeper than Limits.max_prerequisite_depth is refused; raising it allows it."""
    Flags.from_dict(chain(10))
    with pytest.raises(ConfigError) as info:
        Flags.from_dict(chain(11))
    assert {"f11"} == {p.flag for p in info.value.problems}
    assert "max_prerequisite_depth" in info.value.problems[0].message
    flags = Flags.from_dict(chain(30), limits=Limits(max_prerequisite_depth=30))
    assert (True, "on", Reason.STATIC) == served(flags, "f30", PRO)
    assert Reason.PREREQUISITE_FAILED == served(flags, "f30", FREE)[2]


def test_a_long_cycle_is_found_without_recursion():
    """A 5,000-flag cycle is refused as a ConfigError, not a RecursionError."""
    n = 5000
    flags = {f"f{i}": child(f"f{(i + 1) % n}") for i in range(n)}
    with pytest.raises(ConfigError) as info:
        Flags.from_dict(doc(**flags), limits=Limits(max_prerequisite_depth=10**6))
    assert any("cycle" in p.message for p in info.value.problems)


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=10),
    plans=st.lists(st.sampled_from(["pro", "free"]), min_size=6, max_size=6),
    killed=st.sets(st.integers(0, 5)),
)
def test_evaluation_matches_a_reference_model(
    edges: list[tuple[int, int]], plans: list[str], killed: set[int]
):
    """Acyclic graphs load and evaluate as the written semantics say; cyclic ones are refused."""
    parents: dict[int, list[int]] = {i: [] for i in range(6)}
    for a, b in edges:
        if a != b and b not in parents[a]:
            parents[a].append(b)
    flags_doc = {}
    for i in range(6):
        flags_doc[f"f{i}"] = {
            "variants": BOOL,
            "default_variant": "off",
            "off_variant": "off",
            "rules": [
                {"if": {"attr": f"p{i}", "op": "eq", "value": "pro"}, "serve": "on"}
            ],
        }
        if parents[i]:
            flags_doc[f"f{i}"]["prerequisites"] = [
                {"flag": f"f{p}", "variants": ["on"]} for p in parents[i]
            ]

    def cyclic() -> bool:
        state: dict[int, int] = {}

        def visit(n: int) -> bool:
            state[n] = 1
            for p in parents[n]:
                if state.get(p) == 1 or (p not in state and visit(p)):
                    return True
            state[n] = 2
            return False

        return any(n not in state and visit(n) for n in range(6))

    if cyclic():
        with pytest.raises(ConfigError):
            Flags.from_dict(doc(**flags_doc))
        return
    flags = Flags.from_dict(doc(**flags_doc))
    for k in killed:
        flags.kill(f"f{k}")
    ctx = EvaluationContext("u", {f"p{i}": plans[i] for i in range(6)})

    def expected(i: int) -> bool:
        if i in killed:
            return False
        return all(expected(p) for p in parents[i]) and plans[i] == "pro"

    assert [expected(i) for i in range(6)] == [
        flags.is_enabled(f"f{i}", ctx) for i in range(6)
    ]
