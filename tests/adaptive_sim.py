"""A closed-loop simulation of a processor-sharing (M/M/c-like) service, for AdaptiveLimit."""

from __future__ import annotations

import heapq

from tipkit.adaptive import AdaptiveLimit
from tipkit.errors import RejectedError


def simulate(
    limit: AdaptiveLimit,
    *,
    clients: int = 100,
    servers: float = 10,
    base: float = 0.01,
    seconds: float = 30.0,
    backoff: float = 0.005,
    change: tuple[float, float, float] | None = None,
    changes: tuple[tuple[float, float, float], ...] = (),
    times: list[float] | None = None,
) -> tuple[list[int], int, int]:
    """Return (limit history, completions, rejections) of clients calling a PS service.

    Each of *changes* (and *change*) is ``(at, base, servers)``: from simulated
    time *at* the service has that base latency and that many servers. With
    *times*, the completion time of each history entry is appended to it.
    """
    pending = sorted([*changes, *([change] if change is not None else [])])
    now = 0.0
    events = [(0.0, i, "arrive") for i in range(clients)]
    heapq.heapify(events)
    running: dict[int, float] = {}
    history: list[int] = []
    done = rejected = 0
    while events:
        now, cid, kind = heapq.heappop(events)
        if now > seconds:
            break
        while pending and now >= pending[0][0]:
            _, base, servers = pending.pop(0)
        if kind == "arrive":
            try:
                ticket = limit._step(now, None)
            except RejectedError:
                rejected += 1
                heapq.heappush(events, (now + backoff, cid, "arrive"))
                continue
            n = len(running) + 1
            latency = base * max(1.0, n / servers)
            running[cid] = ticket
            heapq.heappush(events, (now + latency, cid, "done"))
        else:
            ticket = running.pop(cid)
            limit._release(ticket, None, now)
            done += 1
            history.append(limit.limit)
            if times is not None:
                times.append(now)
            heapq.heappush(events, (now, cid, "arrive"))
    return history, done, rejected
