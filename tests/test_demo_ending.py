"""The demo ends with the audit log of automatic actions and an operator's CLI kill."""

from __future__ import annotations

import time

from tipkit.ops._demo_end import run_ending


def test_the_ending_shows_the_automatic_and_the_human_actions() -> None:
    """tipkit:rollout rolled back, tipkit:tripwire killed, on-call killed from the CLI."""
    start = time.process_time()
    text = run_ending(7)
    took = time.process_time() - start
    audit_lines = text.split("$ tipkit ops audit\n", 1)[1].splitlines()
    actors = [line.split()[2] for line in audit_lines if line.strip()]
    actions = [line.split()[3] for line in audit_lines if line.strip()]
    assert ["tipkit:rollout", "tipkit:tripwire", "on-call"] == actors
    assert ["rollout.rollback", "flag.kill", "flag.kill"] == actions
    assert "killed=False -> killed=True" in text
    assert took < 5.0  # a small part of the demo's 10 s CPU budget
