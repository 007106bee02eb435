"""Flag documents as OpenFeature sees them: empty default variants refused, metadata."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from openfeature import api
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ParseError as OFParseError
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import ProviderStatus

from tipkit.errors import ConfigError
from tipkit.flags import FlagProvider, Flags
from tipkit.flags._compile import METADATA_CHARS, METADATA_ENTRIES
from tipkit.flags.openfeature import TipkitProvider
from tipkit.testing import FakeClock


@pytest.mark.parametrize(
    "body", ["default_variant: null", "default_variant:", "default_variant: ~"]
)
def test_an_empty_default_variant_is_refused_with_file_line_flag_field(
    tmp_path: Path, body: str
) -> None:
    """An empty ``default_variant`` is a ConfigError naming file, line, flag and field."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "version: 1\nflags:\n  x:\n    variants: {on: true, off: false}\n"
        f"    {body}\n"
    )
    with pytest.raises(ConfigError) as caught:
        Flags.from_file(path)
    message = str(caught.value)
    assert f"{path}:5:" in message
    assert "flag 'x'" in message
    assert "field 'default_variant'" in message
    assert "empty" in message


def test_an_empty_default_variant_is_refused_even_with_a_fallthrough(
    tmp_path: Path,
) -> None:
    """An explicit null is a mistake even when ``fallthrough`` says what to serve."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "version: 1\nflags:\n  x:\n    variants: {on: true, off: false}\n"
        "    default_variant: null\n    fallthrough: on\n"
    )
    with pytest.raises(ConfigError) as caught:
        Flags.from_file(path)
    assert "field 'default_variant'" in str(caught.value)


META_DOC = """\
version: 1
metadata: {team: payments, tier: 1}
flags:
  tagged:
    variants: {on: true, off: false}
    default_variant: on
    metadata: {string: "1.0.2", integer: 2, float: 0.1, boolean: true, tier: 2}
  plain:
    variants: {on: true, off: false}
    default_variant: on
"""


@pytest.fixture
def of_client(tmp_path: Path) -> Iterator[Any]:
    """An OpenFeature client over a tipkit provider of META_DOC."""
    path = tmp_path / "flags.yaml"
    path.write_text(META_DOC)
    domain = f"meta-{id(path)}"
    api.set_provider_and_wait(TipkitProvider(Flags.from_file(path), watch=None), domain)
    yield api.get_client(domain)
    api.shutdown()


def test_flag_metadata_holds_document_then_flag_entries(of_client: Any) -> None:
    """The flag's own metadata wins over the document's; tipkit's keys follow."""
    details = of_client.get_boolean_details("tagged", False)
    meta = details.flag_metadata
    assert "1.0.2" == meta["string"]
    assert 2 == meta["integer"]
    assert 0.1 == meta["float"]
    assert True is meta["boolean"]
    assert 2 == meta["tier"]
    assert "payments" == meta["team"]
    assert "flag_version" in meta


def test_document_metadata_reaches_flags_without_their_own(of_client: Any) -> None:
    """A flag with no metadata carries the document's entries."""
    meta = of_client.get_boolean_details("plain", False).flag_metadata
    assert "payments" == meta["team"]
    assert 1 == meta["tier"]


def test_flag_metadata_is_immutable(of_client: Any) -> None:
    """flag_metadata is a read-only mapping (spec 1.4.15.1)."""
    meta = of_client.get_boolean_details("tagged", False).flag_metadata
    assert isinstance(meta, MappingProxyType)
    with pytest.raises(TypeError):
        meta["string"] = "changed"  # type: ignore[index]


def test_compiled_metadata_is_read_only(tmp_path: Path) -> None:
    """The compiled flag and flag set keep metadata as read-only mappings."""
    path = tmp_path / "flags.yaml"
    path.write_text(META_DOC)
    flag_set = Flags.from_file(path).flag_set
    assert flag_set is not None
    assert {"team": "payments", "tier": 1} == dict(flag_set.metadata)
    with pytest.raises(TypeError):
        flag_set.flags["tagged"].metadata["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ("[1, 2]", "must be a mapping"),
        ("{nested: {a: 1}}", "must be a bool, string, integer or float"),
        ("{empty: null}", "must be a bool, string, integer or float"),
        ("{1: x}", "metadata key must be a non-empty string"),
        ("{long: " + "x" * (METADATA_CHARS + 1) + "}", "longer than"),
        (
            "{" + ", ".join(f"k{i}: 1" for i in range(METADATA_ENTRIES + 1)) + "}",
            "at most",
        ),
    ],
)
def test_bad_metadata_is_refused_with_flag_and_field(
    tmp_path: Path, metadata: str, words: str
) -> None:
    """Metadata is string keys to scalars, bounded; anything else is a ConfigError."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "version: 1\nflags:\n  x:\n    variants: {on: true, off: false}\n"
        f"    default_variant: on\n    metadata: {metadata}\n"
    )
    with pytest.raises(ConfigError) as caught:
        Flags.from_file(path)
    message = str(caught.value)
    assert "flag 'x'" in message
    assert "field 'metadata'" in message
    assert words in message


def test_bad_document_metadata_is_refused(tmp_path: Path) -> None:
    """Document-level metadata follows the same rules."""
    path = tmp_path / "flags.yaml"
    path.write_text(
        "version: 1\nmetadata: {a: [1]}\nflags:\n  x:\n"
        "    variants: {on: true, off: false}\n    default_variant: on\n"
    )
    with pytest.raises(ConfigError) as caught:
        Flags.from_file(path)
    assert f"{path}:2:" in str(caught.value)
    assert "field 'metadata'" in str(caught.value)


class Unparsable(FlagProvider):
    """A tipkit flag source whose document does not parse."""

    def current(self, now: float) -> Any:
        raise ConfigError("flags.yaml:3: invalid YAML", source="flags.yaml")


def test_a_document_that_does_not_parse_is_parse_error() -> None:
    """Initialising fails with PARSE_ERROR; evaluations answer PARSE_ERROR and the default."""
    provider = TipkitProvider(Flags(Unparsable(), clock=FakeClock()), watch=None)
    with pytest.raises(OFParseError):
        api.set_provider_and_wait(provider, "unparsable")
    client = api.get_client("unparsable")
    assert ProviderStatus.ERROR == client.get_provider_status()
    details = client.get_boolean_details("anything", True)
    api.shutdown()
    assert (True, OFReason.ERROR, OFErrorCode.PARSE_ERROR) == (
        details.value,
        details.reason,
        details.error_code,
    )


class Counting(TipkitProvider):
    """A TipkitProvider recording the events it emits itself."""

    emitted: list[ProviderEvent]

    def emit(self, event: ProviderEvent, details: Any) -> None:
        self.emitted.append(event)
        super().emit(event, details)


def test_initialize_gives_exactly_one_ready_or_error_event() -> None:
    """The SDK (0.10) emits READY/ERROR after initialize; the provider adds none."""
    good = Counting(Flags.from_dict({"version": 1, "flags": {}}), watch=None)
    bad = Counting(Flags(Unparsable(), clock=FakeClock()), watch=None)
    good.emitted, bad.emitted = [], []
    api.set_provider_and_wait(good, "once-good")
    with pytest.raises(OFParseError):
        api.set_provider_and_wait(bad, "once-bad")
    statuses = (
        api.get_client("once-good").get_provider_status(),
        api.get_client("once-bad").get_provider_status(),
    )
    api.shutdown()
    assert ([], []) == (good.emitted, bad.emitted)
    assert (ProviderStatus.READY, ProviderStatus.ERROR) == statuses
