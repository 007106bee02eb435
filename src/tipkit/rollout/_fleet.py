"""This process's share of a stage's fleet-wide counts: batches with ids, sent once.

The fleet's totals of a stage live in one store entry (``tipkit.rollouts/
<name>/counts/<attempt>/<stage>``)::

    {"totals": {"n0": ..., "n1": ..., "b1.0": ..., ...}, "seq": {<process id>: <last batch>}}

Each process numbers its batches ``1, 2, 3, ...`` under a random process id and
adds a batch with compare-and-set, recording its number in the same write. A
flush whose reply was lost (a timeout after the store applied it) is retried
with the *same* id and counts: the store already shows that batch number, so
it is not added twice. A process sends batch ``k + 1`` only once batch ``k`` is
acknowledged, so "applied" is exactly ``seq[pid] >= k``. Outcomes counted
while a batch is unacknowledged wait in the next one.

Fields: ``n<arm>`` outcomes (arm 0 control, 1 canary; the sample-ratio check),
and per check ``i``: ``b<arm>.<i>`` the sum (bad outcomes of a rate),
``c<arm>.<i>`` the number of values, ``q<arm>.<i>`` the sum of squares (means).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from tipkit._judge import MetricCheck

__all__ = ["Batch", "FleetCounts", "apply_batch"]

Batch = tuple[int, dict[str, float]]
"""A batch: its number and its counts (empty: nothing to add, only read the totals)."""


def apply_batch(
    doc: Mapping[str, object] | None, pid: str, seq: int, batch: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, object] | None]:
    """Return the totals after batch *seq* of *pid*, and the document to write (``None``: none).

    Pure: the store round trip is the caller's. A batch already applied, or
    an empty one, writes nothing.
    """
    raw_totals = doc.get("totals", {}) if doc else {}
    raw_seq = doc.get("seq", {}) if doc else {}
    totals = {str(k): float(v) for k, v in dict(raw_totals).items()}  # type: ignore[call-overload]
    seqs = {str(k): int(v) for k, v in dict(raw_seq).items()}  # type: ignore[call-overload]
    if not batch or seqs.get(pid, 0) >= seq:
        return totals, None
    for field, amount in batch.items():
        totals[field] = totals.get(field, 0.0) + amount
    seqs[pid] = seq
    return totals, {"totals": totals, "seq": seqs}


class FleetCounts:
    """This process's outcomes of one stage, not yet in the fleet's totals.

    A batch is due every *every* outcomes, or at the first outcome *interval*
    seconds after the last flush.

    Not thread-safe: the rollout's lock serialises every call.
    """

    __slots__ = (
        "_adds",
        "_by_metric",
        "_fields",
        "_requests",
        "checks",
        "every",
        "inflight",
        "interval",
        "key",
        "next_flush",
        "pending",
        "pid",
        "seq",
    )

    def __init__(
        self,
        key: str,
        checks: Sequence[MetricCheck],
        *,
        every: int,
        interval: float,
        now: float,
    ) -> None:
        self.key = key
        self.every = every
        self.interval = interval
        self.checks = tuple(checks)
        self._fields = [
            [(f"b{arm}.{i}", f"c{arm}.{i}", f"q{arm}.{i}") for i in range(len(checks))]
            for arm in (0, 1)
        ]
        self._requests = tuple(
            (i, c) for i, c in enumerate(self.checks) if c.per_request()
        )
        by_metric: dict[str, list[int]] = {}
        for i, c in enumerate(self.checks):
            if not c.per_request() and c.metric is not None:
                by_metric.setdefault(c.metric, []).append(i)
        self._by_metric = {k: tuple(v) for k, v in by_metric.items()}
        self.pid = uuid.uuid4().hex
        self.seq = 0  # the last batch number taken
        self.inflight: Batch | None = None
        self.pending: dict[str, float] = {}
        self._adds = 0
        self.next_flush = now + interval

    def forked(self) -> None:
        """Become a new process's counts: a new id, nothing pending (the parent sends its own)."""
        self.pid = uuid.uuid4().hex
        self.seq = 0
        self.inflight = None
        self.pending = {}
        self._adds = 0

    def _put(self, arm: int, i: int, v: float, binary: bool) -> None:
        pending = self.pending
        b, c, q = self._fields[arm][i]
        pending[c] = pending.get(c, 0) + 1
        if v:
            pending[b] = pending.get(b, 0) + v
            if not binary:
                pending[q] = pending.get(q, 0) + v * v

    def _counted(self, now: float) -> bool:
        self._adds += 1
        return self._adds >= self.every or now >= self.next_flush

    def add(self, arm: int, failed: bool, latency: float, now: float) -> bool:
        """Count one request of *arm* (1: canary); return whether a flush is due."""
        n = f"n{arm}"
        self.pending[n] = self.pending.get(n, 0) + 1
        for i, check in self._requests:
            v = check.value(failed, latency)
            if v is not None:
                self._put(arm, i, v, check.binary)
        return self._counted(now)

    def add_value(self, arm: int, metric: str, value: float, now: float) -> bool:
        """Count one *value* of *metric* for *arm*; return whether a flush is due."""
        idx = self._by_metric.get(metric)
        if not idx:
            return False
        for i in idx:
            check = self.checks[i]
            self._put(arm, i, check.clip(value), check.binary)
        return self._counted(now)

    def add_sums(self, arm: int, sums: Mapping[int, tuple[int, float, float]]) -> None:
        """Count aggregated values per check index: ``(count, sum, sum of squares)``."""
        pending = self.pending
        for i, (cnt, total, squares) in sums.items():
            b, c, q = self._fields[arm][i]
            pending[c] = pending.get(c, 0) + cnt
            pending[b] = pending.get(b, 0) + total
            if not self.checks[i].binary:
                pending[q] = pending.get(q, 0) + squares

    def take(self, now: float) -> Batch:
        """Return the batch to send: the unacknowledged one again, else the pending counts."""
        self.next_flush = now + self.interval
        if self.inflight is not None:
            self._adds = 0  # the pending counts wait; flush again in `every` outcomes
            return self.inflight
        if not self.pending:
            return self.seq, {}
        self.seq += 1
        self.inflight = (self.seq, self.pending)
        self.pending, self._adds = {}, 0
        return self.inflight

    def acked(self, seq: int) -> None:
        """Batch *seq* is in the fleet's totals: the next flush sends new counts."""
        if self.inflight is not None and self.inflight[0] == seq:
            self.inflight = None

    def parse(
        self, totals: Mapping[str, float]
    ) -> tuple[list[int], list[list[float]], list[list[int]], list[list[float]]]:
        """Return the fleet's totals: ``(outcomes, sums, counts, squares)`` per arm and check."""
        counts = [int(totals.get(f"n{arm}", 0)) for arm in (0, 1)]
        sums: list[list[float]] = [[], []]
        cnts: list[list[int]] = [[], []]
        sqs: list[list[float]] = [[], []]
        for arm in (0, 1):
            for i, check in enumerate(self.checks):
                b, c, q = self._fields[arm][i]
                s = float(totals.get(b, 0))
                sums[arm].append(s)
                cnts[arm].append(int(totals.get(c, 0)))
                sqs[arm].append(s if check.binary else float(totals.get(q, 0)))
        return counts, sums, cnts, sqs
