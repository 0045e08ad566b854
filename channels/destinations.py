"""Where webhooks may go: only http(s) URLs without credentials, to public addresses.
Loopback, private, link-local, shared, reserved and cloud-metadata destinations are refused
unless their network is explicitly allowed by configuration (`webhook.allowed_networks`).

The same address test runs when a URL is saved (every address its host resolves to) and
again at connect time, against the address actually dialled, so DNS rebinding gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from channels.errors import DestinationRejected

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address hidden in an IPv4-mapped, 6to4 or Teredo IPv6 address, if any."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def address_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """True if `address` is globally routable, or inside an explicitly allowed network."""
    inner = _unwrap(address)
    if any(inner in network or address in network for network in allowed):
        return True
    return inner.is_global and address.is_global and not inner.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """An IP literal in any spelling a resolver accepts (e.g. 2130706433, 0x7f.1, 0177.0.0.1)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url_shape(url: str) -> tuple[str, int]:
    """The (host, port) of an acceptable webhook URL; raise DestinationRejected otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationRejected("invalid_url", "not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise DestinationRejected("unsupported_scheme", "only http and https webhooks are allowed")
    if parts.username is not None or parts.password is not None:
        raise DestinationRejected("credentials_in_url", "a webhook URL must not carry credentials")
    if not parts.hostname:
        raise DestinationRejected("invalid_url", "the URL has no host")
    try:
        # What getaddrinfo does to a name first; its UnicodeError is no OSError.
        parts.hostname.encode("idna")
    except UnicodeError:
        raise DestinationRejected("invalid_url", "the host is not a valid name") from None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (A and AAAA)."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise DestinationRejected("unresolvable_host", f"cannot resolve {host!r}") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def check_webhook_url(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Raise DestinationRejected unless every address of the URL's host may receive webhooks."""
    host, port = check_url_shape(url)
    for address in await resolve(host, port):
        if not address_allowed(address, allowed):
            raise DestinationRejected(
                "forbidden_destination",
                f"{host} resolves to {address}: loopback, private, link-local or reserved",
            )
