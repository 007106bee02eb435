"""Flags.assign: the variant, reason and serving split, counted like evaluate()."""

# CONVENTIONS.md asks for `expected == actual` asserts
from typing import Any

from tipkit.flags import (
    Assignment,
    ErrorCode,
    EvaluationContext,
    FlagEvaluated,
    Flags,
    Reason,
    bucket,
)
from tipkit.flags._testing import fake_flags
from tipkit.telemetry import _names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import capture_events

DOC: dict[str, Any] = {
    "flags": {
        "pricing": {
            "variants": {"new": True, "old": False},
            "rules": [
                {
                    "id": "nz",
                    "if": {"attr": "country", "op": "eq", "value": "NZ"},
                    "serve": "new",
                }
            ],
            "fallthrough": {"split": {"new": 10, "old": 90}},
        },
        "config": {"variants": {"a": {"limit": [1, 2]}}, "default_variant": "a"},
        "bare-off": {
            "variants": {"on": True, "off": False},
            "state": "disabled",
            "default_variant": "on",
        },
    }
}


def test_assign_reports_the_variant_reason_and_serving_split():
    """A split answer names the variant, reason SPLIT and the split's weights."""
    flags = Flags.from_dict(DOC)
    a = flags.assign("pricing", "user-7")
    expected = "new" if bucket("pricing", "user-7") < 10_000 else "old"
    assert isinstance(a, Assignment)
    assert (expected, expected == "new", Reason.SPLIT, None) == (
        a.variant,
        a.value,
        a.reason,
        a.rule_id,
    )
    assert {"new": 10_000, "old": 90_000} == a.split
    nz = flags.assign("pricing", {"targeting_key": "u", "country": "NZ"})
    assert ("new", Reason.TARGETING_MATCH, "nz", None) == (
        nz.variant,
        nz.reason,
        nz.rule_id,
        nz.split,
    )


def test_assign_agrees_with_evaluate_for_every_context_kind():
    """assign() and evaluate() give the same variant, value and reason."""
    flags = Flags.from_dict(DOC)
    contexts: list[Any] = [
        "user-1",
        42,
        None,
        {"targeting_key": "user-2", "country": "NZ"},
        EvaluationContext("user-3", {"country": "AU"}),
        object(),
    ]
    for ctx in contexts:
        d = flags.evaluate("pricing", ctx)
        a = flags.assign("pricing", ctx)
        assert (d.variant, d.value, d.reason, d.error_code) == (
            a.variant,
            a.value,
            a.reason,
            a.error_code,
        )


def test_assign_reuses_one_object_per_outcome():
    """Two assignments served by one outcome are one shared object (no allocation)."""
    flags = Flags.from_dict(DOC)
    ctx = {"targeting_key": "u", "country": "NZ"}
    assert flags.assign("pricing", ctx) is flags.assign("pricing", ctx)


def test_assign_copies_object_values():
    """An object value is a fresh copy per assignment: mutating one changes nothing."""
    flags = Flags.from_dict(DOC)
    first = flags.assign("config")
    first.value["limit"].append(3)
    assert {"limit": [1, 2]} == flags.assign("config").value


def test_assign_errors_come_back_as_reason_error():
    """A missing flag, a bad context and a disabled flag without off variant never raise."""
    flags = Flags.from_dict(DOC)
    missing = flags.assign("nope")
    assert (None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND) == (
        missing.value,
        missing.variant,
        missing.reason,
        missing.error_code,
    )
    bad = flags.assign("pricing", object())
    assert ErrorCode.INVALID_CONTEXT == bad.error_code
    keyless = flags.assign("pricing")
    assert ErrorCode.TARGETING_KEY_MISSING == keyless.error_code
    off = flags.assign("bare-off", "u")
    assert (None, None, Reason.DISABLED) == (off.value, off.variant, off.reason)


def test_assign_counts_and_publishes_like_evaluate():
    """Each assignment counts once and publishes one FlagEvaluated, as evaluate() does."""
    flags = Flags.from_dict(DOC)
    ctx = {"targeting_key": "u", "country": "NZ"}
    attrs = {
        _names.FEATURE_FLAG_KEY: "pricing",
        _names.FEATURE_FLAG_VARIANT: "new",
        _names.FEATURE_FLAG_REASON: "targeting_match",
    }
    before = REGISTRY.value(_names.FLAG_EVALUATIONS, attrs)
    with capture_events(FlagEvaluated) as events:
        flags.assign("pricing", ctx)
        flags.evaluate("pricing", ctx)
    assert before + 2 == REGISTRY.value(_names.FLAG_EVALUATIONS, attrs)
    assert [("pricing", "new", "u")] * 2 == [
        (e.flag_key, e.variant, e.context.targeting_key) for e in events
    ]


def test_assign_sees_run_time_splits():
    """After set_split, the assignment's split is the run-time weights."""
    flags = Flags.from_dict(DOC)
    flags.set_split("pricing", {"new": 100, "old": 0})
    a = flags.assign("pricing", "user-1")
    assert ("new", Reason.SPLIT) == (a.variant, a.reason)
    assert {"new": 100_000, "old": 0} == a.split


def test_recording_flags_record_assignments():
    """fake_flags() records assign() like any other evaluation."""
    flags = fake_flags({"on": True})
    flags.assign("on", "u")
    assert [True] == [d.value for d in flags.evaluated("on")]
