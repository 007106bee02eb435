"""A small TCP proxy on loopback that makes a store's faults deterministic.

``FaultProxy(port)`` listens on a free loopback port and forwards every
connection to ``127.0.0.1:port``, in an asyncio loop of its own thread. Its
mode decides what a client sees, from the moment it is set:

* ``"pass"``: bytes flow both ways (``latency`` seconds added to each chunk);
* ``"blackhole"``: connections stay open, nothing is forwarded or answered
  (new connections are accepted and held): a server that never answers;
* ``"drop"``: every connection is reset at once, new ones too: a dead port;
* ``"mute"``: requests reach the server, its replies are discarded: a command
  applied whose answer was lost (the client times out after the write).

Nothing polls on a timer: a mode change acts on the next chunk read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy"]

_CHUNK = 65536


class FaultProxy:
    """Forward a loopback port to *target_port*, with latency, blackhole or drop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.latency = 0.0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._closing = False
        self.accepted = 0
        """Connections accepted so far."""
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="fault-proxy"
        )

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def set(self, mode: str, latency: float = 0.0) -> None:
        """Switch to *mode* (``pass``, ``blackhole``, ``drop``, ``mute``) with *latency*."""
        assert mode in ("pass", "blackhole", "drop", "mute"), mode
        self.mode, self.latency = mode, latency
        if mode == "drop":  # in force when this returns: open connections reset
            asyncio.run_coroutine_threadsafe(self._areset_all(), self._loop).result(10)

    async def _areset_all(self) -> None:
        self._reset_all()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)

    async def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def _stop(self) -> None:
        self._closing = True
        # Every accepted socket ends closed before the loop stops, or a
        # finalizer warns about it in a later test. Accepting stops first (the
        # listening socket stays open): an accept task still pending when the
        # server closes fails inside asyncio and drops its transport half made.
        # Only tasks that have started are cancelled: an accept task cancelled
        # before its first step would leave its socket to the garbage
        # collector. Those run on, see ``_closing`` and reset their connection.
        loop = asyncio.get_running_loop()
        if self._server is not None:
            for listening in self._server.sockets:
                loop.remove_reader(listening.fileno())
        me = asyncio.current_task()
        for _ in range(5000):  # bounded: about 5 s of 1 ms steps
            self._reset_all()
            for task in list(self._serving):
                task.cancel()
            if not [t for t in asyncio.all_tasks() if t is not me]:
                break
            await asyncio.sleep(0.001)  # noqa: TID251  # the proxy's own loop
        if self._server is not None:
            self._server.close()  # no accept task is pending at this point
        for _ in range(3):
            await asyncio.sleep(0)  # noqa: TID251  # the transports' close callbacks run

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            if self.mode == "drop" or self._closing:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.target_port
                )
            except OSError:
                return
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, reply=False),
                self._pipe(up_reader, writer, reply=True),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            # Only _stop cancels, and this task is the connection's own: ending
            # normally keeps asyncio's stream callback from logging the cancel.
            pass
        finally:
            self._serving.discard(task)
            for end in (up_writer, writer):
                if end is not None:
                    self._writers.discard(end)
                    _reset(end)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        reply: bool,
    ) -> None:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            while self.mode == "blackhole" and not self._closing:  # noqa: ASYNC110  # mode is set from another thread
                # Held, never forwarded: re-check when the mode changes back.
                await asyncio.sleep(0.01)  # noqa: TID251  # the proxy's own loop, not tipkit's clock
            if self.mode == "drop" or self._closing:
                return
            if reply and self.mode == "mute":
                continue  # the server applied the request; its answer is lost
            if self.latency:
                await asyncio.sleep(self.latency)  # noqa: TID251  # real-time-ok: injected latency is the point
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        writer.transport.abort()  # closed now, even with bytes still buffered
