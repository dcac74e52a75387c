"""Which download URLs and addresses secstor may fetch from (server-side request forgery guard).

A template URL is chosen by a user, and the worker fetching it sits inside the cloud's
network: without these checks a user could make it read the metadata service, a database
admin page or anything else only reachable from inside.  The checks are on *addresses*, not
host names, and the downloader connects to the exact address it checked, so neither a name
pointing at 127.0.0.1 nor DNS rebinding between check and connect gets through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWANCE_SETTING = "secstorage.allowed.internal.sites"
DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """The URL is malformed, uses a refused scheme, or leads to a refused address."""


@dataclass(frozen=True)
class ParsedUrl:
    url: str
    scheme: str  # lower case: http, https or ftp
    host: str  # lower case; an IP literal without brackets, or an ASCII (IDNA) name
    port: int  # explicit or the scheme's default
    target: str  # path and query to request, never empty ("/" at least)
    username: str | None = None  # ftp only
    password: str | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def parse_allowed_cidrs(cidrs: Iterable[str | IPNetwork] | str | None) -> tuple[IPNetwork, ...]:
    """The setting's CSV text, or a list of CIDRs, as networks (host bits ignored, like the setting)."""
    if cidrs is None:
        return ()
    if isinstance(cidrs, str):
        cidrs = cidrs.split(",")
    networks = []
    for cidr in cidrs:
        if isinstance(cidr, str):
            cidr = cidr.strip()
            if not cidr:
                continue
            try:
                cidr = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise UnsafeUrl(f"{ALLOWANCE_SETTING} holds {cidr!r}, which is not a CIDR") from None
        networks.append(cidr)
    return tuple(networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), which is where
    packets really go; checking only the IPv6 form would let ::ffff:127.0.0.1 through."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _internal_kind(ip: IPAddress) -> str | None:
    """Why ``ip`` counts as internal, or None for an ordinary public address."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local (cloud metadata)" if str(ip) == "169.254.169.254" else "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.version == 4 and ip in _CGNAT:
        return "carrier-grade NAT (100.64.0.0/10)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def check_address(
    ip: str | IPAddress, allowed_cidrs: Iterable[str | IPNetwork] | str | None = (), *, host: str | None = None
) -> None:
    """Raise UnsafeUrl unless ``ip`` is public or inside one of ``allowed_cidrs``.

    ``host`` is the name the address was resolved from, only to make the message useful.
    """
    ip = ipaddress.ip_address(ip)
    allowed = parse_allowed_cidrs(allowed_cidrs)
    embedded = _embedded_ipv4(ip)
    # An IPv6 form of an IPv4 address is judged by the IPv4 address: that is where packets go.
    judged = ip if embedded is None else embedded
    if any(a.version == net.version and a in net for a in {ip, judged} for net in allowed):
        return
    kind = _internal_kind(judged)
    if kind is None:
        return
    article = "an" if kind[0] in "aeiou" else "a"
    stands_for = f" (which stands for {judged})" if judged != ip else ""
    if host and host != str(ip):
        what = f"URL host {host} resolves to {ip}{stands_for}, {article} {kind} address"
    else:
        what = f"URL host {ip}{stands_for} is {article} {kind} address"
    raise UnsafeUrl(f"{what}; downloads from internal addresses are refused unless {ALLOWANCE_SETTING} allows them")


def check_url(url: str) -> ParsedUrl:
    """Parse a download URL, refusing anything but a plain http/https/ftp URL with a host."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeUrl("URL is empty")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
        # Parsers disagree about where such URLs' hosts end; refusing them keeps ours the only reading.
        raise UnsafeUrl(f"URL contains whitespace, control characters or backslashes: {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl(f"URL scheme {parts.scheme or '(none)'!r} is not supported; use http, https or ftp")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a non-numeric or out-of-range port
        raise UnsafeUrl(f"URL {url!r} has an invalid port: {exc}") from None
    if not host:
        raise UnsafeUrl(f"URL {url!r} has no host")
    if "@" in parts.netloc and scheme != "ftp":
        # "http://trusted.example@10.0.0.1/" reads like the trusted host to a person; FTP
        # needs credentials, HTTP downloads do not.
        raise UnsafeUrl(f"URL {url!r} contains credentials before the host; only ftp URLs may carry a login")
    if port == 0:
        raise UnsafeUrl(f"URL {url!r} has an invalid port: 0")
    host = host.rstrip(".")  # "example.com." is the same name; keep one spelling
    if not host:
        raise UnsafeUrl(f"URL {url!r} has no host")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise UnsafeUrl(f"URL host {host!r} is not a valid host name") from None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return ParsedUrl(
        url=url,
        scheme=scheme,
        host=host,
        port=port or DEFAULT_PORTS[scheme],
        target=target,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
