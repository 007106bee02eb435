"""The linter behind `tipkit flags check`: warnings distinct from errors."""

from pathlib import Path

import pytest

from tipkit._cli import main
from tipkit.flags._document import load_text
from tipkit.flags._lint import lint, split_moves
from tipkit.flags._yaml import parse_yaml

DOC = """\
segments:
  staff: {include: [a]}
  unused: {include: [b]}
flags:
  f:
    variants: {on: yes, off: no}
    default_variant: off
    rules:
      - if: {attr: beta, op: eq, value: yes}
        serve: on
      - if: {attr: beta, op: eq, value: yes}
        serve: off
      - if: {all: [{attr: c, op: eq, value: NZ}, {attr: c, op: eq, value: AU}]}
        serve: on
      - if: {segment: staff}
        serve: on
  g:
    variants: {a: 1, b: 2, c: 3}
    off_variant: a
    fallthrough: {split: {a: 20, b: 40, c: 40}}
"""


def warnings_of(
    text: str, previous: str | None = None
) -> list[tuple[str, int | None, str | None, str | None]]:
    doc, _ = parse_yaml(text)
    flag_set = load_text(text, "f.yaml", fmt="yaml")
    old = None if previous is None else load_text(previous, "old.yaml", fmt="yaml")
    return [(w.code, w.line, w.flag, w.field) for w in lint(doc, flag_set, old)]


def test_every_warning_kind_with_its_position():
    """YAML 1.1 words, kills without off_variant, shadowed and impossible rules, unused segments."""
    assert [
        ("unused-segment", 3, None, "segments.unused"),
        ("kill-serves-default", 5, "f", "off_variant"),
        ("yaml11-word", 6, "f", "variants"),
        ("yaml11-word", 9, "f", "rules[0].if.value"),
        ("rule-never-matches", 11, "f", "rules[1]"),
        ("yaml11-word", 11, "f", "rules[1].if.value"),
        ("rule-never-matches", 13, "f", "rules[2].if"),
    ] == warnings_of(DOC)


def test_a_clean_document_has_no_warnings():
    """A flag with booleans, an off_variant and distinct rules draws no warning."""
    text = (
        "flags:\n  f:\n    variants: {on: true, off: false}\n    default_variant: off\n"
        "    off_variant: off\n"
    )
    assert [] == warnings_of(text)


def test_split_change_that_moves_other_users_warns():
    """Growing the first variant out of the last moves users between the unchanged ones."""
    new = DOC.replace("a: 20, b: 40, c: 40", "a: 30, b: 40, c: 30")
    found = [w for w in warnings_of(new, DOC) if w[0] == "split-moves-users"]
    assert [("split-moves-users", 18, "g", "fallthrough")] == found


def test_split_change_of_a_sticky_flag_does_not_warn_unless_the_epoch_changes():
    """A sticky flag keeps served users whatever the weights: no warning at one epoch."""
    sticky = DOC.replace("  g:\n", "  g:\n    sticky: 1\n")
    assert sticky != DOC
    new = sticky.replace("a: 20, b: 40, c: 40", "a: 30, b: 40, c: 30")
    assert [] == [w for w in warnings_of(new, sticky) if w[0] == "split-moves-users"]
    bumped = new.replace("sticky: 1", "sticky: 2")
    found = [w[0] for w in warnings_of(bumped, sticky) if w[0] == "split-moves-users"]
    assert ["split-moves-users"] == found


def test_split_change_between_neighbours_does_not_warn():
    """Moving weight between neighbouring variants moves only the users it must."""
    new = DOC.replace("a: 20, b: 40, c: 40", "a: 20, b: 30, c: 50")
    assert [] == [w for w in warnings_of(new, DOC) if w[0] == "split-moves-users"]


def test_split_moves_counts_thousandths():
    """split_moves returns moved and needed in thousandths of a percent."""
    old = load_text(DOC, "x", fmt="yaml").flags["g"].fallthrough
    new = load_text(
        DOC.replace("a: 20, b: 40, c: 40", "a: 30, b: 40, c: 30"), "x", fmt="yaml"
    )
    assert (20_000, 10_000) == split_moves(old, new.flags["g"].fallthrough)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    old = tmp_path / "old.yaml"
    old.write_text(DOC)
    new = tmp_path / "new.yaml"
    new.write_text(DOC.replace("a: 20, b: 40, c: 40", "a: 30, b: 40, c: 30"))
    return old, new


def test_check_exits_zero_with_warnings_and_one_when_strict(files, capsys):
    """Warnings print with file:line:column and code; exit 0, or 1 with --strict."""
    old, new = files
    assert 0 == main(["flags", "check", str(new), "--against", str(old)])
    out = capsys.readouterr().out.splitlines()
    assert (
        f"warning: {new}:3:3, field 'segments.unused': "
        "segment 'unused' is not used by any flag [unused-segment]" == out[0]
    )
    assert any("[split-moves-users]" in line for line in out)
    assert out[-1].startswith(f"ok: {new}: 2 flags, 2 segments, 8 warnings")
    assert 1 == main(["flags", "check", str(new), "--strict"])


def test_check_errors_are_sorted_with_columns_and_suggest_keys(tmp_path, capsys):
    """Errors come sorted by line and column; a misspelt key gets a suggestion."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "flags:\n  f:\n    variants: {on: true}\n    fallthorugh: on\n"
        "  g:\n    variants: {on: true}\n    default_variant: nope\n"
    )
    assert 1 == main(["flags", "check", str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"error: {path}:2:3, flag 'f'")
    assert (
        f"error: {path}:4:5, flag 'f', field 'fallthorugh': "
        "unknown key 'fallthorugh'; did you mean 'fallthrough'?" in out[1]
    )
    assert out[2].startswith(f"error: {path}:7:5, flag 'g', field 'default_variant'")
