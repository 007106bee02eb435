"""Every exception tipkit raises.

::

    TipkitError
    ├── ConfigError            .source, .flag, .field, .line: raised where config is loaded
    ├── StoreError             the backend exception as __cause__
    │   └── StoreConflictError     compare-and-set lost every try (also a RuntimeError)
    ├── RejectedError          refused before running anything (.name, .retry_after)
    │   ├── CircuitOpenError       .breaker, .retry_after
    │   ├── RateLimitedError       .limiter, .retry_after
    │   └── BulkheadFullError      .bulkhead
    ├── RolloutStateError      .rollout, .status: not allowed in the rollout's status
    │                          (also a RuntimeError)
    └── DeadlineExceededError  started but ran out of time (also a TimeoutError)

A :class:`RejectedError` is never retried by default: a retry outside an open
breaker must not hammer it. Flag evaluation never raises any of these into app
code; it returns a detail with an error code instead.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "ConfigProblem",
    "DeadlineExceededError",
    "RateLimitedError",
    "RejectedError",
    "RolloutStateError",
    "StoreConflictError",
    "StoreError",
    "TipkitError",
]


class TipkitError(Exception):
    """Base class of every exception raised by tipkit."""


class ConfigProblem:
    """One thing wrong with a piece of configuration, and where it is.

    A :class:`ConfigError` carries one or more of these, so a document with
    several problems reports all of them at once.
    """

    __slots__ = ("column", "field", "flag", "line", "message", "source")

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        flag: str | None = None,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.flag = flag
        self.field = field
        # A parsed document's line numbers are ints that carry their column.
        self.line = None if line is None else int(line)
        self.column = column if column is not None else getattr(line, "column", None)

    def location(self) -> str:
        """Return ``source:line:column: flag 'x', field 'y'`` with whatever is known."""
        where = []
        if self.source is not None:
            at = "" if self.line is None else f":{self.line}"
            at += "" if self.line is None or self.column is None else f":{self.column}"
            where.append(f"{self.source}{at}")
        if self.flag is not None:
            where.append(f"flag {self.flag!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return ", ".join(where)

    def __str__(self) -> str:
        loc = self.location()
        return f"{loc}: {self.message}" if loc else self.message

    def __repr__(self) -> str:
        return f"<ConfigProblem {self!s}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigProblem):
            return NotImplemented
        return (self.message, self.source, self.flag, self.field, self.line) == (
            other.message,
            other.source,
            other.flag,
            other.field,
            other.line,
        )

    def __hash__(self) -> int:
        return hash((self.message, self.source, self.flag, self.field, self.line))


class ConfigError(TipkitError, ValueError):
    """Configuration is invalid; raised where it is loaded, never on evaluation.

    ``source``, ``flag``, ``field``, ``line`` and ``column`` describe the first problem;
    ``problems`` lists every problem found (a loader reports all of them at once).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        source: str | None = None,
        flag: str | None = None,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
        problems: Sequence[ConfigProblem] = (),
    ) -> None:
        probs = list(problems)
        if message is not None:
            probs.insert(
                0,
                ConfigProblem(
                    message,
                    source=source,
                    flag=flag,
                    field=field,
                    line=line,
                    column=column,
                ),
            )
        if not probs:
            msg = "ConfigError needs a message or at least one problem"
            raise TypeError(msg)
        self.problems: tuple[ConfigProblem, ...] = tuple(probs)
        first = self.problems[0]
        self.source = first.source
        self.flag = first.flag
        self.field = first.field
        self.line = first.line
        self.column = first.column
        if len(self.problems) == 1:
            text = str(first)
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)


class StoreError(TipkitError):
    """A store operation failed; the backend's exception is ``__cause__``."""


class StoreConflictError(StoreError, RuntimeError):
    """A compare-and-set write lost to other writers on every try.

    The stored entry kept changing between read and write; nothing was
    written. Also a :class:`RuntimeError`, which is what was raised before.

    Attributes:
        namespace, key: the entry that kept changing.
        tries: how many compare-and-set attempts were made.
    """

    def __init__(self, message: str, *, namespace: str, key: str, tries: int) -> None:
        super().__init__(message)
        self.namespace = namespace
        self.key = key
        self.tries = tries


class RolloutStateError(TipkitError, RuntimeError):
    """A rollout control is not allowed in the rollout's status.

    ``advance()`` or ``pause()`` of a rolled-back or completed rollout, or
    ``resume()`` of a completed one. Also a :class:`RuntimeError`, which is
    what was raised before.

    Attributes:
        rollout: the rollout's name.
        status: its status (``"rolled_back"`` or ``"completed"``).
    """

    def __init__(self, message: str, *, rollout: str, status: str) -> None:
        super().__init__(message)
        self.rollout = rollout
        self.status = status


class RejectedError(TipkitError):
    """A guard refused the call before running anything.

    Attributes:
        name: the refusing guard's name.
        retry_after: seconds until a new attempt may succeed, or ``None`` when
            unknown.
        runbook: the guard's runbook URL, if it has one.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str,
        retry_after: float | None = None,
        runbook: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.retry_after = retry_after
        self.runbook = runbook


class CircuitOpenError(RejectedError):
    """The circuit breaker is open (or forced open) and rejected the call."""

    @property
    def breaker(self) -> str:
        """The breaker's name."""
        return self.name


class RateLimitedError(RejectedError):
    """The rate limiter had no tokens for the call in time."""

    @property
    def limiter(self) -> str:
        """The limiter's name."""
        return self.name


class BulkheadFullError(RejectedError):
    """Every slot of the bulkhead was taken (and stayed taken for ``max_wait``)."""

    @property
    def bulkhead(self) -> str:
        """The bulkhead's name."""
        return self.name


class DeadlineExceededError(TipkitError, TimeoutError):
    """The work started but ran out of time.

    Also a :class:`TimeoutError` (which, since Python 3.11, is what
    :class:`asyncio.TimeoutError` is), so ``except TimeoutError`` catches it.
    """

    def __init__(
        self, message: str, *, name: str | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(message)
        self.name = name
        self.timeout = timeout
