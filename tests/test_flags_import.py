"""Importers: each vendor's exported flags load into Flags and serve the vendor's variants.

Each test imports a realistic export from tests/data/vendors/, loads the
result into :class:`Flags`, and checks sample users against the vendor's own
Python SDK evaluating the same file offline (no network).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tipkit.flags import EvaluationContext, Flags
from tipkit.flags._import import VENDORS, import_flags

DATA = Path(__file__).parent / "data" / "vendors"
SAMPLE = 3000


def _load(vendor: str) -> Any:
    return json.loads((DATA / f"{vendor}.json").read_text("utf-8"))


def _people(seed: int, n: int = SAMPLE) -> list[tuple[str, dict[str, Any]]]:
    """Return *n* (key, attributes) pairs with the attributes the sample files target."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = rng.choice(
            [f"user-{i}", f"{rng.getrandbits(64):x}", "qa-alice", "user-7", "user-42"]
        )
        attrs = {
            "country": rng.choice(["NZ", "AU", "US", "GB"]),
            "email": f"{rng.getrandbits(32):x}@{rng.choice(['example.com', 'mail.test'])}",
            "plan": rng.choice(["free", "pro", "team"]),
        }
        out.append((key, attrs))
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # this interpreter, our own CLI and files
        [sys.executable, "-m", "tipkit", "flags", "import", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _tipkit(vendor: str, **kwargs: Any) -> tuple[Flags, Any]:
    result = import_flags(vendor, _load(vendor), **kwargs)
    return Flags.from_dict(result.document), result


def test_launchdarkly_import_serves_launchdarkly_variations() -> None:
    """Imported LaunchDarkly flags serve what LaunchDarkly's evaluator serves."""
    pytest.importorskip("ldclient")
    from ldclient.context import Context
    from ldclient.impl.evaluator import Evaluator
    from ldclient.impl.events.types import EventFactory
    from ldclient.impl.model import FeatureFlag, Segment

    raw = _load("launchdarkly")
    segments = {k: Segment(v) for k, v in raw["segments"].items()}
    ld_flags = {k: FeatureFlag(v) for k, v in raw["flags"].items()}
    evaluator = Evaluator(
        ld_flags.get, segments.get, lambda _k: (None, "NOT_CONFIGURED")
    )
    flags, result = _tipkit("launchdarkly")
    assert [("org-beta", "contextTargets")] == [(f, w) for f, w, _ in result.skipped]
    keys = ["new-checkout", "banner-color", "search-v2", "checkout-upsell"]
    assert keys == list(result.document["flags"])
    assert [{"flag": "new-checkout", "variants": ["on"]}] == (
        result.document["flags"]["checkout-upsell"]["prerequisites"]
    )
    events = EventFactory(False)
    for key, attrs in _people(1):
        builder = Context.builder(key)
        for name, value in attrs.items():
            builder.set(name, value)
        ctx = builder.build()
        for flag in keys:
            expected = evaluator.evaluate(ld_flags[flag], ctx, events).detail.value
            actual = flags.get(flag, EvaluationContext(key, attrs))
            assert (flag, key, attrs, expected) == (flag, key, attrs, actual)


def test_unleash_import_serves_unleash_variants() -> None:
    """Imported Unleash features are on, and pick variants, as Unleash's engine does."""
    engine_mod = pytest.importorskip("yggdrasil_engine.engine")
    engine = engine_mod.UnleashEngine()
    engine.take_state(json.dumps(_load("unleash")))
    flags, result = _tipkit("unleash")
    assert ["sessions"] == [f for f, _, _ in result.skipped]
    for key, attrs in _people(2):
        ctx = {"userId": key, "properties": dict(attrs)}
        tk = EvaluationContext(key, attrs)
        for flag in ("new-checkout", "old-search"):
            expected = engine.is_enabled(flag, ctx).is_enabled
            assert (flag, key, expected) == (flag, key, flags.is_enabled(flag, tk))
        for flag in ("banner", "menu"):
            v = engine.get_variant(flag, ctx).variant
            expected_name = v.name if v.enabled else "disabled"
            actual = flags.get(flag, tk)
            assert (flag, key, expected_name) == (flag, key, actual)


def test_growthbook_import_serves_growthbook_values() -> None:
    """Imported GrowthBook features give the values GrowthBook's SDK gives."""
    growthbook = pytest.importorskip("growthbook")
    raw = _load("growthbook")
    gb = growthbook.GrowthBook(features=raw["features"])
    flags, result = _tipkit("growthbook")
    assert ["price-test"] == [f for f, _, _ in result.skipped]
    try:
        for key, attrs in _people(3):
            gb.set_attributes({"id": key, **attrs})
            for flag in ("hero", "dark-mode", "layout"):
                expected = gb.get_feature_value(flag, None)
                actual = flags.get(flag, EvaluationContext(key, attrs))
                assert (flag, key, attrs, expected) == (flag, key, attrs, actual)
    finally:
        gb.destroy()


def test_flagd_import_serves_flagd_variants() -> None:
    """Imported flagd flags resolve to the variants flagd-core resolves."""
    core_mod = pytest.importorskip("openfeature.contrib.tools.flagd.core")
    from openfeature.evaluation_context import EvaluationContext as OFContext

    core = core_mod.FlagdCore()
    core.set_flags(_load("flagd"))
    flags, result = _tipkit("flagd")
    assert ["beta-app"] == [f for f, _, _ in result.skipped]
    resolvers = {
        "color": core.resolve_string_value,
        "header": core.resolve_string_value,
        "email-split": core.resolve_boolean_value,
        "legacy": core.resolve_boolean_value,
        "thirds": core.resolve_integer_value,
    }
    for key, attrs in _people(4):
        ctx = OFContext(targeting_key=key, attributes=attrs)
        tk = EvaluationContext(key, attrs)
        for flag, resolve in resolvers.items():
            # A disabled flag gives the caller's default ("?" here) in both.
            expected = resolve(flag, "?", ctx).value
            actual = flags.get(flag, tk, default=None)
            actual = "?" if actual is None else actual
            assert (flag, key, attrs, expected) == (flag, key, attrs, actual)


@pytest.mark.parametrize("vendor", VENDORS)
def test_cli_import_writes_a_loadable_document_and_lists_what_did_not_translate(
    vendor: str, tmp_path: Path
) -> None:
    """`tipkit flags import` writes a document that loads, lists skips, exits 3 if partial."""
    out = tmp_path / f"{vendor}.yaml"
    proc = _cli("--from", vendor, str(DATA / f"{vendor}.json"), "-o", str(out))
    assert 3 == proc.returncode, proc.stderr
    assert "not translated: flag" in proc.stderr
    assert "partial:" in proc.stderr.splitlines()[-1]
    flags = Flags.from_file(out)
    assert import_flags(vendor, _load(vendor)).document["flags"].keys() == set(
        flags.keys()
    )


def test_cli_import_exits_0_when_everything_translates(tmp_path: Path) -> None:
    """A fully translatable file exits 0 and prints the document on stdout."""
    src = tmp_path / "flagd.json"
    doc = _load("flagd")
    del doc["flags"]["beta-app"]
    src.write_text(json.dumps(doc), "utf-8")
    proc = _cli("--from", "flagd", str(src))
    assert 0 == proc.returncode, proc.stderr
    assert {"color", "header", "email-split", "thirds", "legacy"} == set(
        json.loads(proc.stdout)["flags"]
    )


def test_cli_import_refuses_a_file_of_another_format(tmp_path: Path) -> None:
    """A file that is not the vendor's format exits 1 with the reason."""
    src = tmp_path / "x.json"
    src.write_text('{"flags": []}', "utf-8")
    proc = _cli("--from", "unleash", str(src))
    assert 1 == proc.returncode
    assert "expected Unleash features JSON" in proc.stderr


def test_unknown_vendor_is_a_value_error() -> None:
    """import_flags names the vendors it knows."""
    with pytest.raises(ValueError, match="expected one of: launchdarkly"):
        import_flags("optimizely", {})


def test_launchdarkly_rest_api_flag_uses_the_chosen_environment() -> None:
    """A REST API flag (variations with values, per-environment config) imports one env."""
    rest = {
        "items": [
            {
                "key": "f",
                "variations": [{"value": True, "name": "on"}, {"value": False}],
                "environments": {
                    "production": {
                        "on": True,
                        "salt": "s1",
                        "offVariation": 1,
                        "fallthrough": {"variation": 0},
                        "rules": [],
                        "targets": [],
                    },
                    "staging": {
                        "on": False,
                        "salt": "s2",
                        "offVariation": 1,
                        "fallthrough": {"variation": 0},
                    },
                },
            }
        ]
    }
    prod = import_flags("launchdarkly", rest).document["flags"]["f"]
    staging = import_flags("launchdarkly", rest, env="staging").document["flags"]["f"]
    assert ("on", None) == (prod["fallthrough"], prod.get("state"))
    assert "disabled" == staging["state"]


def test_a_flag_tipkit_refuses_is_listed_not_written() -> None:
    """A translated flag that tipkit's compiler refuses is listed as not translated."""
    doc = {
        "flags": {
            "ok": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"},
            "bad": {
                "state": "ENABLED",
                "variants": {"a": 1, "b": "x"},
                "defaultVariant": "a",
            },
        }
    }
    result = import_flags("flagd", doc)
    assert ["ok"] == list(result.document["flags"])
    assert "bad" == result.skipped[0][0]
    assert "tipkit refuses it" in result.skipped[0][2]


def test_flagd_version_2_import_marks_its_splits() -> None:
    """--flagd-version 2 writes version: 2 on each fractional flag's bucketing."""
    result = import_flags("flagd", _load("flagd"), flagd_version=2)
    flags = result.document["flags"]
    assert {"scheme": "flagd", "version": 2} == flags["header"]["bucketing"]
    assert {"scheme": "flagd", "prefix": "email-split", "version": 2} == flags[
        "email-split"
    ]["bucketing"]
    assert "legacy" in flags
    assert "bucketing" not in flags["legacy"]


def test_unleash_export_format_imports_like_the_client_api() -> None:
    """An Unleash export (strategies and environments listed apart) gives the same flags."""
    client = _load("unleash")
    export: dict[str, Any] = {
        "features": [],
        "featureStrategies": [],
        "featureEnvironments": [],
    }
    for f in client["features"]:
        name = f["name"]
        export["features"].append({"name": name, "description": f.get("description")})
        for env in ("production", "development"):
            export["featureEnvironments"].append(
                {
                    "featureName": name,
                    "environment": env,
                    "enabled": f["enabled"] if env == "production" else False,
                    "variants": f.get("variants", []),
                }
            )
        for order, s in enumerate(f["strategies"]):
            export["featureStrategies"].append(
                {
                    **s,
                    "featureName": name,
                    "environment": "production",
                    "sortOrder": order,
                }
            )
    from_client = import_flags("unleash", client)
    from_export = import_flags("unleash", export)
    assert from_client.document == from_export.document
    assert from_client.skipped == from_export.skipped
    development = import_flags("unleash", export, env="development").document
    assert {"disabled"} == {f.get("state") for f in development["flags"].values()}
