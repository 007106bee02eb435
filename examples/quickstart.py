"""tipkit in one file: a flag decides, guards contain, events show what happened.

Run: python examples/quickstart.py
"""

from __future__ import annotations

from tipkit import CircuitBreaker, CountWindow, Flags, TokenBucket, compose, retry
from tipkit.breaker import BreakerStateChanged, CallRejected
from tipkit.errors import RejectedError
from tipkit.retry import RetryGaveUp, RetryScheduled
from tipkit.telemetry import add_listener

flags = Flags.from_dict(
    {
        "version": 1,
        "flags": {
            "new-pricing": {
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "rules": [
                    {
                        "id": "staff",
                        "if": {
                            "attr": "email",
                            "op": "ends_with",
                            "value": "@example.com",
                        },
                        "serve": "on",
                    }
                ],
                "fallthrough": {"split": {"on": 10, "off": 90}},
            }
        },
    }
)

breaker = CircuitBreaker("prices-db", window=CountWindow(20), minimum_calls=10)
bucket = TokenBucket("prices-db", rate=50.0, capacity=20)
guarded = compose(retry(on=ConnectionError, attempts=3), breaker, bucket)
add_listener(
    lambda event: print(f"  event: {type(event).__name__} {event.name}"),
    types=(BreakerStateChanged, CallRejected, RetryScheduled, RetryGaveUp),
)


@guarded
def fetch_price(sku: str, *, healthy: bool) -> float:
    """Pretend to read a price from a database that may be down."""
    if not healthy or not sku:
        raise ConnectionError("prices-db unreachable")
    return 9.99


def main() -> None:
    print("1. Feature flag: who gets the new pricing?")
    for user in ["alice", "bob", "carol", "dave@example.com"]:
        ctx = {"targeting_key": user, "email": user}
        detail = flags.evaluate("new-pricing", ctx, default=False)
        print(
            f"  {user:<18} -> {detail.value!s:<5} ({detail.reason}, rule={detail.rule_id})"
        )

    print("2. A healthy dependency:", fetch_price("sku-1", healthy=True))

    print("3. The dependency fails; retries give up, then the breaker opens:")
    for _ in range(12):
        try:
            fetch_price("sku-1", healthy=False)
        except ConnectionError:
            pass
        except RejectedError as exc:
            print(f"  rejected without calling: {type(exc).__name__} ({exc.name})")
            break
    print(f"  {breaker!r}")
    print(f"  {bucket!r}")


if __name__ == "__main__":
    main()
