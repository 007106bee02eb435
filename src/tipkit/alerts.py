"""Alert webhooks: tell a chat channel or an incident tool when a safety action happens.

:class:`Webhook` posts one JSON message per event to a URL: a Slack-compatible
``text`` (with the runbook link) plus structured fields (``event``, ``target``,
``reason``, ``actor``, ``runbook``, ``details``). It listens on tipkit's event
bus for rollbacks (:class:`~tipkit.rollout.RolloutRolledBack`), tripwire kills
(:class:`~tipkit.tripwire.FlagKilled`), breaker openings
(:class:`~tipkit.breaker.BreakerStateChanged` to open or forced open) and
operator actions (:class:`~tipkit.audit.ActionAudited`).

Off the request path: publishing an event only puts the message on a bounded
queue (never blocks; a full queue drops the message and counts it in
:attr:`Webhook.dropped`). One worker thread posts, retrying a failed post with
exponential backoff on the injected clock, and gives up after *retries*
(counted in :attr:`Webhook.failed`). A down endpoint costs the application
nothing but the counted drops.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any, Final

from tipkit.audit import ActionAudited
from tipkit.breaker import BreakerState, BreakerStateChanged
from tipkit.clock import SYSTEM_CLOCK, Clock
from tipkit.rollout import RolloutRolledBack
from tipkit.telemetry._events import BUS, Event
from tipkit.tripwire import FlagKilled

__all__ = ["EVENTS", "Webhook", "message_for"]

logger = logging.getLogger("tipkit")

EVENTS: Final = ("rollback", "tripwire_kill", "breaker_open", "operator_action")
"""What a :class:`Webhook` can be told about (``on=``)."""

_OPEN = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
_STOP: Final = object()


def _text(title: str, reason: str, runbook: str | None) -> str:
    text = f"{title}: {reason}" if reason else title
    return text + (f" (runbook: <{runbook}|runbook>)" if runbook else "")


def message_for(event: Event) -> tuple[str, dict[str, Any]] | None:
    """Return ``(kind, message)`` for *event*, or ``None`` when it is not alerted on."""
    if isinstance(event, RolloutRolledBack):
        who = "automatically" if event.automatic else "by hand"
        details = {"percent": event.percent, "check": event.check,
                   "canary_rate": event.canary_rate, "control_rate": event.control_rate,
                   "lower": event.lower, "upper": event.upper}  # fmt: skip
        return "rollback", {
            "text": _text(f":rewind: rollout {event.name} rolled back {who} from "
                          f"{event.percent:g}%", event.reason, event.runbook),
            "event": "rollback", "target": f"rollout:{event.name}", "reason": event.reason,
            "actor": "tipkit:rollout" if event.automatic else None,
            "runbook": event.runbook, "details": details,
        }  # fmt: skip
    if isinstance(event, FlagKilled):
        return "tripwire_kill", {
            "text": _text(f":octagonal_sign: flag {event.name} killed by its tripwire",
                          event.reason, event.runbook),
            "event": "tripwire_kill", "target": f"flag:{event.name}", "reason": event.reason,
            "actor": "tipkit:tripwire", "runbook": event.runbook,
            "details": {"error_rate": event.error_rate, "calls": event.calls,
                        "failures": event.failures, "max_error_rate": event.max_error_rate},
        }  # fmt: skip
    if isinstance(event, BreakerStateChanged) and event.to_state in _OPEN:
        runbook = getattr(event, "runbook", None)
        state = event.to_state.value
        return "breaker_open", {
            "text": _text(f":zap: breaker {event.name} is {state.replace('_', ' ')}",
                          str(getattr(event, "reason", "")), runbook),
            "event": "breaker_open", "target": f"breaker:{event.name}",
            "reason": str(getattr(event, "reason", "")), "actor": None, "runbook": runbook,
            "details": {"from_state": event.from_state.value, "to_state": state},
        }  # fmt: skip
    if isinstance(event, ActionAudited):
        r = event.record
        if r.actor.startswith("tipkit:"):
            return None  # automatic: alerted as a rollback or a tripwire kill
        return "operator_action", {
            "text": _text(f":bust_in_silhouette: {r.actor} ran {r.action} on {r.target}",
                          r.reason, r.runbook),
            "event": "operator_action", "target": r.target, "reason": r.reason,
            "actor": r.actor, "runbook": r.runbook,
            "details": {"action": r.action, "before": r.before, "after": r.after, "id": r.id},
        }  # fmt: skip
    return None


class Webhook:
    """Post alerts for the events named in *on* to *url*, off the request path.

    Args:
        url: where to POST (``http://`` or ``https://``), e.g. a Slack incoming webhook.
        on: which of :data:`EVENTS` to send (default: all).
        max_queue: messages waiting at most; beyond it a message is dropped and counted.
        retries: further attempts after a failed post.
        backoff: seconds before the first retry, doubled each time.
        timeout: seconds a post may take.
        clock: sleeps between retries (``FakeClock`` in tests).

    Starts listening at once; :meth:`close` stops. Thread-safe: events may be
    published from any thread. Counters: ``sent``, ``failed``, ``dropped``.

    Raises:
        ValueError: *url* is not http(s), or *on* names an unknown event.
    """

    def __init__(  # every knob of a webhook, keyword-only
        self,
        url: str,
        *,
        on: Iterable[str] = EVENTS,
        max_queue: int = 100,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not str(url).startswith(("http://", "https://")):
            raise ValueError(f"Webhook url must be http:// or https://, got {url!r}")
        self.on = frozenset(on)
        unknown = self.on - set(EVENTS)
        if unknown:
            raise ValueError(
                f"Webhook on= names unknown events {sorted(unknown)}; known: {EVENTS}"
            )
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._clock = clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._worker = threading.Thread(
            target=self._run, name="tipkit-webhook", daemon=True
        )
        self._worker.start()
        BUS.add_listener(self._on_event)

    def __repr__(self) -> str:
        return (f"<Webhook {self.url!r} on={sorted(self.on)} sent={self.sent} "
                f"failed={self.failed} dropped={self.dropped}>")  # fmt: skip

    def _on_event(self, event: Event) -> None:
        found = message_for(event)
        if found is None or found[0] not in self.on:
            return
        try:
            self._queue.put_nowait(found[1])
        except queue.Full:
            self.dropped += 1

    def _post(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        request = urllib.request.Request(  # noqa: S310  # the scheme is checked at construction
            self.url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            response.read()

    def _deliver(self, message: dict[str, Any]) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                self._post(message)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if attempt == self.retries:
                    self.failed += 1
                    logger.warning("tipkit: webhook %s failed %d times: %s",
                                   self.url, attempt + 1, exc)  # fmt: skip
                    return
                self._clock.sleep(delay)
                delay *= 2
            else:
                self.sent += 1
                return

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            try:
                if message is _STOP:
                    return
                self._deliver(message)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Block until every queued message was sent or given up on."""
        self._queue.join()

    def close(self) -> None:
        """Stop listening, send what is queued, stop the worker."""
        try:
            BUS.remove_listener(self._on_event)
        except ValueError:
            return  # closed already
        self._queue.put(_STOP)
        self._worker.join()
