"""The ending of ``tipkit demo``: automatic actions, then an operator's kill from the CLI.

On one in-process store: a rollout's judge rolls a bad canary back by itself
(audited as ``tipkit:rollout`` with its numbers), a tripwire kills a failing
code path (``tipkit:tripwire``), then an operator runs ``tipkit ops flags
kill`` and ``tipkit ops audit`` through the CLI's own code path. Fast: a few
thousand simulated requests on a virtual clock.
"""

from __future__ import annotations

# ruff: noqa: T201  # the demo prints what the operator typed
import contextlib
import io
import random
from typing import Any

from tipkit.ops._stores import serve_memory

__all__ = ["operator_ending", "run_ending"]


def operator_ending(
    store: Any,
    flags: Any,
    key: str,
    *,
    actor: str = "on-call",
    reason: str = "recommendations time out",
) -> str:
    """Run ``tipkit ops flags kill KEY`` and ``tipkit ops audit`` against *store*.

    *flags* registered itself when it was built (so the CLI knows the flag and
    its variants); a ``MemoryStore`` is served in process as
    ``memory://demo``. Returns what the two commands printed: the audit log
    shows the automatic actions (``tipkit:*`` actors) beside the operator's kill.
    """
    from tipkit._cli import main  # noqa: PLC0415  # the CLI imports this package

    del flags  # registered at construction (tipkit.registry)
    url = serve_memory("demo", store)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        print(f"$ tipkit ops flags kill {key} --reason '{reason}' --actor {actor}")
        main(["ops", "flags", "kill", key, "--reason", reason, "--actor", actor,
              "--store", url])  # fmt: skip
        print("$ tipkit ops audit")
        main(["ops", "audit", "--store", url])
    return out.getvalue()


_DOC = {
    "flags": {
        "new-checkout": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        },
        "recommendations": {
            "variants": {"on": True, "off": False},
            "default_variant": "on",
            "off_variant": "off",
        },
    }
}


def run_ending(seed: int) -> str:
    """Play the ending on a virtual clock with *seed*; return what the operator saw."""
    from tipkit.flags import Flags, InMemoryProvider  # noqa: PLC0415  # demo only
    from tipkit.rollout import ErrorRateCheck, Rollout, Tripwire  # noqa: PLC0415
    from tipkit.stores import MemoryStore  # noqa: PLC0415
    from tipkit.testing import FakeClock  # noqa: PLC0415

    rng = random.Random(seed)  # noqa: S311  # a simulation, not a secret
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    flags = Flags(InMemoryProvider(_DOC), store=store, clock=clock)
    rollout = Rollout(
        "pricing-v2",
        flags=flags,
        stages=[5, 25, 50, 100],
        min_samples=100,
        min_stage_duration=30.0,
        checks=[ErrorRateCheck()],
        clock=clock,
        runbook="https://runbooks.example/pricing-v2",
    )
    for i in range(20_000):  # the canary fails 20 % of requests, control 1 %
        with rollout.observe(f"user-{i}") as arm:
            clock.advance(0.01)
            if rng.random() < (0.2 if arm.is_canary else 0.01):
                arm.fail()
        if rollout.percent == 0.0:
            break
    wire = Tripwire(
        flags, "new-checkout", max_error_rate=0.3, minimum_calls=20, clock=clock
    )
    for _ in range(100):  # the new checkout path fails half its calls
        if not flags.is_enabled("new-checkout"):
            break
        with contextlib.suppress(RuntimeError), wire:
            clock.advance(0.05)
            if rng.random() < 0.5:
                raise RuntimeError("new checkout failed")
    return operator_ending(store, flags, "recommendations")
