"""Vendor bucketing schemes: tipkit serves each user the variant the vendor's own SDK does.

Each comparison builds the same split in tipkit (``bucketing: {scheme: ...}``)
and in the vendor's Python SDK from an in-memory configuration (no network),
then checks 10,000 random users. The SDKs are in the ``test`` extra.
"""

from __future__ import annotations

import json
import random
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tipkit.errors import ConfigError
from tipkit.flags import EvaluationContext, Flags
from tipkit.flags._schemes import (
    fnv1a32,
    growthbook_hash,
    launchdarkly_bucket,
    unleash_hash,
)

USERS = 10_000


def _users(seed: int, n: int = USERS) -> list[str]:
    """Return *n* varied keys: uuids, emails, numbers, non-ASCII and long keys."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(f"{rng.getrandbits(128):032x}")
        elif kind == 1:
            name = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 12)))
            out.append(f"{name}@example.com")
        elif kind == 2:
            out.append(str(rng.randint(0, 10**9)))
        elif kind == 3:
            out.append("".join(rng.choices("aéß漢字😀-_.", k=rng.randint(1, 9))))
        else:
            out.append("".join(rng.choices(string.printable, k=rng.randint(1, 70))))
    return out


def _tipkit(flag: str, fdoc: dict[str, Any]) -> Flags:
    return Flags.from_dict({"flags": {flag: fdoc}})


def _served(flags: Flags, flag: str, key: str, **attrs: Any) -> Any:
    return flags.evaluate(flag, EvaluationContext(key, attrs)).variant


# -- published vectors -------------------------------------------------------------


def test_launchdarkly_published_vectors() -> None:
    """LaunchDarkly's own bucketing tests: flag hashKey, salt saltyA."""
    assert 0.42157587 == pytest.approx(
        launchdarkly_bucket("hashKey.saltyA", "userKeyA"), abs=1e-8
    )
    assert 0.6708485 == pytest.approx(
        launchdarkly_bucket("hashKey.saltyA", "userKeyB"), abs=1e-7
    )
    assert 0.10343106 == pytest.approx(
        launchdarkly_bucket("hashKey.saltyA", "userKeyC"), abs=1e-8
    )


def test_unleash_published_vectors() -> None:
    """Unleash's client spec: user 123 of group gr1 is at 73 (rollout) and 96 (variants)."""
    assert 73 == unleash_hash("gr1", "123", 100, 0)
    assert 96 == unleash_hash("gr1", "123", 100, 86028157)


def test_growthbook_published_vectors() -> None:
    """GrowthBook hash vectors (versions 1 and 2), as its SDK computes them."""
    assert 0.22 == growthbook_hash("", "a", 1)
    assert 0.077 == growthbook_hash("", "b", 1)
    assert 0.913 == growthbook_hash("seed", "a", 1)
    assert 0.0216 == growthbook_hash("", "a", 2)
    assert 0.9054 == growthbook_hash("", "b", 2)
    assert 0.0505 == growthbook_hash("seed", "a", 2)


def test_scheme_vectors_match_bucketing_doc_table() -> None:
    """The vendor vectors in docs/bucketing.md are what tipkit computes."""
    vectors = json.loads(
        (_data_dir() / "vendors" / "scheme_vectors.json").read_text("utf-8")
    )
    for case in vectors["cases"]:
        flags = _tipkit(case["flag"], case["document"])
        for key, variant in case["expect"].items():
            assert (case["flag"], key, variant) == (
                case["flag"],
                key,
                _served(flags, case["flag"], key),
            )


def _data_dir() -> Any:
    from pathlib import Path

    return Path(__file__).parent / "data"


# -- LaunchDarkly ------------------------------------------------------------------


def _ld_evaluate(flag_json: dict[str, Any]) -> Any:
    ld_model = pytest.importorskip("ldclient.impl.model")
    from ldclient.context import Context
    from ldclient.impl.evaluator import Evaluator
    from ldclient.impl.events.types import EventFactory

    flag = ld_model.FeatureFlag(flag_json)
    evaluator = Evaluator(
        lambda _k: None, lambda _k: None, lambda _k: (None, "NOT_CONFIGURED")
    )
    events = EventFactory(False)

    def run(key: str) -> Any:
        ctx = Context.builder(key).build()
        return evaluator.evaluate(flag, ctx, events).detail.variation_index

    return run


@pytest.mark.parametrize("seed", [None, 61])
def test_launchdarkly_rollout_matches_sdk(seed: int | None) -> None:
    """A 3-way LaunchDarkly rollout (flag salt, or a rollout seed) serves like the SDK."""
    weights = [20000, 33333, 46667]
    rollout: dict[str, Any] = {
        "variations": [{"variation": i, "weight": w} for i, w in enumerate(weights)]
    }
    if seed is not None:
        rollout["seed"] = seed
    ld = _ld_evaluate(
        {
            "key": "hashKey",
            "version": 1,
            "on": True,
            "salt": "saltyA",
            "variations": ["a", "b", "c"],
            "offVariation": 0,
            "fallthrough": {"rollout": rollout},
            "targets": [],
            "rules": [],
            "prerequisites": [],
        }
    )
    bucketing: dict[str, Any] = {"scheme": "launchdarkly", "salt": "saltyA"}
    if seed is not None:
        bucketing["seed"] = seed
    flags = _tipkit(
        "hashKey",
        {
            "variants": {"v0": "a", "v1": "b", "v2": "c"},
            "bucketing": bucketing,
            "fallthrough": {"split": {"v0": 20, "v1": 33.333, "v2": 46.667}},
        },
    )
    users = _users(1)
    expected = [ld(u) for u in users]
    actual = [int(_served(flags, "hashKey", u)[1:]) for u in users]
    assert expected == actual
    assert {0, 1, 2} == set(actual)


# -- Unleash -----------------------------------------------------------------------


def _unleash_engine(features: list[dict[str, Any]]) -> Any:
    engine_mod = pytest.importorskip("yggdrasil_engine.engine")
    engine = engine_mod.UnleashEngine()
    engine.take_state(json.dumps({"version": 2, "features": features}))
    return engine


def _rollout(percent: int, group: str, variants: list[dict[str, Any]]) -> Any:
    return {
        "name": "flexibleRollout",
        "parameters": {
            "rollout": str(percent),
            "stickiness": "default",
            "groupId": group,
        },
        "constraints": [],
        "variants": variants,
    }


def test_unleash_gradual_rollout_matches_sdk() -> None:
    """A 37% Unleash gradual rollout is on for exactly the SDK's users."""
    engine = _unleash_engine(
        [{"name": "checkout", "enabled": True, "strategies": [_rollout(37, "gr1", [])]}]
    )
    flags = _tipkit(
        "checkout",
        {
            "variants": {"on": True, "off": False},
            "bucketing": {"scheme": "unleash", "group": "gr1"},
            "fallthrough": {"split": {"on": 37, "off": 63}},
        },
    )
    users = _users(2)
    expected = [engine.is_enabled("checkout", {"userId": u}).is_enabled for u in users]
    actual = [flags.is_enabled("checkout", EvaluationContext(u)) for u in users]
    assert expected == actual


def test_unleash_rollout_with_variants_matches_sdk() -> None:
    """Unleash's two hashes (rollout seed 0, variants seed 86028157) both match the SDK."""
    variants = [
        {"name": "blue", "weight": 250, "stickiness": "default", "weightType": "fix"},
        {"name": "green", "weight": 300, "stickiness": "default"},
        {"name": "red", "weight": 450, "stickiness": "default"},
    ]
    engine = _unleash_engine(
        [
            {
                "name": "banner",
                "enabled": True,
                "strategies": [_rollout(40, "banner-exp", variants)],
            }
        ]
    )
    flags = _tipkit(
        "banner",
        {
            "variants": {"blue": "blue", "green": "green", "red": "red", "off": ""},
            "bucketing": {"scheme": "unleash", "group": "banner-exp"},
            "fallthrough": {"split": {"blue": 10, "green": 12, "red": 18, "off": 60}},
        },
    )
    users = _users(3)
    expected = []
    for u in users:
        v = engine.get_variant("banner", {"userId": u}).variant
        expected.append(v.name if v.enabled else "off")
    actual = [_served(flags, "banner", u) for u in users]
    assert expected == actual
    assert {"blue", "green", "red", "off"} == set(actual)


def test_unleash_feature_variants_match_sdk() -> None:
    """Feature-level variants (normalised by their total weight) match the SDK at 100%."""
    variants = [
        {"name": "a", "weight": 333, "stickiness": "default"},
        {"name": "b", "weight": 333, "stickiness": "default"},
        {"name": "c", "weight": 334, "stickiness": "default"},
    ]
    engine = _unleash_engine(
        [
            {
                "name": "menu",
                "enabled": True,
                "strategies": [_rollout(100, "menu", [])],
                "variants": variants,
            }
        ]
    )
    flags = _tipkit(
        "menu",
        {
            "variants": {"a": 1, "b": 2, "c": 3},
            "bucketing": {"scheme": "unleash"},
            "fallthrough": {"split": {"a": 33.3, "b": 33.3, "c": 33.4}},
        },
    )
    users = _users(4)
    expected = [engine.get_variant("menu", {"userId": u}).variant.name for u in users]
    actual = [_served(flags, "menu", u) for u in users]
    assert expected == actual


# -- GrowthBook --------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_growthbook_experiment_matches_sdk(version: int) -> None:
    """A GrowthBook experiment rule (hash version 1 or 2) assigns like the SDK."""
    growthbook = pytest.importorskip("growthbook")
    features = {
        "hero": {
            "defaultValue": "none",
            "rules": [
                {
                    "key": "hero-exp",
                    "seed": "hero-seed",
                    "hashVersion": version,
                    "variations": ["v0", "v1", "v2"],
                    "weights": [0.2, 0.3, 0.5],
                    "coverage": 1,
                }
            ],
        }
    }
    gb = growthbook.GrowthBook(features=features)
    flags = _tipkit(
        "hero",
        {
            "variants": {"v0": "v0", "v1": "v1", "v2": "v2"},
            "bucketing": {"scheme": f"growthbook-v{version}", "seed": "hero-seed"},
            "fallthrough": {"split": {"v0": 20, "v1": 30, "v2": 50}},
        },
    )
    users = _users(5 + version)
    expected = []
    for u in users:
        gb.set_attributes({"id": u})
        expected.append(gb.get_feature_value("hero", "none"))
    actual = [flags.get("hero", EvaluationContext(u), default="none") for u in users]
    gb.destroy()
    assert expected == actual


@given(st.text(max_size=40))
def test_fnv1a32_matches_growthbook(text: str) -> None:
    """FNV-1a over UTF-16 code units in tipkit equals the GrowthBook SDK's for any text."""
    core = pytest.importorskip("growthbook.core")
    assert core.fnv1a32(text) == fnv1a32(text)


# -- flagd -------------------------------------------------------------------------


def _flagd(flag: str, targeting: dict[str, Any], variants: list[str]) -> Any:
    core_mod = pytest.importorskip("openfeature.contrib.tools.flagd.core")
    from openfeature.evaluation_context import EvaluationContext as OFContext

    core = core_mod.FlagdCore()
    core.set_flags(
        {
            "flags": {
                flag: {
                    "state": "ENABLED",
                    "variants": {v: v for v in variants},
                    "defaultVariant": variants[0],
                    "targeting": targeting,
                }
            }
        }
    )

    def run(key: str, **attrs: Any) -> Any:
        ctx = OFContext(targeting_key=key, attributes=attrs)
        return core.resolve_string_value(flag, "?", ctx).variant

    return run


def test_flagd_fractional_shorthand_matches_sdk() -> None:
    """The flagd shorthand fractional (flag key and targeting key) matches flagd-core."""
    run = _flagd(
        "color",
        {"fractional": [["red", 25], ["green", 25], ["blue", 50]]},
        ["red", "green", "blue"],
    )
    flags = _tipkit(
        "color",
        {
            "variants": {"red": "red", "green": "green", "blue": "blue"},
            "bucketing": {"scheme": "flagd"},
            "fallthrough": {"split": {"red": 25, "green": 25, "blue": 50}},
        },
    )
    users = _users(8)
    assert [run(u) for u in users] == [_served(flags, "color", u) for u in users]


def test_flagd_fractional_by_attribute_matches_sdk() -> None:
    """The flagd explicit form (cat of flag key and an attribute) matches flagd-core."""
    run = _flagd(
        "color",
        {
            "fractional": [
                {"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]},
                ["red", 10],
                ["green", 90],
            ]
        },
        ["red", "green"],
    )
    flags = _tipkit(
        "color",
        {
            "variants": {"red": "red", "green": "green"},
            "bucketing": {"scheme": "flagd", "prefix": "color"},
            "bucket_by": "email",
            "fallthrough": {"split": {"red": 10, "green": 90}},
        },
    )
    users = _users(9)
    expected = [run("x", email=u) for u in users]
    actual = [_served(flags, "color", "x", email=u) for u in users]
    assert expected == actual


@pytest.mark.parametrize("weights", [[1, 1, 1], [1, 2, 4], [5, 7]])
def test_flagd_weights_out_of_a_total_match_sdk(weights: list[int]) -> None:
    """Thirds and sevenths: with total, tipkit buckets with flagd's integer weights."""
    names = [f"v{i}" for i in range(len(weights))]
    run = _flagd(
        "share",
        {"fractional": [[n, w] for n, w in zip(names, weights, strict=True)]},
        names,
    )
    total = sum(weights)
    cums, acc = [], 0
    for w in weights:
        acc += w
        cums.append((2 * acc * 100000 + total) // (2 * total))
    thousandths = [c - p for c, p in zip(cums, [0, *cums[:-1]], strict=True)]
    flags = _tipkit(
        "share",
        {
            "variants": {n: n for n in names},
            "bucketing": {"scheme": "flagd", "total": total},
            "fallthrough": {
                "split": {n: t / 1000 for n, t in zip(names, thousandths, strict=True)}
            },
        },
    )
    users = _users(13)
    assert [run(u) for u in users] == [_served(flags, "share", u) for u in users]


def test_flagd_total_refuses_percentages_that_are_not_its_weights() -> None:
    """total: 3 with a 40/60 split is refused: 40% is no number of thirds."""
    doc = {
        "flags": {
            "f": {
                "variants": {"on": True, "off": False},
                "bucketing": {"scheme": "flagd", "total": 3},
                "fallthrough": {"split": {"on": 40, "off": 60}},
            }
        }
    }
    with pytest.raises(ConfigError, match="not flagd weights") as info:
        Flags.from_dict(doc)
    assert ["fallthrough.split"] == [p.field for p in info.value.problems]


def test_flagd_version_2_hashes_the_concatenated_string() -> None:
    """version: 2 is flagd's Go fractional before v3: murmur3 of flagKey + key, (h*T)>>32."""
    import mmh3

    flags = _tipkit(
        "color",
        {
            "variants": {"red": "red", "green": "green", "blue": "blue"},
            "bucketing": {"scheme": "flagd", "version": 2},
            "fallthrough": {"split": {"red": 25, "green": 25, "blue": 50}},
        },
    )
    users = _users(12, 3000)
    expected = []
    for u in users:
        h = mmh3.hash(("color" + u).encode("utf-8", "surrogatepass"), 0, signed=False)
        b = (h * 4) >> 32  # flagd weights 1:1:2 (total 4)
        expected.append(["red", "green", "blue", "blue"][b])
    assert expected == [_served(flags, "color", u) for u in users]


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucketing", "field", "message"),
    [
        ("ld", "bucketing", "must be a mapping"),
        ({"scheme": "optimizely"}, "bucketing.scheme", "must be one of"),
        ({"scheme": "launchdarkly"}, "bucketing.salt", "needs 'salt'"),
        ({"scheme": "launchdarkly", "salt": 3}, "bucketing.salt", "non-empty string"),
        (
            {"scheme": "launchdarkly", "salt": "s", "seed": "x"},
            "bucketing.seed",
            "integer",
        ),
        ({"scheme": "unleash", "salt": "s"}, "bucketing.salt", "unknown key"),
        ({"scheme": "flagd", "flag_key": ""}, "bucketing.flag_key", "non-empty"),
        ({"scheme": "flagd", "version": 1}, "bucketing.version", "must be 3"),
        ({"scheme": "flagd", "total": 0}, "bucketing.total", "from 1 to 99999"),
    ],
)
def test_bad_bucketing_is_a_config_error_naming_flag_and_field(
    bucketing: Any, field: str, message: str
) -> None:
    """A bad bucketing block is a ConfigError naming the flag and the field."""
    doc = {
        "flags": {
            "f": {
                "variants": {"on": True, "off": False},
                "bucketing": bucketing,
                "fallthrough": {"split": {"on": 50, "off": 50}},
            }
        }
    }
    with pytest.raises(ConfigError, match=message) as info:
        Flags.from_dict(doc)
    assert [("f", field)] == [(p.flag, p.field) for p in info.value.problems]


def test_unleash_rollout_must_be_a_whole_percent() -> None:
    """An unleash split whose 'off' weight is not a whole percent is refused at load."""
    doc = {
        "flags": {
            "f": {
                "variants": {"on": True, "off": False},
                "bucketing": {"scheme": "unleash"},
                "fallthrough": {"split": {"on": 50.5, "off": 49.5}},
            }
        }
    }
    with pytest.raises(ConfigError, match="whole percent") as info:
        Flags.from_dict(doc)
    assert ["fallthrough.split"] == [p.field for p in info.value.problems]


def test_yaml_bucketing_error_has_a_line(tmp_path: Any) -> None:
    """A bad scheme in a YAML file is reported with its line."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "flags:\n  f:\n    variants: {on: true, off: false}\n"
        "    bucketing:\n      scheme: statsig\n"
        "    fallthrough: {split: {on: 50, off: 50}}\n",
        "utf-8",
    )
    with pytest.raises(ConfigError) as info:
        Flags.from_file(path)
    assert [(5, "bucketing.scheme")] == [(p.line, p.field) for p in info.value.problems]


@given(st.text())
def test_every_scheme_buckets_any_string(key: str) -> None:
    """No key, lone surrogates included, makes a vendor scheme raise or crash."""
    for scheme in (
        {"scheme": "launchdarkly", "salt": "s"},
        {"scheme": "unleash"},
        {"scheme": "growthbook-v1"},
        {"scheme": "growthbook-v2"},
        {"scheme": "flagd"},
        {"scheme": "flagd", "prefix": ""},
    ):
        flags = _tipkit(
            "f",
            {
                "variants": {"on": True, "off": False},
                "bucketing": scheme,
                "fallthrough": {"split": {"on": 50, "off": 50}},
            },
        )
        assert _served(flags, "f", key) in {"on", "off"}


def test_tipkit_scheme_is_the_default() -> None:
    """scheme: tipkit buckets exactly as a flag without a bucketing block."""
    fdoc: dict[str, Any] = {
        "variants": {"on": True, "off": False},
        "fallthrough": {"split": {"on": 30, "off": 70}},
    }
    plain = _tipkit("f", fdoc)
    named = _tipkit("f", {**fdoc, "bucketing": {"scheme": "tipkit"}})
    users = _users(10, 2000)
    assert [_served(plain, "f", u) for u in users] == [
        _served(named, "f", u) for u in users
    ]


def test_run_time_split_keeps_the_flags_scheme() -> None:
    """set_split on a vendor-scheme flag still buckets by the vendor's scheme."""
    fdoc: dict[str, Any] = {
        "variants": {"on": True, "off": False},
        "bucketing": {"scheme": "growthbook-v2", "seed": "s"},
        "fallthrough": {"split": {"on": 10, "off": 90}},
    }
    flags = _tipkit("f", fdoc)
    flags.set_split("f", {"on": 40, "off": 60})
    target = _tipkit("f", {**fdoc, "fallthrough": {"split": {"on": 40, "off": 60}}})
    users = _users(11, 2000)
    assert [_served(target, "f", u) for u in users] == [
        _served(flags, "f", u) for u in users
    ]


def test_explain_names_the_vendor_scheme() -> None:
    """The explanation says which vendor's bucketing placed the user, not tipkit's murmur3."""
    flags = _tipkit(
        "hashKey",
        {
            "variants": {"a": 1, "b": 2, "c": 3},
            "bucketing": {"scheme": "launchdarkly", "salt": "saltyA"},
            "fallthrough": {"split": {"a": 30, "b": 40, "c": 30}},
        },
    )
    why = flags.explain("hashKey", EvaluationContext("userKeyA"))
    assert "b" == why.detail.variant
    assert any("bucketed by launchdarkly" in step for step in why.steps)
    assert not any("murmur3" in step for step in why.steps)
