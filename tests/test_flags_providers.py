import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tipkit.errors import ConfigError
from tipkit.flags import FileProvider, Flags, FlagsReloadFailed, Reason
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
    provider = FileProvider(path, reload_interval=1.0, clock=clock)
    return path, provider, Flags(provider)


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


def test_reload_after_interval(setup, clock):
    """A changed file is picked up on the first evaluation after reload_interval."""
    path, provider, flags = setup
    assert flags.is_enabled("f") is True
    write(path, doc("off"))
    clock.advance(0.5)
    assert flags.is_enabled("f") is True
    clock.advance(0.5)
    assert False is flags.is_enabled("f")
    assert provider.reloads == 1
    assert "reloads=1" in repr(provider)


def test_stat_checked_at_most_every_interval(setup, clock, monkeypatch):
    """The file's stat is read at most once per reload_interval, on evaluation."""
    _, provider, flags = setup
    calls = []
    real = provider._stat_now
    monkeypatch.setattr(provider, "_stat_now", lambda: calls.append(1) or real())
    for _ in range(100):
        flags.is_enabled("f")
    assert [] == calls
    clock.advance(1)
    for _ in range(100):
        flags.is_enabled("f")
    assert [1] == calls


def test_failed_reload_keeps_last_good(setup, clock):
    """A reload that fails validation keeps the last good flags and publishes FlagsReloadFailed."""
    path, provider, flags = setup
    with capture_events(FlagsReloadFailed) as events:
        write(path, doc("maybe"))
        clock.advance(1)
        assert flags.is_enabled("f") is True
    assert len(events) == 1
    assert str(path) == events[0].name
    assert "unknown variant" in str(events[0].error)
    assert {
        "tipkit.name": str(path),
        "feature_flag.provider.name": "tipkit",
        "error.type": "ConfigError",
    } == events[0].otel_attributes()
    assert provider.last_error is events[0].error
    assert "stale" in repr(provider)
    # the same broken file is not re-parsed every interval
    with capture_events(FlagsReloadFailed) as again:
        clock.advance(1)
        flags.is_enabled("f")
    assert [] == again
    write(path, doc("off"))
    clock.advance(1)
    assert False is flags.is_enabled("f")
    assert provider.last_error is None


def test_deleted_file_keeps_last_good(setup, clock):
    """A deleted file keeps the last good flags."""
    path, provider, flags = setup
    path.unlink()
    clock.advance(1)
    assert flags.is_enabled("f") is True
    assert provider.last_error is not None


def test_yaml_reload(tmp_path: Path, clock):
    """YAML files reload too."""
    path = tmp_path / "f.yaml"
    write(
        path,
        "flags:\n  f:\n    variants: {on: true, off: false}\n    default_variant: on\n",
    )
    flags = Flags.from_file(path, clock=clock, reload_interval=2)
    assert flags.is_enabled("f") is True
    write(
        path,
        "flags:\n  f:\n    variants: {on: true, off: false}\n    default_variant: off\n",
    )
    clock.advance(2)
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
    """Two Flags over one provider both see a reload the other triggered."""
    path, provider, flags = setup
    other = Flags(provider)
    write(path, doc("off"))
    clock.advance(1)
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
    provider = FileProvider(path, reload_interval=0, clock=clock)
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
        provider.check()
    stop.set()
    for t in threads:
        t.join()
    assert [] == errors
    assert seen <= {(True, "one"), (False, "two"), (True, "two"), (False, "one")}
    assert provider.reloads >= 1
