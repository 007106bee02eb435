"""Hypothesis strategies for flag tests."""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import strategies as st

salts = st.text(min_size=0, max_size=30)
keys = st.text(min_size=0, max_size=60)


@st.composite
def splits(
    draw: st.DrawFn, min_variants: int = 2, max_variants: int = 5
) -> list[Decimal]:
    """Weights in thousandths-exact percentages summing to exactly 100."""
    n = draw(st.integers(min_variants, max_variants))
    cuts = sorted(
        draw(st.lists(st.integers(0, 100_000), min_size=n - 1, max_size=n - 1))
    )
    bounds = [0, *cuts, 100_000]
    return [Decimal(b - a) / 1000 for a, b in itertools.pairwise(bounds)]


def split_doc(weights: list[Decimal], salt: str = "s") -> dict[str, object]:
    """A one-flag document whose fallthrough is the split *weights* over variants v0..vn."""
    variants = {f"v{i}": f"v{i}" for i in range(len(weights))}
    return {
        "flags": {
            "f": {
                "variants": variants,
                "salt": salt,
                "fallthrough": {
                    "split": {f"v{i}": float(w) for i, w in enumerate(weights)}
                },
            }
        }
    }
