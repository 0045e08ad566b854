"""Where webhooks may go: only http(s) URLs without credentials, to public addresses.
Loopback, private, link-local, site-local, shared, reserved and cloud-metadata destinations
are refused unless their network is explicitly allowed by configuration
(`webhook.allowed_networks`).

The host judged is the one the HTTP client dials: the URL is parsed as aiohttp parses it
(yarl: IDNA/UTS 46, so fullwidth or circled digits become ASCII ones), and a host that spells
an IP address in any way (any Unicode decimal digits, ideographic full stops, a trailing dot,
the shorthand forms a resolver accepts) is judged as that address. An IPv6 address that
carries an IPv4 address (mapped, compatible, translated, 6to4, Teredo, NAT64) is refused
unless both are public. The same test runs when a URL is saved (every address its host
resolves to) and again at connect time, against the address actually dialled, so DNS
rebinding gains nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from yarl import URL

from channels.errors import DestinationRejected

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, the well-known prefix
_CARRY_LAST_32_BITS = (
    _NAT64,
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215, NAT64 for local use
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated)
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (SIIT)
)
# Not public, though some Python versions' `is_global` says otherwise.
_NOT_PUBLIC = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv4Network("192.88.99.0/24"),  # 6to4 relay anycast (deprecated)
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("fec0::/10"),  # site-local (deprecated)
    ipaddress.IPv6Network("3fff::/20"),  # documentation
)
_FULL_STOPS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))
ALLOW_HINT = (
    "allow its network in webhook.allowed_networks (DISSEMINATION_WEBHOOK_ALLOWED_NETWORKS)"
)
"""How a refusal tells an operator to permit a private or loopback destination on purpose."""


def parse_networks(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64 with either
    prefix, compatible or translated), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _CARRY_LAST_32_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _public(address: IPAddress) -> bool:
    if address.is_multicast or any(address in network for network in _NOT_PUBLIC):
        return False
    if isinstance(address, ipaddress.IPv6Address) and not (
        address in _GLOBAL_UNICAST or address in _NAT64
    ):
        return False
    return address.is_global


def address_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """True if `address`, and the IPv4 address it carries if any, are both globally routable,
    or if either is inside an explicitly allowed network."""
    inner = embedded_ipv4(address)
    seen: tuple[IPAddress, ...] = (address,) if inner is None else (address, inner)
    if any(a in network for a in seen for network in allowed):
        return True
    return all(_public(a) for a in seen)


def literal_address(host: str) -> IPAddress | None:
    """An IP literal in any spelling a resolver accepts (e.g. 2130706433, 0x7f.1, 0177.0.0.1)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if not host.isascii():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _folded(host: str) -> str:
    """`host` percent-decoded and NFKC-normalized, with every Unicode decimal digit as its
    ASCII digit, every full stop as ".", and no trailing dot."""
    text = unicodedata.normalize("NFKC", unquote(host)).translate(_FULL_STOPS)
    digits = (str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)
    return "".join(digits).rstrip(".")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a webhook URL leads: the host as the HTTP client dials it (IDNA-encoded, IPv6
    without brackets), the same host decoded to Unicode, and the port."""

    host: str
    unicode_host: str
    port: int

    def spelled_addresses(self) -> list[IPAddress]:
        """Every IP address the host spells: as dialled, and once folded (see `_folded`)."""
        spellings = (self.host, _folded(self.host), _folded(self.unicode_host))
        found = (literal_address(spelling) for spelling in spellings)
        return list(dict.fromkeys(a for a in found if a is not None))


def check_url_shape(url: str) -> Destination:
    """Where an acceptable webhook URL leads; raise DestinationRejected otherwise. The URL is
    parsed as aiohttp parses it, so the host judged is the host dialled."""
    try:
        parsed = URL(url)
        host, unicode_host, port = parsed.raw_host, parsed.host, parsed.port
    except (TypeError, ValueError):  # UnicodeError is a ValueError
        raise DestinationRejected("invalid_url", "not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise DestinationRejected("unsupported_scheme", "only http and https webhooks are allowed")
    if parsed.user is not None or parsed.password is not None:
        raise DestinationRejected("credentials_in_url", "a webhook URL must not carry credentials")
    if not host or port is None:
        raise DestinationRejected("invalid_url", "the URL has no host")
    try:
        # What getaddrinfo does to a name first; its UnicodeError is no OSError.
        host.encode("idna")
    except UnicodeError:
        raise DestinationRejected("invalid_url", "the host is not a valid name") from None
    return Destination(host, unicode_host or host, port)


async def resolve(destination: Destination) -> list[IPAddress]:
    """Every address the destination's host resolves to (A and AAAA); none for an IP literal,
    which the HTTP client dials without resolving."""
    if literal_address(destination.host) is not None:
        return []
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        message = f"cannot resolve {destination.unicode_host!r}"
        raise DestinationRejected("unresolvable_host", message) from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def forbidden(destination: Destination, address: IPAddress) -> DestinationRejected:
    """The rejection of a destination that reaches a forbidden address."""
    host = destination.unicode_host
    where = host if host == str(address) else f"{host} ({address})"
    return DestinationRejected(
        "forbidden_destination",
        f"{where} is loopback, private, link-local or reserved; to send there, {ALLOW_HINT}",
    )


async def check_webhook_url(url: str, allowed: Sequence[IPNetwork]) -> None:
    """Raise DestinationRejected unless every address the URL's host spells or resolves to
    may receive webhooks."""
    destination = check_url_shape(url)
    for address in destination.spelled_addresses():
        if not address_allowed(address, allowed):
            raise forbidden(destination, address)
    for address in await resolve(destination):
        if not address_allowed(address, allowed):
            raise forbidden(destination, address)
