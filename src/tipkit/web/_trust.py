"""Who may mark a request as synthetic: client networks and shared-secret headers."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SharedSecret", "Trust", "TrustLike"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SharedSecret:
    """Trust a request whose *header* carries *secret* (compared in constant time).

    ::

        ASGIMiddleware(app, trust=[SharedSecret("x-probe-key", os.environ["PROBE_KEY"])])
    """

    __slots__ = ("_secret", "header")

    def __init__(self, header: str, secret: str) -> None:
        given: tuple[object, object] = (header, secret)  # callers are not always typed
        if not isinstance(given[0], str) or not header:
            raise TypeError(
                f"SharedSecret: header must be a non-empty str, got {header!r}"
            )
        if not isinstance(given[1], str) or len(secret) < 8:
            raise ValueError(
                "SharedSecret: secret must be a str of 8 characters or more"
            )
        self.header = header.lower()
        self._secret = secret.encode()

    def __repr__(self) -> str:
        return f"SharedSecret({self.header!r}, '***')"

    def matches(self, value: str | None) -> bool:
        """Return whether header *value* is the secret."""
        return value is not None and hmac.compare_digest(
            value.encode("utf-8", "surrogateescape"), self._secret
        )


TrustLike = Iterable[str | Network | SharedSecret]


class Trust:
    """The sources whose synthetic mark is honoured; empty trusts nobody.

    Built from network strings (``"10.0.0.0/8"``, ``"127.0.0.1"``,
    ``"::1"``), network objects and :class:`SharedSecret` s. A request is
    trusted when its client address is in one of the networks *or* it carries
    one of the secrets. Immutable and thread-safe.

    Raises:
        ValueError: a network string does not parse.
        TypeError: an item is of another kind.
    """

    __slots__ = ("networks", "secrets")

    def __init__(self, sources: TrustLike = ()) -> None:
        if isinstance(sources, str | SharedSecret):
            sources = (sources,)
        networks: list[Network] = []
        secrets: list[SharedSecret] = []
        for item in sources:
            if isinstance(item, SharedSecret):
                secrets.append(item)
            elif isinstance(item, str):
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError as exc:
                    raise ValueError(
                        f"trust: {item!r} is not a network: {exc}"
                    ) from None
            elif isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                networks.append(item)
            else:
                raise TypeError(
                    "trust: expected network strings, ip networks or SharedSecret, "
                    f"got {item!r}"
                )
        self.networks = tuple(networks)
        self.secrets = tuple(secrets)

    def __repr__(self) -> str:
        items: list[Any] = [str(n) for n in self.networks]
        items += self.secrets
        return f"Trust({items!r})"

    def __bool__(self) -> bool:
        return bool(self.networks or self.secrets)

    def trusts(self, client: str | None, header: Callable[[str], str | None]) -> bool:
        """Return whether a request from *client* with headers read by *header* is trusted.

        Never raises: an unparsable client address is simply not in a network.
        """
        for secret in self.secrets:
            if secret.matches(header(secret.header)):
                return True
        if client and self.networks:
            try:
                addr = ipaddress.ip_address(client)
            except ValueError:
                return False
            return any(addr in net for net in self.networks)
        return False
