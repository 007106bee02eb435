"""tipkit as an OpenFeature provider, through the real SDK's client."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import threading
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.evaluation_context import (
    clear_evaluation_context,
    set_evaluation_context,
)
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ProviderNotReadyError as OFProviderNotReadyError
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.hook import Hook, HookContext
from openfeature.provider import ProviderStatus

from tipkit.clock import SystemClock
from tipkit.flags import (
    ErrorCode,
    FlagProvider,
    Flags,
    InMemoryProvider,
    ProviderNotReadyError,
    Reason,
)
from tipkit.flags.openfeature import ERROR_CODES, REASONS, TipkitProvider
from tipkit.stores import MemoryStore
from tipkit.testing import FakeClock

BOOL = {"variants": {"on": True, "off": False}}

DOC: dict[str, Any] = {
    "version": 1,
    "flags": {
        "static": {**BOOL, "default_variant": "on"},
        "targeted": {
            **BOOL,
            "default_variant": "off",
            "rules": [
                {
                    "id": "staff",
                    "if": {"attr": "email", "op": "ends_with", "value": "@example.com"},
                    "serve": "on",
                }
            ],
        },
        "split": {
            **BOOL,
            "salt": "new-checkout",
            "fallthrough": {"split": {"on": 50, "off": 50}},
        },
        "bucket-attr": {
            **BOOL,
            "bucket_by": "org",
            "fallthrough": {"split": {"on": 50, "off": 50}},
        },
        "disabled-off": {
            **BOOL,
            "state": "disabled",
            "default_variant": "on",
            "off_variant": "off",
        },
        "disabled-bare": {**BOOL, "state": "disabled", "default_variant": "on"},
        "color": {"variants": {"red": "red", "blue": "blue"}, "default_variant": "red"},
        "limit": {"variants": {"ten": 10, "big": 2**53 + 1}, "default_variant": "ten"},
        "whole": {"variants": {"ten": 10.0}, "default_variant": "ten"},
        "half": {"variants": {"half": 0.5}, "default_variant": "half"},
        "config": {
            "variants": {"a": {"retries": 3, "hosts": ["a", "b"]}},
            "default_variant": "a",
        },
        "hosts": {"variants": {"a": ["x", "y"]}, "default_variant": "a"},
    },
}


@pytest.fixture
def flags(clock: FakeClock) -> Flags:
    return Flags(InMemoryProvider(DOC), clock=clock)


@pytest.fixture
def domain(request: pytest.FixtureRequest) -> Any:
    """A domain of its own for each test; every provider is shut down afterwards."""
    yield f"tipkit-test-{request.node.name}"
    api.clear_providers()


@pytest.fixture
def client(flags: Flags, domain: str) -> Any:
    api.set_provider_and_wait(TipkitProvider(flags), domain)
    return api.get_client(domain)


def ctx(key: str | None = None, **attributes: Any) -> OFContext:
    return OFContext(targeting_key=key, attributes=attributes)


class Seen:
    """Collects event details; the SDK runs handlers on its own executor thread."""

    def __init__(self) -> None:
        self.details: list[EventDetails] = []
        self.arrived = threading.Event()

    def __call__(self, details: EventDetails) -> None:
        self.details.append(details)
        self.arrived.set()

    def wait(self) -> list[EventDetails]:
        assert SystemClock().wait_event(self.arrived, 10.0)
        return self.details


def summary(d: FlagEvaluationDetails[Any]) -> tuple[Any, ...]:
    return (d.value, d.variant, d.reason, d.error_code)


# -- the vocabulary ------------------------------------------------------------------
def test_every_reason_maps_to_the_same_openfeature_reason():
    """Each tipkit reason maps to the OpenFeature reason of the same name, if it has one.

    PREREQUISITE_FAILED has none: it is decided per context, so TARGETING_MATCH.
    """
    same = {r.value: r.value for r in Reason if r is not Reason.PREREQUISITE_FAILED}
    assert {**same, "PREREQUISITE_FAILED": "TARGETING_MATCH"} == {
        k.value: v.value for k, v in REASONS.items()
    }
    assert all(isinstance(v, OFReason) for v in REASONS.values())


def test_every_error_code_maps_to_the_same_openfeature_code():
    """Each tipkit error code maps to the OpenFeature error code of the same name."""
    assert {c.value: c.value for c in ErrorCode} == {
        k.value: v.value for k, v in ERROR_CODES.items()
    }
    assert all(isinstance(v, OFErrorCode) for v in ERROR_CODES.values())


# -- reasons through the client ------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "context", "expected"),
    [
        ("static", ctx("u1"), (True, "on", OFReason.STATIC, None)),
        ("static", None, (True, "on", OFReason.STATIC, None)),
        (
            "targeted",
            ctx("u1", email="ann@example.com"),
            (True, "on", OFReason.TARGETING_MATCH, None),
        ),
        (
            "targeted",
            ctx("u1", email="bob@else.org"),
            (False, "off", OFReason.DEFAULT, None),
        ),
        ("split", ctx("user-42"), (True, "on", OFReason.SPLIT, None)),
        ("disabled-off", ctx("u1"), (False, "off", OFReason.DISABLED, None)),
        ("disabled-bare", ctx("u1"), (False, None, OFReason.DISABLED, None)),
    ],
)
def test_reasons(client, key, context, expected):
    """Boolean details carry tipkit's value, variant and reason, with no error."""
    assert expected == summary(client.get_boolean_details(key, False, context))


def test_disabled_without_off_variant_serves_the_callers_default(client):
    """A disabled flag without off_variant gives the caller's default, reason DISABLED."""
    d = client.get_boolean_details("disabled-bare", True)
    assert (True, None, OFReason.DISABLED, None) == summary(d)


def test_value_getters_return_plain_values(client):
    """get_*_value returns the served value of each type."""
    assert client.get_boolean_value("static", False) is True
    assert "red" == client.get_string_value("color", "green")
    assert 10 == client.get_integer_value("limit", 0)
    assert 0.5 == client.get_float_value("half", 0.0)
    assert {"retries": 3, "hosts": ["a", "b"]} == client.get_object_value("config", {})


# -- errors through the client -------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "key", "default", "context", "code"),
    [
        ("get_boolean_details", "nope", True, None, OFErrorCode.FLAG_NOT_FOUND),
        ("get_string_details", "nope", "x", None, OFErrorCode.FLAG_NOT_FOUND),
        ("get_boolean_details", "color", True, None, OFErrorCode.TYPE_MISMATCH),
        ("get_string_details", "static", "x", None, OFErrorCode.TYPE_MISMATCH),
        ("get_integer_details", "static", 7, None, OFErrorCode.TYPE_MISMATCH),
        ("get_integer_details", "half", 7, None, OFErrorCode.TYPE_MISMATCH),
        ("get_float_details", "color", 1.5, None, OFErrorCode.TYPE_MISMATCH),
        ("get_float_details", "static", 1.5, None, OFErrorCode.TYPE_MISMATCH),
        ("get_object_details", "color", {"d": 1}, None, OFErrorCode.TYPE_MISMATCH),
        ("get_object_details", "hosts", {"d": 1}, None, OFErrorCode.TYPE_MISMATCH),
        ("get_object_details", "config", ["d"], None, OFErrorCode.TYPE_MISMATCH),
        (
            "get_boolean_details",
            "split",
            True,
            None,
            OFErrorCode.TARGETING_KEY_MISSING,
        ),
        (
            "get_boolean_details",
            "split",
            True,
            ctx(None, country="NZ"),
            OFErrorCode.TARGETING_KEY_MISSING,
        ),
        (
            "get_boolean_details",
            "bucket-attr",
            True,
            ctx("u1", org=["a", "b"]),
            OFErrorCode.INVALID_CONTEXT,
        ),
    ],
)
def test_errors_return_the_default(client, call, key, default, context, code):
    """Every error gives the caller's default, reason ERROR, no variant, and its code."""
    d = getattr(client, call)(key, default, context)
    assert (default, None, OFReason.ERROR, code) == summary(d)
    assert d.error_message


def test_flag_not_found_names_the_flag(client):
    """FLAG_NOT_FOUND's message names the missing flag."""
    d = client.get_boolean_details("nope", False)
    assert "'nope'" in (d.error_message or "")


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


def test_provider_not_ready_then_ready(clock, domain):
    """Before flags arrive: initialize fails, status ERROR, PROVIDER_NOT_READY; then READY."""
    source = NotReady()
    provider = TipkitProvider(Flags(source, clock=clock))
    with pytest.raises(OFProviderNotReadyError):
        api.set_provider_and_wait(provider, domain)
    client = api.get_client(domain)
    assert ProviderStatus.ERROR == client.get_provider_status()
    d = client.get_boolean_details("static", False)
    assert (False, None, OFReason.ERROR, OFErrorCode.PROVIDER_NOT_READY) == summary(d)
    seen = Seen()
    client.add_handler(ProviderEvent.PROVIDER_READY, seen)
    source.ready = InMemoryProvider(DOC)
    source._changed()
    assert ProviderStatus.READY == client.get_provider_status()
    assert ["tipkit"] == [e.provider_name for e in seen.wait()]
    assert (True, "on", OFReason.STATIC, None) == summary(
        client.get_boolean_details("static", False)
    )


def test_ready_noticed_on_evaluation(clock, domain):
    """A provider that becomes ready without pushing a change is noticed on evaluation."""
    source = NotReady()
    provider = TipkitProvider(Flags(source, clock=clock, refresh_interval=0))
    with pytest.raises(OFProviderNotReadyError):
        api.set_provider_and_wait(provider, domain)
    client = api.get_client(domain)
    source.ready = InMemoryProvider(DOC)
    clock.advance(1.0)
    assert client.get_boolean_value("static", False) is True
    assert ProviderStatus.READY == client.get_provider_status()


def test_broken_provider_is_general(clock, domain, caplog):
    """A tipkit provider that raises gives GENERAL and the default; the app keeps running."""
    provider = TipkitProvider(Flags(Broken(), clock=clock))
    with pytest.raises(OFProviderNotReadyError):
        api.set_provider_and_wait(provider, domain)
    d = api.get_client(domain).get_string_details("color", "green")
    assert ("green", None, OFReason.ERROR, OFErrorCode.GENERAL) == summary(d)


def test_an_engine_failure_is_general_never_raised(client, flags, monkeypatch):
    """Even if Flags.evaluate raised, the provider answers GENERAL with the default."""

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret")

    monkeypatch.setattr(Flags, "evaluate", boom)
    d = client.get_integer_details("limit", 3)
    assert (3, None, OFReason.ERROR, OFErrorCode.GENERAL) == summary(d)
    assert "secret" not in (d.error_message or "")


# -- numbers -------------------------------------------------------------------------
def test_integer_resolution(client):
    """Integers resolve exact beyond 2**53; an integral float resolves as an int."""
    assert (10, "ten", OFReason.STATIC, None) == summary(
        client.get_integer_details("limit", 0)
    )
    assert 10 == client.get_integer_value("whole", 0)
    assert int is type(client.get_integer_value("whole", 0))
    with_big = client.get_integer_details("limit", 0)
    assert 10 == with_big.value


def test_integer_beyond_2_53_is_exact(flags, client):
    """An integer above 2**53 comes back exact."""
    with flags.override("limit", "big"):
        assert 2**53 + 1 == client.get_integer_value("limit", 0)


def test_float_resolution_of_an_integer_flag(client):
    """A float resolution of an int flag gives a float, even with an int default."""
    d = client.get_float_details("limit", 0.0)
    assert (10.0, "ten", OFReason.STATIC, None) == summary(d)
    assert float is type(d.value)
    d = client.get_float_details("limit", 0)
    assert (float, None) == (type(d.value), d.error_code)


def test_float_resolution_of_disabled_flag_with_int_default(client, flags):
    """A DISABLED float resolution serves the default as a float (the SDK checks the type)."""
    flags.kill("half")
    d = client.get_float_details("half", 2)
    assert (2.0, None, OFReason.DISABLED, None) == summary(d)
    assert float is type(d.value)


def test_falsy_values_are_values(flags, client):
    """False, 0 and "" are served values, never absences."""
    provider = flags.provider
    assert isinstance(provider, InMemoryProvider)
    provider.set_flag("zero", {"variants": {"z": 0}, "default_variant": "z"})
    provider.set_flag("empty", {"variants": {"e": ""}, "default_variant": "e"})
    assert (0, "z", OFReason.STATIC, None) == summary(
        client.get_integer_details("zero", 5)
    )
    assert ("", "e", OFReason.STATIC, None) == summary(
        client.get_string_details("empty", "x")
    )
    assert (False, "off", OFReason.DISABLED, None) == summary(
        client.get_boolean_details("disabled-off", True)
    )


# -- objects -------------------------------------------------------------------------
def test_object_resolution_copies(client):
    """Object values are served as mappings or lists, and are the caller's to mutate."""
    d = client.get_object_details("config", {})
    assert ({"retries": 3, "hosts": ["a", "b"]}, "a", OFReason.STATIC, None) == summary(
        d
    )
    d.value["retries"] = 99
    assert 3 == client.get_object_value("config", {})["retries"]
    assert ["x", "y"] == client.get_object_value("hosts", [])


# -- kills, overrides, changes -------------------------------------------------------
def test_kill_and_revive_are_visible(client, flags):
    """A kill serves DISABLED through the provider at once; revive restores the flag."""
    flags.kill("static")
    assert (False, None, OFReason.DISABLED, None) == summary(
        client.get_boolean_details("static", False)
    )
    flags.revive("static")
    assert (True, "on", OFReason.STATIC, None) == summary(
        client.get_boolean_details("static", False)
    )


def test_override_is_static(client, flags):
    """An override is served as STATIC through the provider."""
    with flags.override("color", "blue"):
        assert ("blue", "blue", OFReason.STATIC, None) == summary(
            client.get_string_details("color", "green")
        )
    assert "red" == client.get_string_value("color", "green")


def test_configuration_changed_event(client, flags):
    """A pushed change emits PROVIDER_CONFIGURATION_CHANGED and is served next."""
    seen = Seen()
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, seen)
    set_color(flags, "blue")
    assert ["tipkit"] == [e.provider_name for e in seen.wait()]
    assert "blue" == client.get_string_value("color", "green")


def set_color(flags: Flags, variant: str) -> None:
    provider = flags.provider
    assert isinstance(provider, InMemoryProvider)
    provider.set_flag("color", {**DOC["flags"]["color"], "default_variant": variant})


def test_no_events_after_shutdown(flags, domain, monkeypatch):
    """After shutdown the provider no longer emits; the Flags keep working for the app."""
    provider = TipkitProvider(flags)
    api.set_provider_and_wait(provider, domain)
    emitted: list[Any] = []
    monkeypatch.setattr(provider, "emit", lambda *a: emitted.append(a))
    set_color(flags, "blue")
    assert [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED] == [e[0] for e in emitted]
    provider.shutdown()
    set_color(flags, "red")
    assert len(emitted) == 1
    assert "red" == flags.get("color", default="green")


def test_a_failing_emit_does_not_break_changes(client, flags, monkeypatch, caplog):
    """If emitting an event raises, it is logged and the change still applies."""
    provider = client.provider

    def bad(*_a: Any) -> None:
        raise RuntimeError("emit")

    monkeypatch.setattr(provider, "emit", bad)
    set_color(flags, "blue")
    assert "blue" == client.get_string_value("color", "green")
    assert "event handler raised" in caplog.text


# -- context, metadata, hooks, async ------------------------------------------------
def test_context_layers_merge(client):
    """The API-level and invocation contexts merge into tipkit's context."""
    set_evaluation_context(ctx(None, email="ann@example.com"))
    try:
        d = client.get_boolean_details("targeted", False, ctx("u1"))
    finally:
        clear_evaluation_context()
    assert (True, "on", OFReason.TARGETING_MATCH, None) == summary(d)


def test_flag_metadata_has_rule_and_version(client, flags):
    """flag_metadata holds rule_id on a match and the flag's version always."""
    d = client.get_boolean_details("targeted", False, ctx("u", email="a@example.com"))
    version = flags.evaluate("targeted").flag_version
    assert version
    assert {"rule_id": "staff", "flag_version": version} == dict(d.flag_metadata)
    assert {"flag_version": flags.evaluate("static").flag_version} == dict(
        client.get_boolean_details("static", False).flag_metadata
    )
    assert {} == dict(client.get_boolean_details("nope", False).flag_metadata)


def test_metadata_name(flags, domain):
    """The provider's metadata name is "tipkit" (or the name given)."""
    api.set_provider_and_wait(TipkitProvider(flags), domain)
    assert "tipkit" == api.get_provider_metadata(domain).name
    assert "flags-a" == TipkitProvider(flags, name="flags-a").get_metadata().name
    assert [] == TipkitProvider(flags).get_provider_hooks()


class Recorder(Hook):
    def __init__(self) -> None:
        self.reasons: list[Any] = []
        self.errors: list[Exception] = []

    def after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: Any
    ) -> None:
        self.reasons.append(details.reason)

    def error(
        self, hook_context: HookContext, exception: Exception, hints: Any
    ) -> None:
        self.errors.append(exception)


def test_hooks_see_success_and_errors(client):
    """Client hooks run after a success and on errors, as the spec requires."""
    rec = Recorder()
    client.add_hooks([rec])
    client.get_boolean_value("static", False)
    client.get_boolean_value("nope", False)
    assert [OFReason.STATIC] == rec.reasons
    assert [OFErrorCode.FLAG_NOT_FOUND] == [e.error_code for e in rec.errors]  # type: ignore[attr-defined]


def test_async_resolution(client):
    """The async client faces resolve the same way."""

    async def main() -> tuple[Any, ...]:
        ok = await client.get_string_details_async("color", "green")
        bad = await client.get_boolean_details_async("color", True)
        return summary(ok), summary(bad)

    ok, bad = asyncio.run(main())
    assert ("red", "red", OFReason.STATIC, None) == ok
    assert (True, None, OFReason.ERROR, OFErrorCode.TYPE_MISMATCH) == bad


class _AsyncOnlyStore(MemoryStore):
    """A MemoryStore whose sync reads raise once ``broken``: only async methods may be used."""

    broken = False

    def version(self, namespace: str) -> int:
        assert not self.broken, "sync version() on the event loop"
        return super().version(namespace)

    def snapshot(self, namespace: str) -> Any:
        assert not self.broken, "sync snapshot() on the event loop"
        return super().snapshot(namespace)

    async def aversion(self, namespace: str) -> int:
        return MemoryStore.version(self, namespace)

    async def asnapshot(self, namespace: str) -> Any:
        return MemoryStore.snapshot(self, namespace)


def test_async_resolution_reads_the_store_through_async_methods(clock, domain):
    """Every async client face sees a kill read with the store's async methods only."""
    store = _AsyncOnlyStore(clock=clock, push=False)
    flags = Flags(InMemoryProvider(DOC), store=store, clock=clock, refresh_interval=1)
    api.set_provider_and_wait(TipkitProvider(flags), domain)
    client = api.get_client(domain)
    store.set("flags", "kill/static", True)  # as another process would
    clock.advance(1)
    store.broken = True

    async def main() -> list[Any]:
        return [
            await client.get_boolean_details_async("static", True),
            await client.get_string_details_async("color", "green"),
            await client.get_integer_details_async("limit", 0),
            await client.get_float_details_async("whole", 0),
            await client.get_object_details_async("hosts", []),
        ]

    got = [summary(d) for d in asyncio.run(main())]
    assert [
        (True, None, OFReason.DISABLED, None),
        ("red", "red", OFReason.STATIC, None),
        (10, "ten", OFReason.STATIC, None),
        (10.0, "ten", OFReason.STATIC, None),
        (["x", "y"], "a", OFReason.STATIC, None),
    ] == got


def test_an_async_engine_failure_is_general_never_raised(client, monkeypatch):
    """Even if Flags.aevaluate raised, the async face answers GENERAL with the default."""

    async def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret")

    monkeypatch.setattr(Flags, "aevaluate", boom)
    d = asyncio.run(client.get_integer_details_async("limit", 3))
    assert (3, None, OFReason.ERROR, OFErrorCode.GENERAL) == summary(d)


def test_provider_direct_resolution(flags):
    """The provider answers FlagResolutionDetails directly, without a client."""
    provider = TipkitProvider(flags)
    r = provider.resolve_integer_details("whole", 1, None)
    assert (10, "ten", OFReason.STATIC, None) == (
        r.value,
        r.variant,
        r.reason,
        r.error_code,
    )
    i = provider.resolve_integer_details("whole", 1.0, None)  # type: ignore[arg-type]  # an untyped caller
    assert (10, int, None) == (i.value, type(i.value), i.error_code)
    f = provider.resolve_float_details("limit", 1.0, ctx("u"))
    assert (10.0, None) == (f.value, f.error_code)


def test_repr_and_bad_arguments(flags):
    """The provider shows its name and state, and refuses a non-Flags or empty name."""
    assert "<TipkitProvider 'tipkit'" in repr(TipkitProvider(flags))
    assert "ready" in repr(TipkitProvider(flags))
    assert TipkitProvider(flags).flags is flags
    with pytest.raises(TypeError, match="tipkit Flags"):
        TipkitProvider({"flags": {}})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        TipkitProvider(flags, name="")


# -- the optional dependency ---------------------------------------------------------
def test_missing_sdk_names_the_extra(monkeypatch):
    """Without openfeature-sdk, importing tipkit.flags.openfeature says what to install."""
    for name in list(sys.modules):
        if name == "openfeature" or name.startswith("openfeature."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "openfeature", None)
    monkeypatch.delitem(sys.modules, "tipkit.flags.openfeature")
    monkeypatch.delitem(sys.modules, "tipkit.flags._openfeature")
    with pytest.raises(ImportError, match=r"pip install 'tipkit\[openfeature\]'"):
        importlib.import_module("tipkit.flags.openfeature")


def test_other_missing_modules_are_not_blamed_on_the_sdk(monkeypatch):
    """A missing module other than openfeature surfaces as itself."""
    monkeypatch.setitem(sys.modules, "tipkit.flags._openfeature", None)
    monkeypatch.delitem(sys.modules, "tipkit.flags.openfeature")
    with pytest.raises(ModuleNotFoundError, match=r"tipkit\.flags\._openfeature"):
        importlib.import_module("tipkit.flags.openfeature")


def test_flags_package_does_not_import_the_sdk():
    """Importing tipkit and tipkit.flags never imports openfeature."""
    code = "import sys, tipkit, tipkit.flags; print('openfeature' in sys.modules)"
    out = subprocess.run(  # noqa: S603  # our own interpreter, a fixed script
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "False" == out.stdout.strip()
