"""One precedence: kill > disabled > override (store, local) > rules; explain follows it."""

# CONVENTIONS.md asks for `expected == actual` asserts
from typing import Any

import pytest

from tipkit.flags import Flags, InMemoryProvider, Reason, compile_document
from tipkit.flags._precedence import Layer, plan
from tipkit.flags._store_sync import StoreState

DOC: dict[str, Any] = {
    "flags": {
        "f": {
            "variants": {"on": True, "off": False},
            "off_variant": "off",
            "rules": [
                {
                    "id": "nz",
                    "if": {"attr": "country", "op": "eq", "value": "NZ"},
                    "serve": "on",
                }
            ],
            "fallthrough": {"split": {"on": 50, "off": 50}},
        },
        "g": {
            "variants": {"on": True, "off": False},
            "state": "disabled",
            "default_variant": "on",
            "off_variant": "off",
        },
    }
}
FLAGS = compile_document(DOC).flags


def layers(
    kills: set[str] = frozenset(),  # type: ignore[assignment]  # read-only default
    overrides: dict[str, Any] | None = None,
    local: dict[str, Any] | None = None,
) -> dict[str, Layer]:
    state = StoreState(1, frozenset(kills), overrides or {})
    plans = plan(FLAGS, state, local or {}, lambda *_a: None)
    return {key: p.layer for key, p in plans.items()}


@pytest.mark.parametrize(
    ("kills", "overrides", "local", "expected"),
    [
        (set(), None, None, Layer.RULES),
        (set(), None, {"f": "off"}, Layer.LOCAL_OVERRIDE),
        (set(), {"f": "off"}, {"f": "on"}, Layer.OVERRIDE),
        ({"f"}, {"f": "on"}, {"f": "on"}, Layer.KILLED),
    ],
)
def test_the_highest_layer_present_serves(kills, overrides, local, expected):
    """Each layer wins over every layer below it."""
    assert expected == layers(kills, overrides, local)["f"]


def test_disabled_wins_over_overrides_and_loses_to_a_kill():
    """A disabled flag ignores overrides; a kill still names itself."""
    assert Layer.DISABLED == layers(overrides={"g": "on"}, local={"g": "on"})["g"]
    assert Layer.KILLED == layers(kills={"g"})["g"]


def test_an_override_of_an_unknown_key_is_served_unless_killed():
    """A key only an override names is served as that value; a kill removes it."""
    assert Layer.OVERRIDE == layers(overrides={"x": 1})["x"]
    assert Layer.LOCAL_OVERRIDE == layers(local={"y": 2})["y"]
    assert "x" not in layers(kills={"x"}, overrides={"x": 1})


@pytest.mark.parametrize(
    ("setup", "reason", "first_step"),
    [
        (lambda f: f.kill("f"), Reason.DISABLED, "killed"),
        (lambda f: f.set_override("f", "on"), Reason.STATIC, "set in the store"),
        (lambda f: None, Reason.SPLIT, "rule 'nz': did not match"),
    ],
)
def test_explain_names_the_layer_the_evaluation_used(setup, reason, first_step):
    """explain() narrates the same layer evaluate() served from."""
    flags = Flags(InMemoryProvider(DOC), overrides={"g": "on"})
    setup(flags)
    ex = flags.explain("f", "user-1")
    assert reason == ex.detail.reason
    assert first_step in ex.steps[0]


def test_explain_names_a_local_override_and_a_disabled_flag():
    """A local override and a disabled state are explained as such."""
    flags = Flags(InMemoryProvider(DOC), overrides={"f": "off"})
    assert "local" in flags.explain("f", "u").steps[0]
    assert "disabled" in flags.explain("g", "u").steps[0]
