"""OpenFeature telemetry: track() and the hook that instruments any provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from openfeature.track import TrackingEventDetails
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import use_span

from tipkit.flags import Flags, Reason
from tipkit.flags import InMemoryProvider as TipkitSource
from tipkit.flags.openfeature import (
    FlagTracked,
    ProviderFlagEvaluated,
    TipkitProvider,
    TipkitTelemetryHook,
)
from tipkit.telemetry import add_listener, remove_listener
from tipkit.telemetry._events import Event
from tipkit.telemetry._redact import hash_context_id
from tipkit.testing import FakeClock

DOC = {
    "version": 1,
    "flags": {"on": {"variants": {"on": True, "off": False}, "default_variant": "on"}},
}


@pytest.fixture
def seen() -> Iterator[list[Event]]:
    """Events published on tipkit's bus during the test."""
    events: list[Event] = []
    listener = add_listener(events.append)
    yield events
    remove_listener(listener)


@pytest.fixture
def spans() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """A real OTel tracer exporting to memory (not installed globally)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


@pytest.fixture
def tipkit_client(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An OpenFeature client over a TipkitProvider."""
    domain = f"telemetry-{request.node.name}"
    flags = Flags(TipkitSource(DOC), clock=FakeClock())
    api.set_provider_and_wait(TipkitProvider(flags, watch=None), domain)
    yield api.get_client(domain)
    api.shutdown()


def test_track_hashes_the_targeting_key_in_span_and_event(
    tipkit_client: Any, seen: list[Event], spans: tuple[Any, InMemorySpanExporter]
) -> None:
    """track() adds a span event and a tipkit event; the key is hashed, never raw."""
    tracer, exporter = spans
    with tracer.start_as_current_span("checkout") as span, use_span(span):
        tipkit_client.track(
            "checkout-completed",
            OFContext("alice@example.com", {"plan": "pro"}),
            TrackingEventDetails(value=42.5, attributes={"email": "alice@example.com"}),
        )
    hashed = hash_context_id("alice@example.com")
    tracked = [e for e in seen if isinstance(e, FlagTracked)]
    assert [FlagTracked("checkout-completed", hashed, 42.5)] == tracked
    (finished,) = exporter.get_finished_spans()
    (event,) = finished.events
    assert "tipkit.flags.tracked" == event.name
    assert hashed == event.attributes["feature_flag.context.id"]
    assert "alice@example.com" not in repr(dict(event.attributes))
    assert 42.5 == event.attributes["tipkit.value"]


def test_track_without_key_or_details(tipkit_client: Any, seen: list[Event]) -> None:
    """No targeting key and no details: no context id and no value."""
    tipkit_client.track("visit")
    tracked = [e for e in seen if isinstance(e, FlagTracked)]
    assert [FlagTracked("visit", None, None)] == tracked


def test_the_hook_instruments_any_provider(seen: list[Event]) -> None:
    """With the hook, another provider's evaluations publish FlagEvaluated events."""
    flags = {"banner": InMemoryFlag("blue", {"blue": "b", "red": "r"})}
    api.set_provider_and_wait(InMemoryProvider(flags), "hooked")
    client = api.get_client("hooked")
    client.add_hooks([TipkitTelemetryHook()])
    client.get_string_value("banner", "x", OFContext("bob"))
    client.get_string_value("missing", "x")
    api.shutdown()
    events = [e for e in seen if isinstance(e, ProviderFlagEvaluated)]
    assert ["banner", "missing"] == [e.flag_key for e in events]
    first, second = events
    assert ("b", "blue", Reason.STATIC, "bob") == (
        first.value,
        first.variant,
        first.reason,
        first.context.targeting_key,
    )
    assert "In-Memory Provider" == first.otel_attributes()["feature_flag.provider.name"]
    assert ("x", Reason.ERROR, "FLAG_NOT_FOUND") == (
        second.value,
        second.reason,
        str(second.error_code),
    )
    assert "flag_not_found" == second.otel_attributes()["error.type"]


def test_the_hook_skips_tipkit_which_already_publishes(
    tipkit_client: Any, seen: list[Event]
) -> None:
    """On a TipkitProvider's client the hook adds nothing: one event per evaluation."""
    tipkit_client.add_hooks([TipkitTelemetryHook()])
    assert tipkit_client.get_boolean_value("on", False) is True
    assert 1 == sum(1 for e in seen if e.name == "on")
    assert [] == [e for e in seen if isinstance(e, ProviderFlagEvaluated)]


def test_the_hook_does_nothing_unheard() -> None:
    """With no listener the hook builds no event (and never raises)."""
    flags = {"banner": InMemoryFlag("blue", {"blue": "b"})}
    api.set_provider_and_wait(InMemoryProvider(flags), "unheard")
    client = api.get_client("unheard")
    client.add_hooks([TipkitTelemetryHook()])
    assert "b" == client.get_string_value("banner", "x")
    api.shutdown()
