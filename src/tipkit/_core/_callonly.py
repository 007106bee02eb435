"""Objects that decorate or ``call()`` but refuse a ``with`` block, written once.

A fallback replaces a result and a hedge or a retry runs the work more than
once: neither can wrap a block. :class:`CallOnly` gives them the four block
faces, each raising ``TypeError`` (``async with`` as ``with``) with the
subclass's ``_no_block`` reason, e.g. ``"<Hedge 'x'> must run the work more
than once, ..."``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["CallOnly"]


class CallOnly:
    """Mixin: ``with`` and ``async with`` raise ``TypeError`` saying why (``_no_block``)."""

    __slots__ = ()

    _no_block: ClassVar[str] = "cannot wrap a `with` block"

    def __enter__(self) -> None:
        raise TypeError(f"{self!r} {self._no_block}")

    def __exit__(
        self, *exc_info: object
    ) -> None:  # pragma: no cover - __enter__ raises
        return None

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:  # pragma: no cover - raises
        return None
