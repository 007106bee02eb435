"""Fuzzing: no document loads slowly or raises anything but ConfigError; no evaluation escapes.

Loads run here (each bounded in CPU time under the default limits). Evaluations
run in a child process, so a crash (a segfault in a C extension) fails the test
instead of killing the run.
"""

import contextlib
import json
import subprocess
import sys
import textwrap
import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tipkit.errors import ConfigError
from tipkit.flags import Flags
from tipkit.flags._document import load_text

SEED = """\
segments:
  staff: {include: [alice, bob], if: {attr: email, op: ends_with, value: "@x.io"}}
flags:
  new-checkout:
    description: the new checkout
    variants: {on: true, off: false}
    default_variant: off
    off_variant: off
    rules:
      - id: staff
        if: {segment: staff}
        serve: on
      - id: nz
        if: {attr: country, op: in, value: [NZ, AU]}
        serve: {split: {on: 10, off: 90}}
      - if: {attr: email, op: matches, value: "^[^@\\\\s]+@x\\\\.io$"}
        serve: on
    fallthrough: {split: {on: 1.5, off: 98.5}}
  limit:
    variants: {low: 10, high: 1000}
    default_variant: low
"""

FRAGMENTS = [
    "&a ",
    "*a",
    "&b [*a, *a, *a, *a, *a, *a, *a, *a]",
    "!!python/object/apply:os.system ['id']",
    "!!binary aGk=",
    "!!set {a, b}",
    "!!int",
    "!!float",
    "<<: *a",
    "\t",
    "\x00",
    "\ufeff",
    "\u202e",
    "\ud7ff",
    "\U0001d54f",  # a double-struck X, outside the BMP
    "9" * 5000,
    "1" * 400,
    "1e999",
    ".nan",
    "017",
    "12:30:00",
    "yes",
    "[" * 300,
    "{" * 300,
    "- " * 300,
    "? [a, b]\n: c\n",
    "flags: {}\n",
    "new-checkout: {}\n",
    "variants: {on: true}\n",
    "---\n",
    "%YAML 1.1\n---\n",
    "'",
    '"',
    "\\",
    ": ",
    "#",
    "|\n  x",
    "a{9999999999}",
    "(a+)+$",
    "\n",
    "  ",
]


@st.composite
def mutated_yaml(draw: st.DrawFn) -> str:
    text = SEED
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 40)) :]
        elif action == "repeat":
            chunk = text[pos : pos + draw(st.integers(1, 60))]
            text = text[:pos] + chunk * draw(st.integers(2, 50)) + text[pos:]
        else:
            frag = draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)))
            end = pos + (draw(st.integers(1, 10)) if action == "replace" else 0)
            text = text[:pos] + frag + text[end:]
    return text


def load_bounded(text: str, fmt: str) -> None:
    start = time.process_time()
    try:
        load_text(text, f"f.{fmt}", fmt=fmt)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = ()
    # every refusal says what and where
    assert all(p.source == f"f.{fmt}" for p in problems)
    assert time.process_time() - start <= 1.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_yaml())
def test_mutated_yaml_loads_or_is_a_config_error_within_a_second(text):
    """Any mutation of a flag file loads or is a ConfigError, within 1 s of CPU."""
    load_bounded(text, "yaml")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_yaml())
def test_mutated_json_loads_or_is_a_config_error_within_a_second(text):
    """JSON built from mutated documents (and the raw mutations) behaves the same."""
    load_bounded(text, "json")
    try:
        doc = json.dumps(yaml.safe_load(text))
    except (yaml.YAMLError, TypeError, ValueError, RecursionError):
        return  # PyYAML's own view of the mutation fails or is not JSON: skip it
        return
    load_bounded(doc, "json")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**320), max_value=10**320)
    | st.floats()
    | st.text(st.characters(codec=None), max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.integers() | st.booleans(), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["flags", "segments", "version", "x"]),
        st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3) | JSON_VALUES,
        max_size=3,
    )
)
def test_random_dicts_load_or_are_a_config_error(doc):
    """from_dict of any data is a Flags or a ConfigError, never another exception."""
    with contextlib.suppress(ConfigError):
        Flags.from_dict(doc)


CHILD = textwrap.dedent(
    r"""
    import sys
    from hypothesis import HealthCheck, given, settings, strategies as st
    from tipkit.errors import ConfigError
    from tipkit.flags import EvaluationContext, Flags, Reason

    PER_DOC = int(sys.argv[2])
    evaluations = 0
    escapes = []

    text = st.text(st.characters(codec=None), max_size=12)  # lone surrogates included
    scalar = (
        st.none() | st.booleans() | text
        | st.integers(min_value=-(10**400), max_value=10**400)
        | st.floats() | st.binary(max_size=4)
    )
    value = st.recursive(
        scalar,
        lambda i: st.lists(i, max_size=3) | st.dictionaries(text, i, max_size=3),
        max_leaves=6,
    )
    ops = st.sampled_from(["eq", "ne", "in", "not_in", "contains", "starts_with", "ends_with",
        "matches", "lt", "le", "gt", "ge", "semver_eq", "semver_gt", "before", "after", "exists"])
    cond_value = value | st.sampled_from(
        ["2.3.0", "2026-01-01T00:00:00Z", "^a+$", "NZ", ["NZ", "AU"]]
    )
    attrs = st.sampled_from(["country", "email", "version", "targeting_key", "n", "\ud800"])
    cond = st.fixed_dictionaries({"attr": attrs, "op": ops, "value": cond_value})
    variants = st.dictionaries(text.filter(bool), value, min_size=1, max_size=3)

    @st.composite
    def documents(draw):
        flags = {}
        for i in range(draw(st.integers(1, 3))):
            vs = draw(variants)
            names = list(vs)
            even = 100 % len(names) == 0
            split = {n: 100 / len(names) for n in names} if even else {names[0]: 100}
            serve = st.sampled_from([names[0], {"split": split}])
            rules = [
                {"if": draw(cond), "serve": draw(serve)}
                for _ in range(draw(st.integers(0, 3)))
            ]
            flag = {
                "variants": vs,
                "default_variant": draw(st.sampled_from(names)),
                "rules": rules,
            }
            if draw(st.booleans()):
                flag["bucket_by"] = draw(attrs)
            if draw(st.booleans()):
                flag["off_variant"] = names[-1]
            key = draw(text.filter(bool)) if draw(st.booleans()) else f"f{i}"
            flags[key] = flag
        return {"flags": flags}

    big = st.integers(min_value=-(10**30), max_value=10**30)
    keys = text | big | st.none() | st.booleans() | st.floats() | st.binary(max_size=3)
    contexts = (
        keys
        | st.dictionaries(text | attrs, value, max_size=4)
        | st.builds(EvaluationContext, keys, st.dictionaries(attrs | text, value, max_size=4))
    )
    defaults = st.sampled_from([None, False, True, 0, 0.5, "s", {}, []]) | value

    @settings(max_examples=int(sys.argv[1]), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(documents(), st.lists(st.tuples(contexts, defaults), min_size=1, max_size=5))
    def run(doc, cases):
        global evaluations
        flags = None
        for attempt in range(3):  # hostile documents first; then plainer ones that load
            try:
                flags = Flags.from_dict(doc)
                break
            except ConfigError:
                for f in doc["flags"].values():
                    f.pop("rules", None) if attempt == 0 else f.update(
                        variants={"on": True, "off": False}, default_variant="on",
                        off_variant="off")
        if flags is None:
            return
        names = [*flags.keys(), "missing", "\ud800"]
        for i in range(PER_DOC):
            ctx, default = cases[i % len(cases)]
            key = names[i % len(names)]
            try:
                flags.is_enabled(key, ctx)
                flags.get(key, ctx, default)
                d = flags.evaluate(key, ctx, default)
                flags.assign(key, ctx)
                flags.explain(key, ctx)
                evaluations += 5
                if d.reason is Reason.ERROR and d.error_code is None:
                    escapes.append(("no error code", key, ctx))
            except Exception as exc:
                escapes.append((type(exc).__name__, repr(key), repr(ctx)[:80], repr(default)[:40]))

    run()
    print(evaluations, len(escapes))
    for e in escapes[:5]:
        print(e)
    sys.exit(1 if escapes else 0)
    """
)


def run_child(examples: int, per_doc: int) -> int:
    proc = subprocess.run(  # noqa: S603  # our own child script, run by this interpreter
        [sys.executable, "-c", CHILD, str(examples), str(per_doc)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert 0 == proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:]
    evaluations, escapes = map(int, proc.stdout.split("\n", 1)[0].split())
    assert 0 == escapes
    return evaluations


def test_a_hundred_thousand_hostile_evaluations_never_escape_or_crash():
    """At least 10**5 evaluations over hostile keys, contexts and documents: zero escapes, no crash.

    About 15 s, so not marked slow: it runs with the rest of the suite.
    """
    assert run_child(examples=60, per_doc=400) >= 100_000
