"""A token bucket in this process: its level, its lock and its queue of waiters."""

from __future__ import annotations

from tipkit._core import _fork
from tipkit._core._guard import Waiter
from tipkit._core._tokens import Level

__all__ = ["LocalTokens", "Reservation"]


class Reservation:
    """Tokens taken ahead of time by one waiting call, ready at ``ready``.

    In process, ``waiter`` wakes the call when a give-back moves it forward;
    a reservation in a store has none (give-backs do not reach it).
    """

    __slots__ = ("ready", "start", "tokens", "waiter")

    def __init__(
        self, tokens: float, ready: float, start: float, waiter: Waiter | None
    ) -> None:
        self.tokens = tokens
        self.ready = ready
        self.start = start
        self.waiter = waiter

    def __repr__(self) -> str:
        return f"<reservation {self.tokens:g} ready={self.ready:.6f}>"


class LocalTokens:
    """The in-process state of a :class:`~tipkit.ratelimit.TokenBucket`.

    A :class:`~tipkit._core._tokens.Level` and the FIFO of waiters holding
    reservations on it, under one lock: a reservation and its place in the
    queue are made together, so a give-back can move every waiter behind it.
    ``take`` is the level's own method, for the bucket's hot path, which holds
    ``lock`` around it. Thread-safe otherwise; never reads a clock.
    """

    __slots__ = ("_level", "lock", "queue", "take")

    def __init__(self, rate: float, capacity: float, level: float, now: float) -> None:
        self._level = Level(rate, capacity, level, now)
        self.take = self._level.take
        self.lock = _fork.new_lock()
        self.queue: list[Reservation] = []

    def after_fork(self) -> None:
        """Start afresh in a forked child: a new lock, and no waiters (they stayed)."""
        self.lock = _fork.new_lock()
        self.queue = []

    def tokens(self, now: float) -> float:
        """Return the level at *now* (negative while waiters hold reservations)."""
        with self.lock:
            return self._level.at(now)

    def take_now(self, now: float, tokens: float) -> tuple[float, float]:
        """Take *tokens* if they are there; return the wait (0: taken) and the level."""
        with self.lock:
            return self.take(now, tokens), self._level.level

    def reserve(
        self, now: float, tokens: float, budget: float, *, queue: bool
    ) -> tuple[float, Reservation | None]:
        """Take *tokens* now, or reserve them if they are there within *budget* s.

        Returns the wait (``0.0``: taken now; above *budget*: nothing taken) and
        the reservation of a call that must wait, queued behind earlier ones
        (``None`` when *queue* is false: shadow mode reserves the tokens, so
        later decisions match enforcement, but lets the call go at once).
        """
        with self.lock:
            wait = self.take(now, tokens, budget)
            if not wait or wait > budget or not queue:
                return wait, None
            res = Reservation(tokens, now + wait, now, Waiter())
            self.queue.append(res)
            return wait, res

    def due_in(self, now: float, res: Reservation) -> float:
        """Return the seconds until *res* is due; at ``0.0`` it has left the queue.

        A waiter that was woken (moved forward) gets a fresh one to wait on.
        """
        with self.lock:
            if res.ready > now:
                if res.waiter is not None and res.waiter.notified:
                    res.waiter = Waiter()
                return res.ready - now
            self.queue.remove(res)
            return 0.0

    def give_back(self, res: Reservation, now: float) -> None:
        """Return the tokens of a waiter that stopped waiting (once; never if admitted).

        The waiters behind it were scheduled as if these tokens were spent; they
        are moved forward by the tokens returned and woken, so the tokens are
        used once, by them or by new callers, never by both.
        """
        woken: list[Waiter] = []
        with self.lock:
            try:
                i = self.queue.index(res)
            except ValueError:  # already admitted or given back
                return
            del self.queue[i]
            level = self._level
            shift = level.give_back(now, res.tokens) / level.rate
            for later in self.queue[i:]:
                if later.ready > now and later.waiter is not None:
                    later.ready -= shift
                    woken.append(later.waiter)
        for waiter in woken:
            waiter.notify()
