"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The quick start block executes and gates some, not all, users."""
    if not README.is_file():  # pragma: no cover - the suite runs from a checkout
        pytest.skip("README.md is not beside the tests")
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Quick start\n\n```python\n(.*?)```", text, re.DOTALL)
    assert block is not None
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 15
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # noqa: S102  # our own README
    lines = capsys.readouterr().out.splitlines()
    assert 0 < len(lines) < 4
    assert all(line.endswith("charged 9.99") for line in lines)
