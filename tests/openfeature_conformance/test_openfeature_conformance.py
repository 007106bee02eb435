"""The OpenFeature gherkin suites (vendored, see README.md) run against TipkitProvider.

The flags the suites expect (``test-flags.json``) are translated into one tipkit
flag document; each scenario gets its own SDK domain and provider.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagEvaluationOptions
from openfeature.hook import Hook, HookContext
from openfeature.provider import ProviderStatus
from pytest_bdd import given, parsers, scenarios, then, when

from tipkit.errors import ConfigError
from tipkit.flags import FileProvider, FlagProvider, Flags, InMemoryProvider
from tipkit.flags import ProviderNotReadyError as TipkitNotReady
from tipkit.flags.openfeature import TipkitProvider
from tipkit.testing import FakeClock

HERE = Path(__file__).parent

scenarios("evaluation_v2.feature", "metadata.feature", "evaluation.feature")

# -- the suites' flags as a tipkit document ------------------------------------------
EMAIL_IS_BALLMER = {"attr": "email", "op": "eq", "value": "ballmer@macrosoft.com"}
RULES = {
    # contextEvaluator: email == 'ballmer@macrosoft.com' ? 'zero' : ''
    "zero": [{"id": "ballmer", "if": EMAIL_IS_BALLMER, "serve": "zero"}],
    # contextEvaluator: !customer && email == '...' && age > 10 ? 'internal' : ''
    "internal": [
        {
            "id": "internal",
            "if": {
                "all": [
                    {"attr": "customer", "op": "eq", "value": False},
                    EMAIL_IS_BALLMER,
                    {"attr": "age", "op": "gt", "value": 10},
                ]
            },
            "serve": "internal",
        }
    ],
}
REFUSED = ("null-default-flag", "undefined-default-flag")
"""Flags tipkit refuses at load (no default variant); no vendored scenario uses them."""


def tipkit_document() -> dict[str, Any]:
    """Translate test-flags.json (flagd's shape) into a tipkit flag document."""
    source = json.loads((HERE / "test-flags.json").read_text())
    flags: dict[str, Any] = {}
    for key, spec in source.items():
        if key in REFUSED:
            continue
        flag: dict[str, Any] = {
            "variants": spec["variants"],
            "default_variant": spec["defaultVariant"],
        }
        if spec.get("disabled"):
            flag["state"] = "disabled"
        if spec.get("flagMetadata"):
            flag["metadata"] = spec["flagMetadata"]
        evaluator = spec.get("contextEvaluator")
        if evaluator is not None:
            flag["rules"] = RULES["internal" if "customer" in evaluator else "zero"]
        flags[key] = flag
    return {"version": 1, "flags": flags}


def test_the_refused_flags_are_refused_and_unused() -> None:
    """Tipkit refuses a flag without default variant; the suites never evaluate one."""
    source = json.loads((HERE / "test-flags.json").read_text())
    assert set(REFUSED) <= set(source)
    for feature in HERE.glob("*.feature"):
        for key in REFUSED:
            assert key not in feature.read_text()


# -- scenario state -------------------------------------------------------------------
class Blocked(FlagProvider):
    """A tipkit flag source still loading: initialize waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False  # set once Flags is built: initialize then waits
        self.release = threading.Event()

    def current(self, now: float) -> Any:
        if self.armed:
            self.release.wait(timeout=30)
        raise TipkitNotReady("still loading")


class Recorder(Hook):
    """A hook recording the stages it ran, in order."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    def before(self, hook_context: HookContext, hints: Any) -> None:
        self.seen.append(f"{self.name}.before")

    def after(self, hook_context: HookContext, details: Any, hints: Any) -> None:
        self.seen.append(f"{self.name}.after")

    def finally_after(
        self, hook_context: HookContext, details: Any, hints: Any
    ) -> None:
        self.seen.append(f"{self.name}.finally_after")


class State:
    """What one scenario has built so far."""

    def __init__(self, domain: str, tmp_path: Path) -> None:
        self.domain = domain
        self.tmp_path = tmp_path
        self.kind = "Boolean"
        self.key = ""
        self.default: Any = None
        self.attributes: dict[str, Any] = {}
        self.context: OFContext | None = None
        self.context_copy: OFContext | None = None
        self.details: FlagEvaluationDetails[Any] | None = None
        self.hooks_seen: list[str] = []
        self.options: FlagEvaluationOptions | None = None
        self.blocked: list[Blocked] = []

    @property
    def client(self) -> Any:
        return api.get_client(self.domain)


@pytest.fixture
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[State]:
    """One SDK domain per scenario, its providers shut down afterwards."""
    st = State(f"conformance-{request.node.nodeid}", tmp_path)
    yield st
    for blocked in st.blocked:
        blocked.release.set()
    api.shutdown()


def _parse(kind: str, text: str) -> Any:
    text = text.replace('\\"', '"')
    if kind == "Boolean":
        return {"true": True, "false": False}[text]
    if kind == "Integer":
        return int(text)
    if kind == "Float":
        return float(text)
    if kind == "Object":
        return json.loads(text) if text else {}
    return text


# -- given ------------------------------------------------------------------------------
@given(parsers.re(r"a (?P<status>stable|not ready|error|fatal|stale) provider"))
def a_provider(state: State, status: str) -> None:
    """Register a TipkitProvider in the state the scenario names."""
    clock = FakeClock()
    if status == "stable":
        flags = Flags(InMemoryProvider(tipkit_document()), clock=clock)
        api.set_provider_and_wait(TipkitProvider(flags, watch=None), state.domain)
    elif status == "not ready":
        blocked = Blocked()
        state.blocked.append(blocked)
        provider = TipkitProvider(Flags(blocked, clock=clock))
        blocked.armed = True
        api.set_provider(provider, state.domain)
    elif status == "error":  # a source with nothing to serve: initialize fails
        blocked = Blocked()
        blocked.release.set()
        with pytest.raises(Exception, match="no flags"):
            api.set_provider_and_wait(
                TipkitProvider(Flags(blocked, clock=clock)), state.domain
            )
    elif status == "stale":  # the flag file broke after a good load
        path = state.tmp_path / "flags.json"
        path.write_text(json.dumps(tipkit_document()))
        source = FileProvider(path)
        api.set_provider_and_wait(
            TipkitProvider(Flags(source, clock=clock), watch=3600.0), state.domain
        )
        path.write_text("{ not json")
        with pytest.raises(ConfigError):
            source.reload()
    else:
        pytest.skip(f"@provider-status-fatal: tipkit has no {status} state")


@given(
    parsers.re(
        r'a (?P<kind>\w+)-flag with key "(?P<key>[^"]*)" '
        r'and a fallback value "(?P<default>.*)"'
    )
)
def a_flag(state: State, kind: str, key: str, default: str) -> None:
    """Remember the flag, its type and the fallback."""
    state.kind, state.key, state.default = kind, key, _parse(kind, default)


@given(
    parsers.re(
        r'a context containing a key "(?P<key>[^"]*)", with type "(?P<kind>\w+)" '
        r'and with value "(?P<value>.*)"'
    )
)
def a_typed_attribute(state: State, key: str, kind: str, value: str) -> None:
    """Add a typed attribute to the evaluation context."""
    state.attributes[key] = _parse(kind, value)


@given(parsers.parse('a context containing a key "{key}" with null value'))
def a_null_attribute(state: State, key: str) -> None:
    """Add an attribute whose value is null."""
    state.attributes[key] = None


@given("evaluation options containing specific hooks")
def options_with_hooks(state: State) -> None:
    """Two recording hooks passed in the evaluation options."""
    hooks: list[Hook] = [
        Recorder("first", state.hooks_seen),
        Recorder("second", state.hooks_seen),
    ]
    state.options = FlagEvaluationOptions(hooks=hooks)


@given("an evaluation context with modifiable data")
def modifiable_context(state: State) -> None:
    """A context whose attributes hold mutable values."""
    state.context = OFContext("user-1", {"tags": ["a", "b"], "nested": {"x": 1}})
    state.context_copy = copy.deepcopy(state.context)


# -- when -------------------------------------------------------------------------------
def _context(state: State) -> OFContext | None:
    if state.context is not None:
        return state.context
    return OFContext(None, dict(state.attributes)) if state.attributes else None


def _method(state: State, suffix: str = "") -> Any:
    name = state.kind.lower()
    return getattr(state.client, f"get_{name}_details{suffix}")


@when("the flag was evaluated with details")
def evaluated(state: State) -> None:
    """Evaluate through the SDK's typed details method."""
    state.details = _method(state)(state.key, state.default, _context(state))


@when("the flag was evaluated with details using the evaluation options")
def evaluated_with_options(state: State) -> None:
    """Evaluate with the scenario's evaluation options."""
    state.details = _method(state)(
        state.key, state.default, _context(state), state.options
    )


@when("the flag was evaluated with details asynchronously")
def evaluated_async(state: State) -> None:
    """Evaluate through the SDK's async client method on a real event loop."""
    state.details = asyncio.run(
        _method(state, "_async")(state.key, state.default, _context(state))
    )


# -- then -------------------------------------------------------------------------------
def _details(state: State) -> FlagEvaluationDetails[Any]:
    assert state.details is not None
    return state.details


@then(parsers.re(r'the resolved details value should be "(?P<value>.*)"'))
def value_is(state: State, value: str) -> None:
    """The value, parsed as the flag's type."""
    expected = _parse(state.kind, value)
    actual = _details(state).value
    assert expected == actual
    assert type(expected) is type(actual)


@then(parsers.parse('the reason should be "{reason}"'))
def reason_is(state: State, reason: str) -> None:
    """The reason."""
    assert reason == _details(state).reason


@then(parsers.parse('the error-code should be "{code}"'))
def error_code_is(state: State, code: str) -> None:
    """The error code."""
    error_code = _details(state).error_code
    assert error_code is not None
    assert code == error_code.value


@then(parsers.parse('the flag key should be "{key}"'))
def flag_key_is(state: State, key: str) -> None:
    """The flag key."""
    assert key == _details(state).flag_key


@then(parsers.parse('the variant should be "{variant}"'))
def variant_is(state: State, variant: str) -> None:
    """The variant."""
    assert variant == _details(state).variant


TIPKIT_KEYS = frozenset({"flag_version", "rule_id"})
"""flag_metadata keys tipkit adds to every answer (documented in docs/flags.md)."""


@then("the resolved metadata should contain")
def metadata_contains(state: State, datatable: list[list[str]]) -> None:
    """Each row's key holds the typed value."""
    header, *rows = datatable
    assert ["key", "metadata_type", "value"] == header
    meta = _details(state).flag_metadata
    for key, kind, value in rows:
        expected = _parse(kind, value)
        assert expected == meta[key]
        assert type(expected) is type(meta[key])


@then("the resolved metadata is empty")
def metadata_is_empty(state: State) -> None:
    """No metadata but tipkit's own keys (``flag_version``, ``rule_id``)."""
    meta = _details(state).flag_metadata
    assert set() == set(meta) - TIPKIT_KEYS


@then(parsers.parse('the provider status should be "{status}"'))
def status_is(state: State, status: str) -> None:
    """The client's provider status."""
    assert ProviderStatus(status) == state.client.get_provider_status()


@then("the specified hooks should execute during evaluation")
def hooks_ran(state: State) -> None:
    """Every stage of both hooks ran."""
    assert 6 == len(state.hooks_seen)


@then("the hook order should be maintained")
def hook_order(state: State) -> None:
    """Before in order; after and finally in reverse (spec 4.4.2)."""
    expected = [
        "first.before",
        "second.before",
        "second.after",
        "first.after",
        "second.finally_after",
        "first.finally_after",
    ]
    assert expected == state.hooks_seen


@then("the original evaluation context should remain unmodified")
def context_unmodified(state: State) -> None:
    """The caller's context is as it was."""
    assert state.context_copy == state.context


@then("the evaluation details should be immutable")
def details_immutable(state: State) -> None:
    """The provider's part of the details, flag_metadata, cannot be changed."""
    meta = _details(state).flag_metadata
    with pytest.raises(TypeError):
        meta["flag_version"] = "changed"  # type: ignore[index]


@then("the evaluation should complete without blocking")
def completed(state: State) -> None:
    """The async evaluation returned details."""
    assert state.details is not None
