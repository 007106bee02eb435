"""Compiled flags are compact and their inlined hash is the bucketing formula."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tipkit.flags import Flags, bucket


def _load_benchmark() -> Any:
    """Import benchmarks/flags_load.py by path (benchmarks/ on sys.path would shadow redis)."""
    path = Path(__file__).parent.parent / "benchmarks" / "flags_load.py"
    spec = importlib.util.spec_from_file_location("tipkit_bench_flags_load", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


document = _load_benchmark().document  # the benchmark's reference document

MEASURE = """
import gc, sys, tracemalloc
from tipkit.flags import Flags, Limits
gc.collect()
tracemalloc.start()
flags = Flags.from_file(sys.argv[1], limits=Limits(max_flags=10**5))
flags.provider.close()
gc.collect()
print(len(flags.keys()), tracemalloc.get_traced_memory()[0])
"""


@pytest.mark.slow  # loads the 10,000-flag reference document (about 10 s)
def test_reference_document_keeps_at_most_2_kb_per_flag(tmp_path: Path):
    """The issue's 10k-flag shape keeps <= 2 KB per flag once loaded (own process)."""
    n = 10_000
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document(n)))
    out = subprocess.run(  # noqa: S603  # our own interpreter and script
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert n == int(out[0])
    assert int(out[1]) / n <= 2048, f"{int(out[1]) / n:.0f} bytes per flag"


def split_doc(weights: dict[str, int], bucket_by: str | None = None) -> dict:
    flag: dict = {
        "variants": {name: name for name in weights},
        "fallthrough": {"split": weights},
        "salt": "s\ud800alt",
    }
    if bucket_by:
        flag["bucket_by"] = bucket_by
    return {"flags": {"f": flag}}


@settings(max_examples=300, deadline=None)
@given(key=st.text(st.characters(codec=None), max_size=20), cut=st.integers(0, 100))
def test_inlined_two_way_split_agrees_with_the_bucketing_formula(key: str, cut: int):
    """Two-way splits hash inline; they serve exactly what bucket() says, surrogates too."""
    flags = Flags.from_dict(split_doc({"a": cut, "b": 100 - cut}))
    by = Flags.from_dict(split_doc({"a": cut, "b": 100 - cut}, bucket_by="device"))
    expected = "a" if bucket("s\ud800alt", key) < cut * 1000 else "b"
    assert expected == flags.get("f", key)
    assert expected == by.get("f", {"targeting_key": "x", "device": key})


@settings(max_examples=100, deadline=None)
@given(key=st.text(max_size=20))
def test_equal_flags_share_one_split_table_and_variant_map(key: str):
    """Shared objects stay correct: each flag still serves its own bucket."""
    doc = {
        "flags": {
            f"f{i}": split_doc({"a": 30, "b": 70})["flags"]["f"] | {"salt": f"s{i}"}
            for i in range(3)
        }
    }
    flags = Flags.from_dict(doc)
    fs = flags.flag_set
    assert fs is not None
    f0, f1 = fs.flags["f0"], fs.flags["f1"]
    assert f0.variants is f1.variants
    assert f0.fallthrough.outcomes[0].split is f1.fallthrough.outcomes[0].split
    assert [("a" if bucket(f"s{i}", key) < 30_000 else "b") for i in range(3)] == [
        flags.get(f"f{i}", key) for i in range(3)
    ]


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.text(st.characters(codec=None), max_size=20), st.integers()),
    cut=st.integers(0, 100),
    country=st.sampled_from(["NZ", "AU", "US"]),
)
def test_one_rule_split_runner_agrees_with_the_formula(
    key: Any, cut: int, country: str
):
    """A one-rule flag runs rule and split in one closure: same answers as bucket()."""
    doc = {
        "flags": {
            "f": {
                "variants": {"on": True, "off": False},
                "default_variant": "off",
                "rules": [
                    {
                        "if": {"attr": "country", "op": "in", "value": ["NZ", "AU"]},
                        "serve": {"split": {"on": cut, "off": 100 - cut}},
                    }
                ],
            }
        }
    }
    flags = Flags.from_dict(doc)
    detail = flags.evaluate("f", {"targeting_key": key, "country": country})
    if country == "US":
        assert (False, "DEFAULT") == (detail.value, detail.reason)
    else:
        assert (bucket("f", str(key)) < cut * 1000, "SPLIT") == (
            detail.value,
            detail.reason,
        )
