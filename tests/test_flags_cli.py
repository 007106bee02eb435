import textwrap
from pathlib import Path

import pytest

from tipkit._cli import main

GOOD = textwrap.dedent(
    """\
    version: 1
    flags:
      new-checkout:
        variants: {on: true, off: false}
        default_variant: off
        rules:
          - id: nz-canary
            if:
              all:
                - {attr: country, op: in, value: [NZ, AU]}
                - {attr: app_version, op: semver_ge, value: "2.3.0"}
            serve: {split: {on: 10, off: 90}}
          - id: beta
            if: {segment: beta-testers}
            serve: on
        fallthrough: {split: {on: 1.5, off: 98.5}}
      plain:
        variants: {a: 1}
        default_variant: a
    segments:
      beta-testers:
        include: [user-1]
    """
)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "flags.yaml"
    path.write_text(GOOD)
    return path


def test_check_ok(good, capsys):
    """Check exits 0 for a valid file."""
    assert 0 == main(["flags", "check", str(good)])
    assert "ok:" in capsys.readouterr().out


def test_check_lists_every_problem(tmp_path, capsys):
    """Check exits 1 and prints every problem with its location."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        GOOD.replace("op: in", "op: inn").replace(
            "default_variant: a", "default_variant: b"
        )
    )
    assert main(["flags", "check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert 2 == len(out)
    assert (
        f"error: {path}:10:31, flag 'new-checkout', field 'rules[0].if.all[0].op'"
        in out[0]
    )
    assert "flag 'plain', field 'default_variant'" in out[1]


def test_explain_split(good, capsys):
    """Explain prints variant, reason, rule and bucket, and why."""
    code = main(
        [
            "flags",
            "explain",
            str(good),
            "new-checkout",
            "--key",
            "user-42",
            "--attr",
            "country=NZ",
            "--attr",
            "app_version=2.4.0",
        ]
    )
    out = capsys.readouterr().out
    assert 0 == code
    assert "reason:  SPLIT" in out
    assert "rule:    nz-canary" in out
    assert "bucket:  " in out
    assert "rule 'nz-canary': matched" in out


def test_explain_segment_and_json_attrs(good, capsys):
    """Explain reads attribute values as JSON when they parse."""
    assert 0 == main(
        [
            "flags",
            "explain",
            str(good),
            "new-checkout",
            "--key",
            "user-1",
            "--attr",
            "n=3",
        ]
    )
    out = capsys.readouterr().out
    assert "reason:  TARGETING_MATCH" in out
    assert "'n': 3" in out


def test_explain_missing_key(good, capsys):
    """Without a key, a split is explained as TARGETING_KEY_MISSING."""
    assert 0 == main(["flags", "explain", str(good), "new-checkout"])
    out = capsys.readouterr().out
    assert "TARGETING_KEY_MISSING" in out


def test_explain_unknown_flag_and_bad_file(good, tmp_path, capsys):
    """Explain and buckets fail with 1 for an unknown flag or a bad file."""
    assert main(["flags", "explain", str(good), "nope", "--key", "k"]) == 1
    assert main(["flags", "buckets", str(good), "nope"]) == 1
    assert main(["flags", "explain", str(tmp_path / "missing.yaml"), "x"]) == 1
    assert main(["flags", "buckets", str(tmp_path / "missing.yaml"), "x"]) == 1
    out = capsys.readouterr().out
    assert "not in" in out
    assert "not found" in out


def test_explain_bad_attr(good):
    """An --attr without '=' is a usage error."""
    with pytest.raises(SystemExit):
        main(["flags", "explain", str(good), "plain", "--attr", "oops"])


def test_buckets(good, capsys):
    """Buckets shows observed shares beside the configured weights."""
    assert 0 == main(
        ["flags", "buckets", str(good), "new-checkout", "--sample", "20000"]
    )
    out = capsys.readouterr().out
    assert "rule 'nz-canary':" in out
    assert "fallthrough:" in out
    assert "10.000%" in out
    assert "1.500%" in out


def test_buckets_without_split_and_bad_sample(good, capsys):
    """Buckets says when there is no split, and refuses a non-positive sample."""
    assert 0 == main(["flags", "buckets", str(good), "plain"])
    assert 2 == main(["flags", "buckets", str(good), "new-checkout", "--sample", "0"])
    assert "no percentage split" in capsys.readouterr().out


def test_flags_without_subcommand(capsys):
    """`tipkit flags` alone prints help and exits 2."""
    assert 2 == main(["flags"])
    assert "check" in capsys.readouterr().out
