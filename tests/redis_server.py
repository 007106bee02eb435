"""A real redis-server for tests: started on a free loopback port, stopped afterwards.

Persistence is off (``--save "" --appendonly no``; ``appendonly=True`` turns
the AOF on, fsync always) and the working directory is a temporary one, so
nothing outlives the server. ``DEBUG`` is enabled for local clients (``DEBUG
SLEEP``). The server can be stopped, SIGKILLed, restarted on the same port,
paused (SIGSTOP: a server that hangs) and resumed, for fault tests. Readiness
is the server's own "Ready to accept connections" line, then a PING: nothing
polls on a timer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tipkit.clock import SYSTEM_CLOCK

__all__ = ["RedisServer", "RedisServerError", "find_redis_server"]

_READY = "Ready to accept connections"


class RedisServerError(RuntimeError):
    """The redis-server process could not be started."""


def find_redis_server() -> str | None:
    """Return the path of redis-server (PATH, then /usr/bin, /usr/sbin), or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on 127.0.0.1, in a temporary directory."""

    ready_line = _READY

    def __init__(
        self,
        executable: str | None = None,
        *,
        start_timeout: float = 10.0,
        appendonly: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.appendonly = appendonly
        self.extra = extra
        exe = executable or find_redis_server()
        if exe is None:
            raise RedisServerError(
                "redis-server not found (apt-get install redis-server)"
            )
        self.executable = exe
        self.start_timeout = start_timeout
        self.port = 0
        self.host = "127.0.0.1"
        self._dir: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._paused = False
        self.log: list[str] = []

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} running={self.running}>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the server (on a new free port the first time, the same port after)."""
        if self.running:
            return
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="tipkit-redis-")
        fixed = self.port != 0
        problems = []
        for _ in range(1 if fixed else 5):
            port = self.port if fixed else _free_port()
            if self._spawn(port):
                self.port = port
                return
            problems.append(f"port {port}: " + " | ".join(self.log[-5:]))
        raise RedisServerError("redis-server did not start: " + "; ".join(problems))

    def _argv(self, port: int) -> list[str]:
        assert self._dir is not None
        return [
            self.executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--enable-debug-command", "local",
            *self.extra,
            "--dir", self._dir,
            "--daemonize", "no",
            "--loglevel", "notice",
            "--logfile", "",
        ]  # fmt: skip

    def _spawn(self, port: int) -> bool:
        args = self._argv(port)
        proc = subprocess.Popen(  # noqa: S603 - a fixed argv of the local redis-server
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self._dir,
        )
        ready = threading.Event()

        def drain() -> None:
            # Read the log until EOF, so the pipe never fills; flag readiness (or death).
            assert proc.stdout is not None
            # stop() closes the pipe once the process is gone: a read racing
            # with that close ends the log, it is not an error of the test.
            with contextlib.suppress(ValueError, OSError):
                for line in proc.stdout:
                    self.log.append(line.rstrip())
                    if self.ready_line in line:
                        ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True, name=f"redis-log-{port}").start()
        SYSTEM_CLOCK.wait_event(ready, self.start_timeout)
        if proc.poll() is None and _ping(port, self.start_timeout):
            self._proc = proc
            self._paused = False
            return True
        self._kill(proc)
        return False

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); keep its port for restart."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._paused:
            os.kill(proc.pid, signal.SIGCONT)
            self._paused = False
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        self._kill(proc)

    def sigkill(self) -> None:
        """Kill the server with SIGKILL (no shutdown, no save); keep its port."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._kill(proc)
        self._paused = False

    def restart(self) -> None:
        """Stop the server and start a fresh, empty one on the same port."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        assert self._proc is not None, "the server is not running"
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a paused server (SIGCONT)."""
        assert self._proc is not None, "the server is not running"
        os.kill(self._proc.pid, signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None


if __name__ == "__main__":  # pragma: no cover - a manual check
    with RedisServer() as server:
        print(server, Path(server.executable))  # noqa: T201 - a manual check prints


def run_children(script: str, argv: list[list[str]], timeout: float = 60) -> list[Any]:
    """Start one child per argv, wait until each prints "ready", say go, return their JSON."""
    procs = [
        subprocess.Popen(  # noqa: S603 - this interpreter running a fixed script
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for args in argv
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return [json.loads(p.communicate(timeout=timeout)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
