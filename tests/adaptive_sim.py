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
) -> tuple[list[int], int, int]:
    """Return (limit history, completions, rejections) of clients calling a PS service."""
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
        if change is not None and now >= change[0]:
            base, servers = change[1], change[2]
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
            heapq.heappush(events, (now, cid, "arrive"))
    return history, done, rejected
