"""Every example of the learning pages runs: tutorial, landing, FAQ, adoption, doctor, testing.

A page's ``python`` blocks run in order in one namespace (as a reader pastes
them into one session), in a temporary directory; a block fenced
```` ```python continue-on-error ```` is not used. ``docs/testing.md`` is a
test module: its blocks are written to a file and run by pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = ["index", "tutorial", "faq", "adoption", "doctor"]


def blocks(page: str) -> list[str]:
    """Return the python blocks of docs/<page>.md, in order."""
    return FENCE.findall((DOCS / f"{page}.md").read_text(encoding="utf-8"))


def run_page(page: str, where: Path) -> dict[str, object]:
    """Run *page*'s blocks in one namespace inside *where*; return the namespace."""
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    old = Path.cwd()
    os.chdir(where)
    sys.modules.pop("shop", None)
    try:
        for i, code in enumerate(blocks(page), 1):
            try:
                exec(compile(code, f"docs/{page}.md block {i}", "exec"), namespace)  # noqa: S102  # the docs' own examples
            except Exception as exc:
                pytest.fail(f"docs/{page}.md block {i} raised {exc!r}:\n{code}")
    finally:
        os.chdir(old)
    return namespace


# The tutorial's blocks run (once: they simulate two rollouts) in the test below.
@pytest.mark.parametrize("page", [p for p in PAGES if p != "tutorial"])
def test_page_examples_run(page: str, tmp_path: Path) -> None:
    """Each page has examples and every one of them runs, in order."""
    assert blocks(page), f"docs/{page}.md has no python example"
    run_page(page, tmp_path)


def test_tutorial_ends_with_a_guarded_rollout(tmp_path: Path) -> None:
    """Every tutorial example runs; its bad change is rolled back, its good one promoted."""
    assert blocks("tutorial"), "docs/tutorial.md has no python example"
    ns = run_page("tutorial", tmp_path)
    assert "rolled_back" == ns["bad_status"]
    assert 100.0 == ns["good_percent"]


def test_testing_page_is_a_passing_test_module(tmp_path: Path) -> None:
    """docs/testing.md's blocks, written out as one module, pass under pytest."""
    module = tmp_path / "test_from_docs.py"
    module.write_text("\n\n".join(blocks("testing")), encoding="utf-8")
    proc = subprocess.run(  # noqa: S603  # our own interpreter on our own file
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    assert re.search(r"\b(\d+) passed", proc.stdout)
