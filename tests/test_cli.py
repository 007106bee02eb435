"""The `tipkit` command, run in-process."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tipkit
from tipkit._cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tipkit {tipkit.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """With no command, the help is printed and the exit code is 0."""
    assert main([]) == 0
    assert "usage: tipkit" in capsys.readouterr().out


def test_help_lists_usage(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 with usage."""
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "Safety primitives" in capsys.readouterr().out


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits 2 with a usage error."""
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m() -> None:
    """`python -m tipkit --version` runs the same CLI."""
    out = subprocess.run(
        [sys.executable, "-m", "tipkit", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"tipkit {tipkit.__version__}"
