"""The tutorial's shop as one module: ``tipkit doctor --app shop:app`` examines it.

Run from this directory: ``python -m tipkit doctor --app shop:app``. It reaches
level 5 with one warning (its kill switches live in this process's memory: give
the flags a ``RedisStore`` in a fleet); ``tests/test_doctor.py`` checks the report.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider

from tipkit import (
    CircuitBreaker,
    ErrorRateCheck,
    Flags,
    Rollout,
    TokenBucket,
    compose,
    doctor,
    irreversible,
    retry,
    telemetry,
)

FLAGS = {
    "flags": {
        "new-pricing": {
            "variants": {"on": True, "off": False},
            "off_variant": "off",
            "fallthrough": {"split": {"on": 0, "off": 100}},
        }
    }
}


class Shop:
    """Everything the shop runs on, built once at start-up."""

    def __init__(self) -> None:
        # Start-up: an SDK meter provider (add a reader/exporter), then tipkit's
        # signals.
        telemetry.instrument(meter_provider=MeterProvider())
        self.flags = Flags.from_dict(FLAGS)
        self.breaker = CircuitBreaker(
            "payments", runbook="https://runbooks.example/payments"
        )
        self.bucket = TokenBucket("payments", rate=100.0, capacity=200)
        self.rollout = Rollout(
            "new-pricing",
            flags=self.flags,
            checks=[ErrorRateCheck()],
            runbook="https://runbooks.example/pricing",
        )
        self.charge = compose(
            retry(on=ConnectionError, attempts=3, idempotency_key="order_id"),
            self.breaker,
            self.bucket,
        )(charge)


@irreversible(reason="charges a card")
def charge(order_id: str, amount: float) -> str:
    """Charge a card (the provider deduplicates on order_id)."""
    return f"charged {amount} for {order_id}"


def refund(order_id: str, amount: float) -> str:
    """Undo :func:`charge`."""
    return f"refunded {amount} for {order_id}"


doctor.compensation(charge, refund)
app = Shop()
