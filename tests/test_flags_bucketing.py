import json
import math
import random
from decimal import Decimal
from pathlib import Path

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies_flags import keys, salts, split_doc, splits

from tipkit.flags import BUCKETS, Flags, bucket
from tipkit.flags._bucketing import (
    WeightError,
    split_bounds,
    thousandths,
    variant_index,
)

VECTORS = json.loads(
    (Path(__file__).parent / "data" / "bucketing_vectors.json").read_text("utf-8")
)["vectors"]


@pytest.mark.parametrize(
    ("salt", "key", "expected"),
    [
        ("new-checkout", "user-42", 44470),
        ("new-checkout", "user-43", 65576),
        ("pricing", "alice", 96250),
        ("pricing", "Zoë", 64256),
    ],
)
def test_issue_vectors(salt, key, expected):
    """The vectors written in the issue and the spec hold."""
    assert expected == bucket(salt, key)


@pytest.mark.parametrize(
    "vector", VECTORS, ids=lambda v: f"{v['salt']}.{v['key'][:20]}"
)
def test_generated_vectors(vector):
    """Every vector in the data file (documented in docs/bucketing.md) holds."""
    assert vector["hash"] == mmh3.hash(
        f"{vector['salt']}.{vector['key']}".encode(), 0, signed=False
    )
    assert vector["bucket"] == bucket(vector["salt"], vector["key"])
    if "input_utf8_hex" in vector:
        assert (
            bytes.fromhex(vector["input_utf8_hex"]).decode()
            == f"{vector['salt']}.{vector['key']}"
        )


def test_vectors_include_the_issue_ones():
    """The data file carries the issue's vectors, so the docs and tests agree."""
    found = {(v["salt"], v["key"]): v["bucket"] for v in VECTORS}
    assert found[("new-checkout", "user-42")] == 44470
    assert found[("pricing", "Zoë")] == 64256


@given(salts, keys)
def test_bucket_in_range_and_deterministic(salt, key):
    """A bucket is an integer in [0, 100000) and the same every time."""
    b = bucket(salt, key)
    assert 0 <= b < BUCKETS
    assert b == bucket(salt, key)


def test_engine_uses_the_spec():
    """The engine's split serves variant i for buckets in [cum(i-1), cum(i))."""
    flags = Flags.from_dict(split_doc([Decimal(50), Decimal(50)], salt="new-checkout"))
    assert "v0" == flags.get("f", "user-42")  # 44470 < 50000
    assert "v1" == flags.get("f", "user-43")  # 65576 >= 50000


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        (0, 0),
        (100, 100_000),
        (1.5, 1500),
        ("x", None),
        (True, None),
        (-1, None),
        (33.3333, None),
        (12.345, 12345),
    ],
)
def test_thousandths(weight, expected):
    """Weights parse exactly as Decimal thousandths; bools, negatives, 4 decimals are refused."""
    if expected is None:
        with pytest.raises(WeightError):
            thousandths(weight)
    else:
        assert expected == thousandths(weight)


def test_thousandths_refuses_infinity():
    """An infinite weight is refused."""
    with pytest.raises(WeightError, match="finite"):
        thousandths(float("inf"))


def test_thirds_sum_exactly():
    """33.333 + 33.333 + 33.334 is exactly 100 (no float drift)."""
    assert (33333, 66666, 100000) == split_bounds(
        [thousandths(33.333), thousandths(33.333), thousandths(33.334)]
    )


def test_split_bounds_refuses_wrong_sum():
    """Bounds need weights summing to 100000."""
    with pytest.raises(WeightError, match="sum to 100"):
        split_bounds([1, 2])


def test_variant_index_edges():
    """A bucket equal to a bound belongs to the next variant; zero-weight variants own nothing."""
    bounds = (0, 50_000, 100_000)
    assert variant_index(bounds, 0) == 1
    assert variant_index(bounds, 49_999) == 1
    assert 2 == variant_index(bounds, 50_000)


@settings(max_examples=8, deadline=None)
@given(splits(), st.integers(0, 2**32))
def test_observed_shares_within_five_sigma(weights, seed):
    """Over 100k random keys every variant's share is within 5 binomial sigmas of its weight."""
    flags = Flags.from_dict(split_doc(weights, salt=f"salt-{seed}"))
    rng = random.Random(seed)
    n = 100_000
    counts: dict[str, int] = {}
    get = flags.get
    for _ in range(n):
        v = get("f", f"{rng.getrandbits(64):x}")
        counts[v] = counts.get(v, 0) + 1
    for i, w in enumerate(weights):
        p = float(w) / 100
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts.get(f"v{i}", 0) - n * p) <= 5 * sigma + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 100_000),
    st.integers(0, 100_000),
    st.lists(keys, min_size=1, max_size=200),
)
def test_raising_first_weight_never_moves_users_out(a, b, sample):
    """Raising the first-listed variant's weight only ever adds users to it."""
    low, high = sorted((a, b))

    def doc(first: int) -> dict[str, object]:
        return split_doc(
            [Decimal(first) / 1000, Decimal(100_000 - first) / 1000], salt="mono"
        )

    before, after = Flags.from_dict(doc(low)), Flags.from_dict(doc(high))
    for key in sample:
        if before.get("f", key) == "v0":
            assert "v0" == after.get("f", key)


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**32))
def test_different_salts_are_independent(seed):
    """Joint assignment shares under two salts match the product of the marginals (5 sigma)."""
    rng = random.Random(seed)
    n = 40_000
    joint = [[0, 0], [0, 0]]
    for _ in range(n):
        key = f"{rng.getrandbits(64):x}"
        joint[bucket("salt-a", key) < 30_000][bucket("salt-b", key) < 60_000] += 1
    for i, pa in ((1, 0.3), (0, 0.7)):
        for j, pb in ((1, 0.6), (0, 0.4)):
            p = pa * pb
            assert abs(joint[i][j] - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_shared_salt_correlates_cohorts():
    """Two flags with one salt put the same users in the same low buckets (correlated cohorts)."""
    doc = split_doc([Decimal(20), Decimal(80)], salt="cohort")
    doc["flags"]["g"] = {
        **doc["flags"]["f"],
        "fallthrough": {"split": {"v0": 40, "v1": 60}},
    }  # type: ignore[index, dict-item]
    flags = Flags.from_dict(doc)
    for i in range(2000):
        if flags.get("f", f"u{i}") == "v0":
            assert "v0" == flags.get("g", f"u{i}")
