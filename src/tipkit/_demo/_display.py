"""What ``tipkit demo`` shows in the terminal: a live view with ``rich``, else plain text.

``rich`` is in the ``demo`` extra and imported lazily: without it the demo
prints plain lines and says how to get the live view.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType, TracebackType
from typing import Any, Self, TextIO

__all__ = [
    "INSTALL_HINT",
    "PlainReporter",
    "RichReporter",
    "load_rich",
    "plain_table",
]

INSTALL_HINT = "pip install 'tipkit[demo]'"


def load_rich() -> ModuleType | None:
    """Return the ``rich`` module, or ``None`` when it is not installed."""
    try:
        import rich  # noqa: PLC0415  # optional: the demo extra
        import rich.console  # noqa: PLC0415  # the parts used below
        import rich.markup  # noqa: PLC0415
        import rich.progress  # noqa: PLC0415
        import rich.table  # noqa: PLC0415
    except ImportError:
        return None
    return rich


def plain_table(
    rows: Sequence[tuple[str, str, str]], headers: tuple[str, str, str]
) -> str:
    """Return *rows* as an aligned plain-text table (for terminals without rich)."""
    widths = [max(len(r[i]) for r in (*rows, headers)) for i in range(2)]
    lines = [f"{headers[0]:<{widths[0]}}  {headers[1]:<{widths[1]}}  {headers[2]}"]
    lines.append("-" * (sum(widths) + 4 + max(len(r[2]) for r in (*rows, headers))))
    lines.extend(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows)
    return "\n".join(lines)


class PlainReporter:
    """Report progress as plain lines: one when a scenario starts, one when it ends.

    Not thread-safe (the demo reports from one thread).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._titles: dict[str, str] = {}

    @property
    def stream(self) -> TextIO:
        """Where the lines go (``sys.stdout`` at the time of writing by default)."""
        return self._stream if self._stream is not None else sys.stdout

    def print(self, text: str = "") -> None:
        """Write one line of text."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def begin(self, key: str, title: str, total: float) -> None:  # noqa: ARG002  # Reporter protocol
        """Announce scenario *key*."""
        self._titles[key] = title
        self.print(f"{title} ...")

    def update(self, key: str, completed: float, info: str) -> None:
        """Show nothing: plain output stays short."""

    def end(self, key: str, info: str, *, ok: bool) -> None:  # noqa: ARG002  # Reporter protocol
        """Print the scenario's outcome."""
        mark = "ok " if ok else "!! "
        self.print(f"  {mark}{info}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class RichReporter:
    """Report progress with rich: a live bar per scenario with its key numbers.

    With ``live=False`` it prints the same outcome lines without the live
    view (for logs, CI and tests). Use as a context manager: the live view runs
    between ``__enter__`` and ``__exit__``, refreshed by rich's own thread.
    """

    def __init__(
        self, rich: ModuleType, *, live: bool, stream: TextIO | None = None
    ) -> None:
        self._rich = rich
        self.console: Any = rich.console.Console(file=stream, highlight=False)
        self._live = live
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._titles: dict[str, str] = {}
        self._totals: dict[str, float] = {}
        if live:
            p = rich.progress
            column = rich.table.Column
            self._progress = p.Progress(
                p.SpinnerColumn(finished_text="[green]✓"),
                p.BarColumn(bar_width=18),
                # The numbers under the title, folded to the terminal's width: on
                # 80 columns a third column was cut to a few characters.
                p.TextColumn(
                    "{task.description}\n[dim]{task.fields[info]}[/]",
                    table_column=column(ratio=1, overflow="fold"),
                ),
                console=self.console,
                refresh_per_second=8,
            )

    def print(self, text: Any = "") -> None:
        """Print above the live view; a str as it is (no markup, never wrapped)."""
        if isinstance(text, str):
            self.console.print(text, soft_wrap=True, markup=False)
        else:
            self.console.print(text)

    def begin(self, key: str, title: str, total: float) -> None:
        """Add a bar for scenario *key*."""
        self._titles[key] = title
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(title, total=total, info="")
            self._totals[key] = total
        else:
            self.console.print(f"[bold]{self._escape(title)}[/] ...", soft_wrap=True)

    def update(self, key: str, completed: float, info: str) -> None:
        """Move the bar of *key* and show its numbers."""
        if self._progress is not None:
            self._progress.update(self._tasks[key], completed=completed, info=info)

    def end(self, key: str, info: str, *, ok: bool) -> None:
        """Finish the bar of *key* and print its outcome above the live view."""
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        if self._progress is not None:
            self._progress.update(
                self._tasks[key], completed=self._totals[key], info=info
            )
            self.console.print(
                f"{mark} [bold]{self._escape(self._titles[key])}[/]\n"
                f"    {self._escape(info)}",
                soft_wrap=True,
            )
        else:
            self.console.print(f"  {mark} {self._escape(info)}", soft_wrap=True)

    def _escape(self, text: str) -> str:
        return str(self._rich.markup.escape(text))

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
