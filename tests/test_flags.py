import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from tipkit.errors import ConfigError
from tipkit.flags import (
    ErrorCode,
    EvaluationContext,
    EvaluationDetail,
    FlagEvaluated,
    FlagProvider,
    Flags,
    InMemoryProvider,
    ProviderNotReadyError,
    Reason,
    _outcomes,
)
from tipkit.flags._testing import fake_flags, flag_definition
from tipkit.stores import MemoryStore
from tipkit.telemetry import _names
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events

BOOL = {"variants": {"on": True, "off": False}}

DOC: dict[str, Any] = {
    "version": 1,
    "flags": {
        "static": {**BOOL, "default_variant": "on"},
        "static-split": {
            **BOOL,
            "salt": "new-checkout",
            "fallthrough": {"split": {"on": 50, "off": 50}},
        },
        "targeted": {
            **BOOL,
            "default_variant": "off",
            "rules": [
                {
                    "id": "nz",
                    "if": {"attr": "country", "op": "eq", "value": "NZ"},
                    "serve": "on",
                }
            ],
        },
        "targeted-split": {
            **BOOL,
            "salt": "new-checkout",
            "default_variant": "off",
            "rules": [
                {
                    "id": "nz",
                    "if": {"attr": "country", "op": "eq", "value": "NZ"},
                    "serve": {"split": {"on": 50, "off": 50}},
                }
            ],
            "fallthrough": {"split": {"on": 0, "off": 100}},
        },
        "disabled-off": {
            **BOOL,
            "state": "disabled",
            "default_variant": "on",
            "off_variant": "off",
        },
        "disabled-bare": {**BOOL, "state": "disabled", "default_variant": "on"},
        "algo": {
            "variants": {"v1": "v1", "v2": "v2"},
            "default_variant": "v2",
            "off_variant": "v1",
        },
        "int": {
            "variants": {"a": 10, "big": 2**53 + 1, "huge": 10**30, "zero": 0},
            "default_variant": "a",
        },
        "float": {"variants": {"a": 10.0, "b": 0.5}, "default_variant": "a"},
        "half": {"variants": {"a": 10.0, "b": 0.5}, "default_variant": "b"},
        "empty": {"variants": {"e": ""}, "default_variant": "e"},
        "falsy": {**BOOL, "default_variant": "off"},
        "zero": {"variants": {"z": 0}, "default_variant": "z"},
        "obj": {"variants": {"a": {"limits": [1, 2]}}, "default_variant": "a"},
        "bucket-attr": {
            **BOOL,
            "bucket_by": "org",
            "fallthrough": {"split": {"on": 50, "off": 50}},
        },
    },
}


@pytest.fixture
def flags(clock: FakeClock) -> Flags:
    return Flags(InMemoryProvider(DOC), clock=clock)


# -- reasons -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "ctx", "reason", "variant"),
    [
        ("static", "u1", Reason.STATIC, "on"),
        ("static-split", "user-42", Reason.SPLIT, "on"),
        ("targeted", {"country": "NZ"}, Reason.TARGETING_MATCH, "on"),
        ("targeted", {"country": "AU"}, Reason.DEFAULT, "off"),
        (
            "targeted-split",
            {"targeting_key": "user-42", "country": "NZ"},
            Reason.SPLIT,
            "on",
        ),
        (
            "targeted-split",
            {"targeting_key": "user-42", "country": "AU"},
            Reason.SPLIT,
            "off",
        ),
        ("disabled-off", "u", Reason.DISABLED, "off"),
    ],
)
def test_reasons(flags, key, ctx, reason, variant):
    """Each shape of flag gives the OpenFeature reason the issue specifies."""
    detail = flags.evaluate(key, ctx, default=False)
    assert (reason, variant, None) == (detail.reason, detail.variant, detail.error_code)


def test_rule_id_reported(flags):
    """A matching rule's id is in the detail; a fallthrough has none."""
    assert "nz" == flags.evaluate("targeted", {"country": "NZ"}).rule_id
    assert flags.evaluate("targeted", {"country": "FR"}).rule_id is None


def test_disabled_without_off_variant_gives_caller_default(flags):
    """A disabled flag without off_variant serves the caller's default with no variant."""
    detail = flags.evaluate("disabled-bare", "u", default=True)
    assert (
        EvaluationDetail(
            "disabled-bare",
            True,
            None,
            Reason.DISABLED,
            flag_version=detail.flag_version,
        )
        == detail
    )
    assert False is flags.is_enabled("disabled-bare", "u")


def test_flag_version_is_content_hash(flags):
    """flag_version is stable for the same definition and changes with it."""
    v1 = flags.evaluate("static").flag_version
    assert v1 is not None
    assert len(v1) == 12
    doc = copy.deepcopy(DOC)
    doc["flags"]["static"]["default_variant"] = "off"
    assert v1 != Flags.from_dict(doc).evaluate("static").flag_version
    assert v1 == Flags.from_dict(DOC).evaluate("static").flag_version


# -- errors -----------------------------------------------------------------------
def test_flag_not_found(flags):
    """An unknown flag gives the caller's default with FLAG_NOT_FOUND."""
    detail = flags.evaluate("nope", "u", default="d")
    assert ("d", Reason.ERROR, ErrorCode.FLAG_NOT_FOUND) == (
        detail.value,
        detail.reason,
        detail.error_code,
    )
    assert "nope" in (detail.error_message or "")


def test_targeting_key_missing_only_when_split_reached(flags):
    """No key: a split answers TARGETING_KEY_MISSING; a flag that never splits needs none."""
    d = flags.evaluate("static-split", None, default=True)
    assert (True, Reason.ERROR, ErrorCode.TARGETING_KEY_MISSING) == (
        d.value,
        d.reason,
        d.error_code,
    )
    assert (True, Reason.STATIC) == (
        flags.get("static", None, default=False),
        flags.evaluate("static").reason,
    )
    assert (
        ErrorCode.TARGETING_KEY_MISSING == flags.evaluate("bucket-attr", "u").error_code
    )


@pytest.mark.parametrize("key", [1.5, ["x"], {"a": 1}, True, b"bytes"])
def test_bucket_key_of_other_types_is_invalid_context(flags, key):
    """A bucket key that is not a str or int is INVALID_CONTEXT."""
    d = flags.evaluate("static-split", EvaluationContext(key), default=False)
    assert (False, ErrorCode.INVALID_CONTEXT) == (d.value, d.error_code)


def test_int_bucket_key_is_str(flags):
    """An int targeting key buckets as str(key)."""
    assert flags.get("static-split", 12345) == flags.get("static-split", "12345")
    assert flags.get("bucket-attr", {"org": 7}) == flags.get(
        "bucket-attr", {"org": "7"}
    )


@pytest.mark.parametrize(
    "ctx",
    [
        object(),
        3.5,
        ["a"],
        b"u",
        EvaluationContext("u", {"nested": {"deep": [1, {"x": None}]}}),
    ],
)
def test_malformed_contexts_never_raise(flags, ctx):
    """Odd contexts give a value or the caller's default with an error, never an exception."""
    for key in DOC["flags"]:
        detail = flags.evaluate(key, ctx, default=None)
        assert detail.reason in set(Reason)


def test_non_mapping_context_is_invalid_context(flags):
    """A context of an unsupported type is INVALID_CONTEXT."""
    assert ErrorCode.INVALID_CONTEXT == flags.evaluate("static", object()).error_code


class Hostile(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Any:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


class HostileValue:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    __hash__ = object.__hash__


def test_hostile_context_objects(flags):
    """A mapping that raises, or values whose __eq__ raises, give the default with an error."""
    d = flags.evaluate("targeted", Hostile(), default=False)
    assert (False, Reason.ERROR, ErrorCode.INVALID_CONTEXT) == (
        d.value,
        d.reason,
        d.error_code,
    )
    d = flags.evaluate("targeted", {"country": HostileValue()}, default=False)
    assert (False, Reason.ERROR, ErrorCode.GENERAL) == (d.value, d.reason, d.error_code)
    assert False is flags.is_enabled("targeted", {"country": HostileValue()})


def test_huge_strings(flags):
    """A megabyte targeting key or attribute evaluates normally."""
    big = "x" * 1_000_000
    assert flags.evaluate("static-split", big).reason is Reason.SPLIT
    assert flags.evaluate("targeted", {"country": big}).reason is Reason.DEFAULT


def test_unhashable_flag_key(flags):
    """A flag key that is not a string is an error, not an exception."""
    d = flags.evaluate(["x"], "u", default=1)  # type: ignore[arg-type]
    assert (1, ErrorCode.GENERAL) == (d.value, d.error_code)
    assert flags.get(None, "u", default=1) == 1  # type: ignore[arg-type]


class _HostileKey(str):
    __slots__ = ()

    def __hash__(self) -> int:
        raise RuntimeError

    def __repr__(self) -> str:
        raise RuntimeError


class _HostileObject:
    def __hash__(self) -> int:
        raise RuntimeError

    def __repr__(self) -> str:
        raise RuntimeError


@pytest.mark.parametrize("key", [_HostileKey("static-split"), _HostileObject()])
def test_hostile_flag_key(flags, key):
    """A flag key whose hash and repr raise gives the default, never the exception."""
    d = flags.evaluate(key, "u", default=1)
    assert (1, Reason.ERROR, ErrorCode.GENERAL) == (d.value, d.reason, d.error_code)
    assert flags.is_enabled(key, "u", default=True) is True
    assert flags.get(key, "u", default=1) == 1


# -- types --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "default", "value", "code"),
    [
        ("static", 0, 0, ErrorCode.TYPE_MISMATCH),  # bool is not an int
        ("int", False, False, ErrorCode.TYPE_MISMATCH),  # nor an int a bool
        ("int", 0.0, 10.0, None),  # int served for a float default is a float
        ("float", 0, 10, None),  # integral float for an int default is an int
        ("half", 0, 0, ErrorCode.TYPE_MISMATCH),  # 0.5 for an int default
        ("algo", 0, 0, ErrorCode.TYPE_MISMATCH),
        ("static", "x", "x", ErrorCode.TYPE_MISMATCH),
        ("obj", [], [], ErrorCode.TYPE_MISMATCH),
        ("obj", {}, {"limits": [1, 2]}, None),
    ],
)
def test_type_rules(flags, key, default, value, code):
    """Values are converted or refused by the precise type rules of the issue."""
    detail = flags.evaluate(key, "u", default=default)
    assert (value, type(value), code) == (
        detail.value,
        type(detail.value),
        detail.error_code,
    )
    if code is not None:
        assert Reason.ERROR == detail.reason
        assert detail.flag_version is not None


def test_type_mismatch_via_get(flags):
    """get() answers the default on a type mismatch."""
    assert 7 == flags.get("static", "u", default=7)
    assert 10 == flags.get("float", "u", default=1)
    assert isinstance(flags.get("int", "u", default=1.0), float)


def test_falsy_values_are_values(flags):
    """False, 0 and "" are served values, never absences."""
    assert False is flags.get("falsy", "u", default=True)
    assert 0 == flags.get("zero", "u", default=5)
    assert "" == flags.get("empty", "u", default="x")
    assert Reason.STATIC == flags.evaluate("empty", "u", default="x").reason


def test_big_ints_exact(clock):
    """Integers at and beyond 2**53 come back exact."""
    doc = copy.deepcopy(DOC)
    for name in ("big", "huge"):
        doc["flags"]["int"]["default_variant"] = name
        value = Flags(InMemoryProvider(doc), clock=clock).get("int", "u", default=0)
        assert DOC["flags"]["int"]["variants"][name] == value
        assert type(value) is int


def test_default_none_returns_value_as_is(flags):
    """Without a default, the value is returned as served."""
    assert "v2" == flags.get("algo")
    assert 10 == flags.get("int")


def test_object_values_are_copies(flags):
    """Mutating an object value never changes what later evaluations serve."""
    first = flags.get("obj", default={})
    first["limits"].append(3)
    assert {"limits": [1, 2]} == flags.get("obj", default={})
    assert {"limits": [1, 2]} == flags.get("obj")


def test_context_forms_agree(flags):
    """A key string, a dict, and an EvaluationContext give the same results."""
    for i in range(50):
        k = f"user-{i}"
        a = flags.get("targeted-split", {"targeting_key": k, "country": "NZ"})
        b = flags.get("targeted-split", EvaluationContext(k, {"country": "NZ"}))
        assert a == b
        assert flags.get("static-split", k) == flags.get(
            "static-split", EvaluationContext(k)
        )


def test_mapping_subclass_context(flags):
    """A non-dict Mapping works as a context."""
    from types import MappingProxyType

    assert flags.is_enabled("targeted", MappingProxyType({"country": "NZ"})) is True


def test_is_enabled_and_get_agree_with_evaluate(flags):
    """The inlined fast paths give what evaluate() gives, errors included."""
    for key in [*DOC["flags"], "missing"]:
        for ctx in (
            "user-42",
            None,
            {"country": "NZ", "targeting_key": "x"},
            EvaluationContext("y"),
        ):
            assert flags.evaluate(key, ctx, default=False).value == flags.is_enabled(
                key, ctx
            )
            assert flags.evaluate(key, ctx, default="s").value == flags.get(
                key, ctx, default="s"
            )


# -- overrides, kills ----------------------------------------------------------
def test_precedence_kill_disabled_override_rules(flags):
    """Kill > disabled > override > rules."""
    with flags.override("targeted", "on"):
        d = flags.evaluate("targeted", {"country": "FR"})
        assert ("on", Reason.STATIC) == (d.variant, d.reason)
        flags.kill("targeted")
        d = flags.evaluate("targeted", {"country": "FR"}, default=True)
        assert (True, None, Reason.DISABLED) == (d.value, d.variant, d.reason)
        flags.revive("targeted")
        assert Reason.STATIC == flags.evaluate("targeted").reason
    with flags.override("disabled-off", "on"):
        assert Reason.DISABLED == flags.evaluate("disabled-off").reason
    assert Reason.DEFAULT == flags.evaluate("targeted", {"country": "FR"}).reason


def test_kill_serves_off_variant(flags):
    """A killed flag with an off_variant serves it, reason DISABLED."""
    flags.kill("algo")
    d = flags.evaluate("algo", "u", default="zzz")
    assert ("v1", "v1", Reason.DISABLED) == (d.value, d.variant, d.reason)
    assert frozenset({"algo"}) == flags.killed()


def test_override_by_value_and_unknown_value(flags):
    """An override value matching a variant serves it; another value has no variant."""
    with flags.override("static", False):
        d = flags.evaluate("static", default=True)
        assert (False, "off") == (d.value, d.variant)
    with flags.override("algo", "v9"):
        d = flags.evaluate("algo", default="x")
        assert ("v9", None, Reason.STATIC) == (d.value, d.variant, d.reason)
    with flags.override("algo", 3):
        assert ErrorCode.TYPE_MISMATCH == flags.evaluate("algo", default="x").error_code


def test_nested_overrides_restore(flags):
    """Nested overrides of one flag restore in order."""
    with flags.override("algo", "v1"):
        with flags.override("algo", "v2"):
            assert "v2" == flags.get("algo")
        assert "v1" == flags.get("algo")
        assert Reason.STATIC == flags.evaluate("algo").reason


def test_override_of_unknown_flag(flags):
    """An override can define a flag the provider lacks (tests)."""
    with flags.override("brand-new", 5):
        assert 5 == flags.get("brand-new", default=0)
    assert ErrorCode.FLAG_NOT_FOUND == flags.evaluate("brand-new").error_code


def test_local_overrides(clock):
    """Constructor overrides apply to this instance, below store overrides."""
    flags = Flags(InMemoryProvider(DOC), overrides={"algo": "v1"}, clock=clock)
    assert ("v1", Reason.STATIC) == (flags.get("algo"), flags.evaluate("algo").reason)
    with flags.override("algo", "v2"):
        assert "v2" == flags.get("algo")
    assert "v1" == flags.get("algo")


def test_kill_reaches_peers_sharing_a_store_at_once(clock):
    """A kill through one Flags is seen by another sharing the store on its next evaluation."""
    store = MemoryStore(clock=clock)
    a = Flags(InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=60)
    b = Flags(InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=60)
    assert b.is_enabled("static") is True
    a.kill("static")
    assert False is b.is_enabled("static")
    a.revive("static")
    assert b.is_enabled("static") is True


def test_store_written_elsewhere_seen_after_refresh_interval(clock):
    """A write to the store by another process is picked up within refresh_interval."""
    store = MemoryStore(clock=clock, push=False)
    flags = Flags(InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=5)
    assert flags.is_enabled("static") is True
    store.set("flags", "kill/static", True)  # as another process would
    assert flags.is_enabled("static") is True
    clock.advance(4.9)
    assert flags.is_enabled("static") is True
    clock.advance(0.1)
    assert False is flags.is_enabled("static")


def test_store_read_only_when_due(clock):
    """Evaluations do not read the store: at most one version check per refresh_interval."""

    class CountingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__(clock=clock)
            self.reads = 0

        def version(self, namespace: str) -> int:
            self.reads += 1
            return super().version(namespace)

    store = CountingStore()
    flags = Flags(InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=1)
    assert 0 == store.reads  # building never touches the store
    for _ in range(1000):
        flags.is_enabled("static")
    assert 1 == store.reads
    clock.advance(1)
    flags.is_enabled("static")
    assert 2 == store.reads


def test_failing_store_keeps_last_state(clock):
    """A store that fails keeps the last known kills (a killed flag stays killed)."""

    class FlakyStore(MemoryStore):
        broken = False

        def version(self, namespace: str) -> int:
            if self.broken:
                raise OSError("down")
            return super().version(namespace)

    store = FlakyStore(clock=clock)
    flags = Flags(InMemoryProvider(DOC), store=store, clock=clock)
    flags.kill("static")
    assert False is flags.is_enabled("static")
    store.broken = True
    clock.advance(5)
    assert False is flags.is_enabled("static")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_kill_refuses_bad_keys(flags, bad):
    """kill/revive/override name the bad key."""
    with pytest.raises(ValueError, match="flag key"):
        flags.kill(bad)


# -- providers that fail ---------------------------------------------------------------
class NotReady(FlagProvider):
    def __init__(self) -> None:
        super().__init__()
        self.ready: InMemoryProvider | None = None

    def current(self, now: float) -> Any:
        if self.ready is None:
            raise ProviderNotReadyError("warming up")
        return self.ready.current(now)


class Broken(FlagProvider):
    def current(self, now: float) -> Any:
        raise RuntimeError("kaput")


def test_provider_not_ready_then_ready(clock):
    """A provider that is not ready gives PROVIDER_NOT_READY; once ready, flags are served."""
    provider = NotReady()
    flags = Flags(provider, clock=clock)
    d = flags.evaluate("static", "u", default=True)
    assert (True, ErrorCode.PROVIDER_NOT_READY) == (d.value, d.error_code)
    provider.ready = InMemoryProvider(DOC)
    provider._changed()
    assert Reason.STATIC == flags.evaluate("static").reason


def test_broken_provider_is_general(clock, caplog):
    """A provider that raises gives GENERAL and the app keeps running."""
    flags = Flags(Broken(), clock=clock)
    d = flags.evaluate("static", "u", default=True)
    assert (True, ErrorCode.GENERAL, Reason.ERROR) == (d.value, d.error_code, d.reason)
    assert "kaput" not in (d.error_message or "")
    assert "<Flags" in repr(flags)


def test_provider_must_be_a_provider():
    """Flags refuses something that is not a FlagProvider."""
    with pytest.raises(TypeError, match="FlagProvider"):
        Flags({"flags": {}})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"namespace": ""}, ValueError, "Flags: namespace must be a non-empty str"),
        ({"namespace": 5}, TypeError, "Flags: namespace must be a non-empty str"),
        ({"refresh_interval": -1}, ValueError, "Flags: refresh_interval must be >= 0"),
        ({"refresh_interval": float("nan")}, ValueError, "finite"),
        ({"refresh_interval": "1"}, TypeError, "Flags: refresh_interval"),
        ({"clock": object()}, TypeError, "Flags: clock must provide monotonic"),
    ],
)
def test_bad_arguments_are_refused_with_the_shared_validators(kwargs, error, match):
    """Namespace, refresh interval and clock are checked as every constructor checks them."""
    with pytest.raises(error, match=match):
        Flags(InMemoryProvider(DOC), **kwargs)


def test_in_memory_set_flag_seen_next_evaluation(flags):
    """set_flag applies on the next evaluation; an invalid change raises and changes nothing."""
    provider = flags.provider
    assert isinstance(provider, InMemoryProvider)
    provider.set_flag("static", {**BOOL, "default_variant": "off"})
    assert False is flags.is_enabled("static")
    with pytest.raises(ConfigError, match="unknown variant"):
        provider.set_flag("static", {**BOOL, "default_variant": "maybe"})
    assert False is flags.is_enabled("static")
    provider.remove_flag("static")
    assert ErrorCode.FLAG_NOT_FOUND == flags.evaluate("static").error_code
    provider.replace({"flags": {"x": {**BOOL, "default_variant": "on"}}})
    assert ["x"] == flags.keys()
    assert "x" in provider.document()["flags"]


# -- telemetry ---------------------------------------------------------------------------
def test_event_published_with_otel_attributes(flags):
    """FlagEvaluated carries the detail; otel_attributes never include the context."""
    with capture_events(FlagEvaluated) as events:
        flags.is_enabled("targeted", {"country": "NZ", "email": "a@b.c"})
        flags.get("missing", "secret-user", default=1)
    ok, err = events
    assert ("targeted", True, "on", Reason.TARGETING_MATCH, "nz") == (
        ok.name,
        ok.value,
        ok.variant,
        ok.reason,
        ok.rule_id,
    )
    assert {"country": "NZ", "email": "a@b.c"} == dict(ok.context.attributes)
    attrs = ok.otel_attributes()
    assert {
        _names.FEATURE_FLAG_KEY: "targeted",
        _names.FEATURE_FLAG_VARIANT: "on",
        _names.FEATURE_FLAG_REASON: "targeting_match",
        _names.FEATURE_FLAG_PROVIDER: "tipkit",
        _names.FEATURE_FLAG_VERSION: ok.flag_version,
    } == attrs
    assert "feature_flag.evaluation" == FlagEvaluated.otel_name
    eattrs = err.otel_attributes()
    assert "flag_not_found" == eattrs[_names.ERROR_TYPE]
    assert "error" == eattrs[_names.FEATURE_FLAG_REASON]
    assert _names.FEATURE_FLAG_ERROR_MESSAGE in eattrs
    assert "secret-user" not in repr(eattrs)
    assert "secret-user" == err.context.targeting_key


def test_no_event_built_without_listeners(flags, monkeypatch):
    """With nobody listening for FlagEvaluated, no event object is built."""
    built = []
    monkeypatch.setattr(_outcomes, "publish", lambda *a: built.append(a))
    flags.is_enabled("static")
    assert [] == built


def test_listener_errors_do_not_break_evaluation(flags):
    """A listener that raises never reaches the caller."""
    from tipkit.telemetry._events import BUS

    def bad(_e: Any) -> None:
        raise RuntimeError("listener")

    BUS.add_listener(bad, types=FlagEvaluated)
    try:
        assert flags.is_enabled("static") is True
    finally:
        BUS.remove_listener(bad)


def test_counter_per_key_variant_reason(flags):
    """tipkit.flag.evaluations counts per (key, variant, reason)."""
    attrs = {
        _names.FEATURE_FLAG_KEY: "targeted",
        _names.FEATURE_FLAG_VARIANT: "on",
        _names.FEATURE_FLAG_REASON: "targeting_match",
    }
    before = REGISTRY.value(_names.FLAG_EVALUATIONS, attrs)
    for _ in range(3):
        flags.is_enabled("targeted", {"country": "NZ"})
    assert before + 3 == REGISTRY.value(_names.FLAG_EVALUATIONS, attrs)
    err = {_names.FEATURE_FLAG_KEY: "nope-counter", _names.ERROR_TYPE: "flag_not_found"}
    flags.get("nope-counter")
    assert REGISTRY.value(_names.FLAG_EVALUATIONS, err) == 1


# -- gate -----------------------------------------------------------------------------
class User:
    def __init__(self, uid: str, country: str) -> None:
        self.id = uid
        self.country = country


def old_checkout(order: int, user: User) -> str:
    return f"old {order}"


def test_gate_sync(flags):
    """Gate runs the new code for users the flag is on for, else the fallback."""

    @flags.gate(
        "targeted",
        fallback=old_checkout,
        context=lambda order, user: {"targeting_key": user.id, "country": user.country},
    )
    def new_checkout(order: int, user: User) -> str:
        return f"new {order}"

    assert "new 1" == new_checkout(1, User("a", "NZ"))
    assert "old 2" == new_checkout(2, User("b", "FR"))
    assert "new_checkout" == new_checkout.__name__


def test_gate_without_fallback_returns_none(flags):
    """An off gate without a fallback returns None."""

    @flags.gate("falsy")
    def work() -> str:
        return "ran"

    assert work() is None


def test_gate_context_function_raising_uses_default(flags):
    """A context function that raises treats the flag as default."""

    @flags.gate("static", fallback=lambda: "fallback", context=lambda: 1 / 0)
    def work() -> str:
        return "ran"

    assert "fallback" == work()
    with capture_events(FlagEvaluated) as events:
        work()
    assert ErrorCode.INVALID_CONTEXT == events[0].error_code


def test_gate_async(flags):
    """Gate works on async functions with sync or async fallbacks."""

    async def afallback(user: User) -> str:
        return "old-async"

    @flags.gate(
        "targeted", fallback=afallback, context=lambda user: {"country": user.country}
    )
    async def new(user: User) -> str:
        return "new"

    @flags.gate(
        "targeted",
        fallback=lambda user: "old-sync",
        context=lambda user: {"country": user.country},
    )
    async def new2(user: User) -> str:
        return "new"

    @flags.gate("targeted", context={"country": "FR"})
    async def new3() -> str:
        return "new"

    async def main() -> list[Any]:
        return [
            await new(User("a", "NZ")),
            await new(User("a", "FR")),
            await new2(User("a", "FR")),
            await new3(),
        ]

    assert ["new", "old-async", "old-sync", None] == asyncio.run(main())


# -- fake_flags ---------------------------------------------------------------------
def test_fake_flags_records_and_overrides():
    """fake_flags serves values, records evaluations and supports override()."""
    flags = fake_flags({"new-checkout": True, "checkout-algo": "v2"})
    assert flags.is_enabled("new-checkout", "u") is True
    assert "v2" == flags.get("checkout-algo", default="v1")
    with flags.override("new-checkout", False):
        assert False is flags.is_enabled("new-checkout")
    assert [True, False] == [e.value for e in flags.evaluated("new-checkout")]
    assert 3 == len(flags.evaluations)
    assert isinstance(flags, Flags)


def test_fake_flags_splits_work():
    """Percentage splits work in fake_flags, unlike LaunchDarkly's TestData."""
    flags = fake_flags(
        {
            "exp": {
                **BOOL,
                "salt": "new-checkout",
                "fallthrough": {"split": {"on": 50, "off": 50}},
            }
        }
    )
    assert flags.is_enabled("exp", "user-42") is True
    assert False is flags.is_enabled("exp", "user-43")
    assert Reason.SPLIT == flags.evaluations[-1].reason


def test_fake_flags_document_and_memory():
    """fake_flags accepts a whole document and exposes its provider for changes."""
    flags = fake_flags(
        {"b": 1},
        document={"flags": {"a": {**BOOL, "default_variant": "on"}}, "segments": {}},
    )
    assert (True, 1) == (flags.is_enabled("a"), flags.get("b", default=0))
    flags.memory.set_flag("a", {**BOOL, "default_variant": "off"})
    assert False is flags.is_enabled("a")


def test_flag_definition_shapes():
    """flag_definition turns plain values into one-variant flags."""
    assert {
        "variants": {"on": True, "off": False},
        "default_variant": "off",
    } == flag_definition(False)
    assert {"variants": {"value": 3}, "default_variant": "value"} == flag_definition(3)


def test_repr_and_introspection(flags):
    """Repr shows configuration and live state."""
    flags.kill("static")
    text = repr(flags)
    assert "killed=1" in text
    assert "ready" in text
    assert "static" in flags.keys()  # noqa: SIM118  # Flags.keys() is a method, not a dict
    assert flags.flag_set is not None
    assert "EvaluationContext(targeting_key='k'" in repr(
        EvaluationContext("k", {"a": 1})
    )
    assert EvaluationContext("k", {"a": 1}) == EvaluationContext("k", {"a": 1})
    assert EvaluationContext("k") != "k"


def test_explain(flags):
    """Explain lists the rules tried and the bucket."""
    ex = flags.explain("targeted-split", {"targeting_key": "user-42", "country": "NZ"})
    assert 44470 == ex.bucket
    assert "user-42" == ex.bucket_key
    assert any("matched" in s for s in ex.steps)
    assert "not defined" in flags.explain("zzz").steps[0]
    flags.kill("static")
    assert "killed" in flags.explain("static").steps[0]
