"""OpenFeature parts of the web work: the transaction-context propagator, the file watcher."""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext as OFContext
from openfeature.event import ProviderEvent
from openfeature.transaction_context import NoOpTransactionContextPropagator

from tipkit.flags import EvaluationContext, Flags, request_context
from tipkit.flags.openfeature import TipkitProvider, TipkitTransactionContextPropagator

WAIT = 30.0  # generous bound for the watcher to notice (it looks every 0.02 s)

BOOL = {"variants": {"on": True, "off": False}}
TARGETED = {
    **BOOL,
    "default_variant": "off",
    "rules": [
        {"if": {"attr": "targeting_key", "op": "in", "value": ["u2"]}, "serve": "on"}
    ],
}


def doc(**flags: Any) -> str:
    return json.dumps({"version": 1, "flags": flags})


@pytest.fixture
def propagator():
    api.set_transaction_context_propagator(TipkitTransactionContextPropagator())
    yield
    api.set_transaction_context_propagator(NoOpTransactionContextPropagator())


def test_transaction_context_is_the_request_context(propagator):
    """OpenFeature's transaction context reads tipkit's request_context."""
    with request_context(EvaluationContext("u1", {"plan": "pro"})):
        ctx = api.get_transaction_context()
    assert ("u1", {"plan": "pro"}) == (ctx.targeting_key, ctx.attributes)


def test_set_transaction_context_feeds_tipkit_evaluations(propagator):
    """api.set_transaction_context is seen by tipkit evaluations given no context."""
    import contextvars

    flags = Flags.from_dict({"version": 1, "flags": {"beta": TARGETED}})

    def run() -> bool:
        api.set_transaction_context(OFContext("u2"))
        return flags.is_enabled("beta")

    assert (True, False) == (
        contextvars.copy_context().run(run),
        flags.is_enabled("beta"),
    )


def test_file_watcher_events(tmp_path: Path):
    """A rewrite names the changed flags; a broken file is STALE; a good one READY again."""
    path = tmp_path / "flags.json"
    path.write_text(
        doc(a={**BOOL, "default_variant": "on"}, b={**BOOL, "default_variant": "on"})
    )
    flags = Flags.from_file(path, reload_interval=3600.0)
    provider = TipkitProvider(flags, watch=0.02)
    events: queue.Queue[tuple[ProviderEvent, Any]] = queue.Queue()

    def on(kind: ProviderEvent) -> Any:
        return lambda details: events.put((kind, details))

    handlers = {
        k: on(k)
        for k in (
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
            ProviderEvent.PROVIDER_STALE,
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_ERROR,
        )
    }
    api.set_provider_and_wait(provider, domain="watch-test")
    client = api.get_client("watch-test")
    for kind, handler in handlers.items():
        client.add_handler(kind, handler)
    try:
        while not events.empty():  # READY from set_provider_and_wait
            events.get_nowait()
        path.write_text(
            doc(
                a={**BOOL, "default_variant": "on"},
                b={**BOOL, "default_variant": "off"},
            )
        )
        kind, details = events.get(timeout=WAIT)
        while kind == ProviderEvent.PROVIDER_READY:  # the SDK's own, from set_provider
            kind, details = events.get(timeout=WAIT)
        assert (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ["b"]) == (
            kind,
            details.flags_changed,
        )
        path.write_text("{ not json")
        kind, _ = events.get(timeout=WAIT)
        assert ProviderEvent.PROVIDER_STALE == kind
        path.write_text(doc(a={**BOOL, "default_variant": "off"}))
        kinds = [events.get(timeout=WAIT)[0], events.get(timeout=WAIT)[0]]
        assert [
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ] == kinds
    finally:
        for kind, handler in handlers.items():
            client.remove_handler(kind, handler)
        api.shutdown()
