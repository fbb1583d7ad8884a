"""Where placements may go: the checks on an agency's webhook URL and drop folder.

An agency is configured by an admin over the API, but what it points at is reached by the
worker, inside our network: a webhook URL must not reach our own services (an internal
address, the cloud metadata endpoint) and a drop folder must not write outside the data
folder. Both are checked when the agency is configured and again when the worker uses it:
a host name may resolve elsewhere later (DNS rebinding), a folder may have become a link.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path, PurePath
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    """An agency's URL or folder points somewhere placements must not go."""


def _refused(ip: IPAddress, allow_loopback: bool) -> str | None:
    """Why ``ip`` is no place for a placement; None when it is a public address."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        ip = mapped
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if ip.is_private or not ip.is_global:
        return "a private address"
    return None


def public_addresses(host: str, port: int, allow_loopback: bool = False) -> list[IPAddress]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``), all of them public.

    Raises ``UnsafeTarget`` when the name does not resolve or any address is private,
    loopback (unless ``allow_loopback``: development and test only), link-local, multicast
    or reserved: one bad address is enough, since a connection may use any of them."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"the host {host!r} does not resolve") from exc
    found: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        why = _refused(ip, allow_loopback)
        if why is not None:
            raise UnsafeTarget(f"the host {host!r} resolves to {ip}, {why}")
        if ip not in found:
            found.append(ip)
    if not found:
        raise UnsafeTarget(f"the host {host!r} does not resolve")
    return found


def check_endpoint_url(url: str, require_https: bool, allow_loopback: bool) -> None:
    """``UnsafeTarget`` unless ``url`` is an http(s) URL (https when ``require_https``) whose
    host resolves to public addresses only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget("endpoint_url must be an http(s) URL such as https://host/path")
    if require_https and parts.scheme != "https":
        raise UnsafeTarget("endpoint_url must be an https URL outside development and test")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("endpoint_url must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeTarget("endpoint_url has an invalid port") from None
    public_addresses(parts.hostname, port, allow_loopback)


def confined_folder(folder: str, root: str) -> Path:
    """``folder`` (relative to ``root``, or absolute inside it) as a resolved path inside the
    resolved ``root``. ``UnsafeTarget`` for a ``..`` part, or a path that is, or through a
    symbolic link leads, outside ``root``."""
    if "\x00" in folder:
        raise UnsafeTarget("folder must not contain NUL characters")
    if ".." in PurePath(folder).parts:
        raise UnsafeTarget("folder must not contain '..'")
    base = Path(root).resolve()
    path = (base / folder).resolve()  # an absolute folder replaces base here
    if not path.is_relative_to(base):
        raise UnsafeTarget(f"folder must be inside the data folder {str(base)!r}")
    return path
