"""Flag documents as OpenFeature sees them: empty default variants refused, metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from tipkit.errors import ConfigError
from tipkit.flags import Flags


@pytest.mark.parametrize(
    "body", ["default_variant: null", "default_variant:", "default_variant: ~"]
)
def test_an_empty_default_variant_is_refused_with_file_line_flag_field(
    tmp_path: Path, body: str
) -> None:
    """An empty ``default_variant`` is a ConfigError naming file, line, flag and field."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "version: 1\nflags:\n  x:\n    variants: {on: true, off: false}\n"
        f"    {body}\n"
    )
    with pytest.raises(ConfigError) as caught:
        Flags.from_file(path)
    message = str(caught.value)
    assert f"{path}:5:" in message
    assert "flag 'x'" in message
    assert "field 'default_variant'" in message
    assert "empty" in message


def test_an_empty_default_variant_is_refused_even_with_a_fallthrough(
    tmp_path: Path,
) -> None:
    """An explicit null is a mistake even when ``fallthrough`` says what to serve."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "version: 1\nflags:\n  x:\n    variants: {on: true, off: false}\n"
        "    default_variant: null\n    fallthrough: on\n"
    )
    with pytest.raises(ConfigError) as caught:
        Flags.from_file(path)
    assert "field 'default_variant'" in str(caught.value)
