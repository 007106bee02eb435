"""Scenario 4: a shadow experiment of a pricing rewrite on live orders."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import NamedTuple

from tipkit._demo._common import (
    Params,
    Reporter,
)
from tipkit.experiment import Experiment, ExperimentResult
from tipkit.testing import FakeClock


class Order(NamedTuple):
    """A simulated order: what both pricing functions are called with."""

    order_id: int
    customer: str
    qty: int
    unit: Decimal
    region: str


_TAX = {
    "US": Decimal("0.07"),
    "DE": Decimal("0.19"),
    "FR": Decimal("0.20"),
    "JP": Decimal("0.10"),
}
_REGIONS = ("US", "DE", "FR", "JP", "NZ")
_UNITS = tuple(Decimal(p) for p in ("4.99", "9.99", "12.50", "19.95", "0.35", "149.00"))
_CENT = Decimal("0.01")


def price_v1(order: Order) -> Decimal:
    """Price an order the way production does (the control)."""
    subtotal = order.unit * order.qty
    if order.qty > 10:  # bulk discount above ten items
        subtotal *= Decimal("0.9")
    tax = _TAX.get(order.region, Decimal("0.15"))
    return (subtotal * (1 + tax)).quantize(_CENT, rounding=ROUND_HALF_UP)


def price_v2(order: Order) -> Decimal:
    """Price an order with the rewritten pricing code (the candidate).

    It has two bugs the shadow run is there to find: the bulk discount starts
    at ten items instead of above ten, and it rounds half-cents to even.
    """
    subtotal = order.unit * order.qty
    if order.qty >= 10:
        subtotal *= Decimal("0.9")
    tax = _TAX.get(order.region, Decimal("0.15"))
    return (subtotal * (1 + tax)).quantize(_CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class ShadowMismatch:
    """One input where the candidate disagreed, ready to print."""

    order: Order
    control: str
    candidate: str

    def __str__(self) -> str:
        o = self.order
        return (
            f"order {o.order_id}: {o.qty} x {o.unit} {o.region} → "
            f"v1 {self.control}, v2 {self.candidate}"
        )


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """Scenario 4: a shadow run of a pricing rewrite finds where it disagrees.

    Attributes:
        calls: orders priced (always by the control).
        sampled: orders where the candidate also ran (25 %, by customer).
        outcomes: the experiment's counts per outcome.
        mismatches: every disagreeing input, oldest first.
        by_qty: per quantity, ``(compared, disagreed)``.
        causes: disagreements grouped by a plain-words cause.
    """

    calls: int
    sampled: int
    outcomes: Mapping[str, int]
    mismatches: tuple[ShadowMismatch, ...] = field(repr=False)
    by_qty: Mapping[int, tuple[int, int]] = field(repr=False)
    causes: Mapping[str, int]

    @property
    def mismatched(self) -> int:
        """How many sampled orders the candidate priced differently."""
        return self.outcomes.get("mismatched", 0)


def _cause(order: Order, control: Decimal, candidate: Decimal) -> str:
    if order.qty == 10:
        return "qty == 10: bulk discount applied one item early"
    if abs(control - candidate) <= _CENT:
        return "half-cent rounded to even, not up"
    return "other"  # pragma: no cover - the two bugs above are the only ones


def run_shadow(seed: int, params: Params, reporter: Reporter) -> ShadowResult:
    """Shadow the rewritten pricing on simulated orders; collect where it disagrees."""
    key = "shadow"
    rng = random.Random(seed + 3)  # noqa: S311  # a simulation
    clock = FakeClock()
    results: list[ExperimentResult] = []
    exp: Experiment[[Order], Decimal] = Experiment(
        "demo-pricing-v2",
        control=price_v1,
        candidate=price_v2,
        sample=25.0,
        sample_key=lambda order: order.customer,
        publish=results.append,
        rng=random.Random(seed + 4),  # noqa: S311  # a simulation
        keep_mismatches=params.orders,
        clock=clock,
    )
    reporter.begin(key, "4 · shadow run of a pricing rewrite", params.orders)
    for n in range(1, params.orders + 1):
        order = Order(
            n,
            f"customer-{rng.randrange(params.users)}",
            min(20, 1 + int(rng.expovariate(0.18))),
            rng.choice(_UNITS),
            rng.choice(_REGIONS),
        )
        exp(order)
        clock.advance(0.01)
        if n % 500 == 0 or n == params.orders:
            st = exp.stats()
            reporter.update(
                key,
                n,
                f"compared {exp.sampled:,} · matched {st['matched']:,}"
                f" · mismatched {st['mismatched']:,}",
            )
    by_qty: dict[int, list[int]] = {}
    for r in results:
        qty = r.args[0].qty
        slot = by_qty.setdefault(qty, [0, 0])
        slot[0] += 1
        slot[1] += not r.matched
    mismatches = tuple(
        ShadowMismatch(m.args[0], str(m.control.value), str(m.observed.value))
        for m in exp.mismatches()
    )
    causes: dict[str, int] = {}
    for m in exp.mismatches():
        c = _cause(m.args[0], m.control.value, m.observed.value)
        causes[c] = causes.get(c, 0) + 1
    stats = exp.stats()
    result = ShadowResult(
        calls=exp.calls,
        sampled=exp.sampled,
        outcomes=stats,
        mismatches=mismatches,
        by_qty={q: (v[0], v[1]) for q, v in sorted(by_qty.items())},
        causes=dict(sorted(causes.items(), key=lambda kv: -kv[1])),
    )
    reporter.end(
        key,
        f"{stats['mismatched']:,} of {exp.sampled:,} compared orders disagree: "
        + "; ".join(f"{n:,} x {c}" for c, n in result.causes.items()),
        ok=stats["mismatched"] > 0,
    )
    return result
