"""Retry outside vs inside the breaker, on a simulated outage (a simulation, not a timing).

Run: python benchmarks/composition.py

A dependency fails for 60 s of a 120 s run while requests arrive every 0.1 s,
on a FakeClock (zero real time). The same retry and breaker are composed two
ways; we count what reaches the failing dependency and what is wasted.
"""

from __future__ import annotations

from tipkit import compose
from tipkit.breaker import CircuitBreaker, CountWindow
from tipkit.errors import CircuitOpenError
from tipkit.retry import retry
from tipkit.testing import FakeClock

OUTAGE = (30.0, 90.0)
END = 120.0
GAP = 0.1


def simulate(order: str) -> dict[str, float]:
    """Run the outage with retry `outside` or `inside` the breaker; return the tallies."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        "dependency",
        window=CountWindow(20),
        minimum_calls=10,
        failure_rate_threshold=0.5,
        open_duration=5.0,
        half_open_calls=1,
        clock=clock,
    )
    again = retry(
        on=ConnectionError, attempts=3, wait_initial=0.05, wait_jitter=0.0, clock=clock
    )
    tally: dict[str, float] = {
        "requests": 0,
        "downstream calls": 0,
        "downstream calls in outage": 0,
        "failed fast (circuit open)": 0,
        "failed after reaching dependency": 0,
        "succeeded": 0,
    }

    def dependency() -> str:
        tally["downstream calls"] += 1
        now = clock.monotonic()
        if OUTAGE[0] <= now < OUTAGE[1]:
            tally["downstream calls in outage"] += 1
            raise ConnectionError("dependency down")
        return "ok"

    guarded = (
        compose(again, breaker)
        if order == "outside"
        else compose(breaker, again, order="as-given")  # the refused order, on purpose
    )
    call = guarded(dependency)
    next_arrival = 0.0
    while next_arrival < END:
        if clock.monotonic() < next_arrival:
            clock.advance(next_arrival - clock.monotonic())
        tally["requests"] += 1
        try:
            call()
            tally["succeeded"] += 1
        except CircuitOpenError:
            tally["failed fast (circuit open)"] += 1
        except ConnectionError:
            tally["failed after reaching dependency"] += 1
        next_arrival += GAP
    tally["seconds callers spent in retry waits"] = round(sum(clock.sleeps), 2)
    return tally


def main() -> None:
    results = {order: simulate(order) for order in ("outside", "inside")}
    keys = list(results["outside"])
    print(
        f"outage {OUTAGE[0]:.0f}-{OUTAGE[1]:.0f} s of {END:.0f} s, one request every {GAP} s"
    )
    print()
    print(
        f"| {'count':<38} | {'retry outside breaker':>22} | {'retry inside breaker':>21} |"
    )
    print(f"| {'-' * 38} | {'-' * 21}: | {'-' * 20}: |")
    for key in keys:
        print(
            f"| {key:<38} | {results['outside'][key]:>22} | {results['inside'][key]:>21} |"
        )


if __name__ == "__main__":
    main()
