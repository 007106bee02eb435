r"""Hostile strings never crash the process or raise out of evaluation.

mmh3 segfaults on a ``str`` it cannot encode as UTF-8 (a lone surrogate, which
``json.loads('"\\ud800"')`` returns), so each path runs in a child process: a
crash fails the test instead of killing the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.flags import Flags, bucket
from tipkit.flags._bucketing import bucket_of

SURROGATES = ["\ud800", "\udfff", "a\udc80b", "\ud83d", "x" * 40 + "\udcff"]

CHILD = textwrap.dedent(
    r"""
    import json, sys
    from tipkit import MemoryStore
    from tipkit.flags import EvaluationContext, Flags, bucket
    from tipkit.experiment import Experiment
    from tipkit.rollout import Rollout
    from tipkit.testing import FakeClock

    bad = json.loads(sys.argv[1])
    doc = {"flags": {
        "x": {"variants": {"on": True, "off": False},
              "fallthrough": {"split": {"on": 50, "off": 50}}},
        "by": {"variants": {"on": True, "off": False}, "bucket_by": "org",
               "fallthrough": {"split": {"on": 50, "off": 50}}},
        bad: {"variants": {"on": True, "off": False},
              "fallthrough": {"split": {"on": 50, "off": 50}}},
        "r": {"variants": {"on": True, "off": False}, "default_variant": "off",
              "fallthrough": {"split": {"on": 1, "off": 99}}},
    }}
    flags = Flags.from_dict(doc)
    out = []
    out.append(flags.is_enabled("x", bad))
    out.append(flags.get("x", bad, False))
    out.append(flags.evaluate("x", bad, False).reason)
    out.append(flags.is_enabled("by", EvaluationContext("u", {"org": bad})))
    out.append(flags.is_enabled("by", {"targeting_key": "u", "org": bad}))
    out.append(flags.is_enabled(bad, "user"))
    out.append(flags.is_enabled("x", b"\xff\xfe".decode("utf-8", "surrogateescape")))
    out.append(flags.explain("x", bad).bucket)
    out.append(bucket(bad, bad))

    @flags.gate("x", context=lambda u: u)
    def gated(u):
        return "ran"
    out.append(gated(bad))

    clock = FakeClock()
    rollout = Rollout("r", flags=flags, clock=clock, stages=[1, 100])
    with rollout.observe(bad):
        pass

    exp = Experiment("e", control=lambda k: k, candidate=lambda k: k,
                     sample=50.0, sample_key=lambda k: k)
    out.append(exp(bad))
    print(json.dumps([str(o) for o in out]))
    """
)


@pytest.mark.parametrize("bad", SURROGATES, ids=repr)
def test_lone_surrogates_do_not_crash_any_path(bad):
    """Every path the hostile-input issue names survives a lone surrogate."""
    proc = subprocess.run(  # noqa: S603  # our own interpreter, our own script
        [sys.executable, "-c", CHILD, json.dumps(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    results = json.loads(proc.stdout)
    assert 11 == len(results)


def test_surrogate_buckets_are_surrogatepass_utf8():
    """A lone surrogate is hashed as its surrogatepass UTF-8 bytes (the spec)."""
    import mmh3

    raw = "k.\ud800".encode("utf-8", "surrogatepass")
    expected = (mmh3.hash(raw, 0, signed=False) * 100_000) >> 32
    assert expected == bucket("k", "\ud800")
    assert expected == bucket_of("k.", "\ud800")


@settings(max_examples=300)
@given(st.text())
def test_valid_text_hashes_as_before(text):
    """For text that is valid UTF-8, the bucket is of mmh3 of the UTF-8 bytes, unchanged."""
    import mmh3

    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    assert (mmh3.hash(raw, 0, signed=False) * 100_000) >> 32 == bucket_of("", text)


def test_surrogate_flag_key_loads_and_evaluates_from_json(tmp_path):
    """A flag key with a lone surrogate in a JSON file evaluates without crashing."""
    path = tmp_path / "flags.json"
    path.write_text(
        '{"flags": {"\\ud800": {"variants": {"on": true, "off": false},'
        ' "fallthrough": {"split": {"on": 50, "off": 50}}}}}'
    )
    flags = Flags.from_file(path)
    code = (
        "import sys; from tipkit.flags import Flags;"
        "f = Flags.from_file(sys.argv[1]);"
        "print(f.is_enabled('\\ud800', 'u'), f.is_enabled('\\ud800', '\\udc00'))"
    )
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    assert "\ud800" in flags.keys()  # noqa: SIM118  # Flags is no mapping
