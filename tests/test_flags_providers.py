import gc
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tipkit.errors import ConfigError
from tipkit.flags import FileProvider, Flags, FlagsReloadFailed, Reason
from tipkit.flags._watch import Settle
from tipkit.telemetry._counters import REGISTRY
from tipkit.testing import FakeClock, capture_events


def doc(default: str, extra: dict[str, Any] | None = None) -> str:
    flags = {
        "f": {"variants": {"on": True, "off": False}, "default_variant": default},
        **(extra or {}),
    }
    return json.dumps({"flags": flags})


_MTIME = [1_700_000_000]


def write(path: Path, text: str) -> None:
    """Write *text* and give the file a new, distinct mtime (no sleeping)."""
    path.write_text(text)
    _MTIME[0] += 10
    os.utime(path, ns=(_MTIME[0] * 10**9, _MTIME[0] * 10**9))


@pytest.fixture
def setup(tmp_path: Path, clock: FakeClock) -> tuple[Path, FileProvider, Flags]:
    path = tmp_path / "flags.json"
    write(path, doc("on"))
    provider = FileProvider(path, reload_interval=1.0, clock=clock, watch=False)
    return path, provider, Flags(provider)


def settle(provider: FileProvider, clock: FakeClock) -> bool:
    """Poll, let the settle interval pass, poll again: what the watcher does."""
    provider.poll()
    clock.advance(provider.settle)
    return provider.poll()


def test_missing_file_at_start(tmp_path: Path):
    """A missing file at start raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="not found") as info:
        FileProvider(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") == info.value.source


def test_invalid_file_at_start(tmp_path: Path):
    """An invalid file at start raises ConfigError."""
    path = tmp_path / "f.json"
    path.write_text(doc("maybe"))
    with pytest.raises(ConfigError, match="unknown variant"):
        FileProvider(path)


def test_change_loads_once_settled(setup, clock):
    """A changed file is loaded by poll() once its stat stayed the same for `settle`."""
    path, provider, flags = setup
    assert flags.is_enabled("f") is True
    write(path, doc("off"))
    assert provider.poll() is False  # seen, not settled
    clock.advance(0.5)
    assert provider.poll() is False
    assert flags.is_enabled("f") is True
    clock.advance(0.5)
    assert provider.poll() is True
    assert False is flags.is_enabled("f")
    assert provider.reloads == 1
    assert ("f",) == provider.changed_keys
    assert "reloads=1" in repr(provider)


def test_evaluation_never_reads_the_file(setup, clock, monkeypatch):
    """Evaluations never stat, read or parse the file, however much time passes."""
    path, provider, flags = setup
    calls = []
    monkeypatch.setattr(provider, "_stat_now", lambda: calls.append("stat"))
    monkeypatch.setattr(provider, "_load", lambda: calls.append("load"))
    write(path, doc("off"))
    for _ in range(50):
        clock.advance(10)
        assert flags.is_enabled("f") is True
    assert [] == calls


def test_half_written_file_that_parses_is_not_loaded(setup, clock):
    """A file still being written (it parses, but keeps changing) is never served half-done."""
    path, provider, flags = setup
    full = doc("off", {"g": {"variants": {"a": 1}, "default_variant": "a"}})
    write(path, doc("off"))  # a first chunk that happens to parse
    provider.poll()
    clock.advance(0.6)
    write(path, full)  # the writer goes on before the settle interval ends
    assert provider.poll() is False
    clock.advance(0.6)
    assert provider.poll() is False  # changed 0.6 s ago: not settled yet
    clock.advance(0.4)
    assert provider.poll() is True
    assert 1 == provider.reloads
    assert 1 == flags.get("g", default=0)


def test_atomic_rename_loads_at_once(setup, clock):
    """A file renamed into place (a new inode) is loaded on the first poll."""
    path, provider, flags = setup
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc("off"))
    tmp.replace(path)
    assert provider.poll() is True
    assert False is flags.is_enabled("f")


def test_failed_reload_reported_once_until_fixed(setup, clock, caplog):
    """A failed reload keeps the last good flags; event, WARNING and counter once until fixed."""
    path, provider, flags = setup
    failures = REGISTRY.counter(
        "tipkit.flag.reload_failures", {"tipkit.flags.file": str(path)}
    )
    before = failures.value
    with capture_events(FlagsReloadFailed) as events:
        write(path, doc("maybe"))
        assert settle(provider, clock) is False
        assert flags.is_enabled("f") is True
        write(path, "{")  # still broken, differently
        assert settle(provider, clock) is False
    assert len(events) == 1
    assert str(path) == events[0].name
    assert "unknown variant" in str(events[0].error)
    assert {
        "tipkit.name": str(path),
        "feature_flag.provider.name": "tipkit",
        "error.type": "ConfigError",
    } == events[0].otel_attributes()
    assert 1 == failures.value - before
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert 1 == len(warnings)
    assert "stale" == provider.status
    assert "stale" in repr(provider)
    write(path, doc("off"))
    assert settle(provider, clock) is True
    assert False is flags.is_enabled("f")
    assert provider.last_error is None
    assert "ok" == provider.status


def test_broken_file_is_not_parsed_again_until_it_changes(setup, clock, monkeypatch):
    """The same broken file is parsed once, not on every poll."""
    path, provider, _ = setup
    write(path, "{")
    settle(provider, clock)
    loads = []
    monkeypatch.setattr(provider, "_load", lambda: loads.append(1))
    for _ in range(5):
        clock.advance(1)
        provider.poll()
    assert [] == loads


def test_deleted_file_keeps_last_good(setup, clock):
    """A deleted file keeps the last good flags."""
    path, provider, flags = setup
    path.unlink()
    settle(provider, clock)
    assert flags.is_enabled("f") is True


def test_yaml_reload(tmp_path: Path, clock):
    """YAML files reload too."""
    path = tmp_path / "f.yaml"
    write(
        path,
        "flags:\n  f:\n    variants: {on: true, off: false}\n    default_variant: on\n",
    )
    provider = FileProvider(path, clock=clock, reload_interval=2, watch=False)
    flags = Flags(provider)
    assert flags.is_enabled("f") is True
    write(
        path,
        "flags:\n  f:\n    variants: {on: true, off: false}\n    default_variant: off\n",
    )
    settle(provider, clock)
    assert False is flags.is_enabled("f")


def test_forced_reload(setup):
    """reload() re-reads now and raises on an invalid file, keeping the last good one."""
    path, provider, flags = setup
    write(path, doc("off"))
    provider.reload()
    assert False is flags.is_enabled("f")
    write(path, "{")
    with pytest.raises(ConfigError):
        provider.reload()
    assert False is flags.is_enabled("f")
    assert provider.check() is False


def test_watcher_thread_reloads_in_the_background(tmp_path: Path):
    """With the real clock, the watcher thread notices a rename and swaps; no evaluation needed."""
    path = tmp_path / "f.json"
    path.write_text(doc("on"))
    flags = Flags.from_file(path, reload_interval=0.01)
    provider = flags.provider
    assert isinstance(provider, FileProvider)
    assert provider.watching
    swapped = threading.Event()

    class Listener:
        def changed(self) -> None:
            swapped.set()

    listener = Listener()
    provider.subscribe(listener.changed)
    tmp = tmp_path / "f.json.tmp"
    tmp.write_text(doc("off"))
    tmp.replace(path)
    assert swapped.wait(30)
    assert False is flags.is_enabled("f")
    provider.close()
    assert not provider.watching


def test_refresh_interval_validation(tmp_path: Path):
    """Negative intervals are refused, naming the argument."""
    path = tmp_path / "f.json"
    path.write_text(doc("on"))
    with pytest.raises(ValueError, match="reload_interval"):
        FileProvider(path, reload_interval=-1)
    with pytest.raises(ValueError, match="refresh_interval"):
        Flags(FileProvider(path), refresh_interval=-1)
    with pytest.raises(ValueError, match="namespace"):
        Flags(FileProvider(path), namespace="")


def test_shared_provider_reload_seen_by_all(setup, clock):
    """Two Flags over one provider both see a reload."""
    path, provider, flags = setup
    other = Flags(provider)
    write(path, doc("off"))
    settle(provider, clock)
    assert False is flags.is_enabled("f")
    assert False is other.is_enabled("f")


def test_eight_threads_evaluate_during_reloads(tmp_path: Path):
    """8 threads evaluating while the file is rewritten see only whole snapshots, never errors."""
    path = tmp_path / "f.json"
    # two consistent worlds: in each, flags a and b serve the same variant
    worlds = [
        doc(
            "on", {"g": {"variants": {"x": "one", "y": "two"}, "default_variant": "x"}}
        ),
        doc(
            "off", {"g": {"variants": {"x": "one", "y": "two"}, "default_variant": "y"}}
        ),
    ]
    write(path, worlds[0])
    clock = FakeClock()
    provider = FileProvider(path, reload_interval=0, clock=clock, watch=False)
    flags = Flags(provider)
    errors: list[Any] = []
    seen: set[tuple[bool, str]] = set()
    stop = threading.Event()
    barrier = threading.Barrier(9)

    def worker() -> None:
        barrier.wait()
        while not stop.is_set():
            fs = flags.flag_set
            assert fs is not None
            a = flags.evaluate("f", "k", default=None)
            b = flags.get("g", "k", default="?")
            if a.reason is Reason.ERROR or b == "?":
                errors.append((a, b))
            seen.add((a.value, b))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    for i in range(60):
        write(path, worlds[(i + 1) % 2])
        provider.poll()
    stop.set()
    for t in threads:
        t.join()
    assert [] == errors
    assert seen <= {(True, "one"), (False, "two"), (True, "two"), (False, "one")}
    assert provider.reloads >= 1


def test_settle_waits_for_a_stable_stat():
    """A change loads once unchanged for `settle`; a new inode at once; a missing file never."""
    s = Settle((1, 10, 7), 1.0)
    assert s.observe((1, 10, 7), 0.0) is False  # unchanged
    assert s.observe((2, 20, 7), 0.0) is False  # seen
    assert s.observe((3, 30, 7), 1.0) is False  # still growing: the clock restarts
    assert s.observe((3, 30, 7), 1.5) is False
    assert s.observe((3, 30, 7), 2.0) is True
    assert s.observe(None, 5.0) is False  # deleted
    assert s.observe((4, 5, 8), 5.0) is True  # renamed into place


class _Failures:
    def __init__(self) -> None:
        self.seen: list[ConfigError] = []

    def failed(self, error: ConfigError) -> None:
        self.seen.append(error)


def test_failure_callback_once_and_watch_interval(setup, clock):
    """subscribe_failed hears a failure once until fixed; watch(interval) sets the settle too."""
    path, provider, _ = setup
    listener = _Failures()
    provider.subscribe_failed(listener.failed)
    write(path, "{")
    settle(provider, clock)
    write(path, "[")
    settle(provider, clock)
    assert 1 == len(listener.seen)
    provider.watch(interval=0.5)
    assert (0.5, True) == (provider.settle, provider.watching)
    provider.close()
    assert not provider.watching


def test_watcher_ends_when_its_provider_is_collected(tmp_path: Path):
    """The watcher holds its provider weakly: a dropped provider's thread ends."""
    path = tmp_path / "f.json"
    path.write_text(doc("on"))
    provider = FileProvider(path, reload_interval=0.01)
    thread = provider._watcher._thread
    assert thread is not None
    del provider
    gc.collect()
    thread.join(30)
    assert not thread.is_alive()
