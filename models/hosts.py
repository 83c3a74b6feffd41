"""Host names, IP addresses and URLs of a site file, checked by their syntax alone.

Rule: pure, no DNS lookup, no socket: a host is an IPv4 or IPv6 literal (:mod:`ipaddress`) or a
DNS name by RFC 1123 label syntax (labels of 1–63 letters, digits and hyphens, not beginning or
ending with a hyphen, 253 characters in all). Everything else is refused with a message saying
what to write instead, so a typo fails on load and not at the first connect: a port inside the
host (``127.0.0.1:502``: the port has its own field), an all-numeric dotted name that is not a
valid IPv4 address (``127.0.0.300``, ``10.1``, ``010.0.0.1``), brackets around an IPv6 address,
a URL where a host belongs, non-ASCII names (DNS has them in their ``xn--`` form). A URL
(:func:`check_url`) is split with :mod:`urllib.parse`; its host is checked as above, its port
must be a number in 1..65535, and credentials in it are refused (they come from the
environment, never from the YAML).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit

__all__ = ["check_host", "check_url"]

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_NUMERIC_DOTTED = re.compile(r"^[0-9.]+$")
_HOST_PORT = re.compile(r"^(?P<host>[^:\[\]]*):(?P<port>[0-9]*)$")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]*)\](?::(?P<port>[0-9]*))?$")


@lru_cache(maxsize=4096)
def check_host(host: str) -> str:
    """``host`` itself if it is an IP address or a DNS host name; else ``ValueError`` saying
    what is wrong (cached: a district names the same few gateways thousands of times)."""
    if not host:
        raise ValueError("empty host")
    if host != host.strip():
        raise ValueError(f"host {host!r} has spaces around it")
    if "://" in host or "/" in host:
        raise ValueError(f"host {host!r} is a URL or path; give the host name or address alone")
    if m := _BRACKETED.match(host):
        inner = m["host"]
        if m["port"] is not None:
            raise ValueError(
                f"host {host!r} has a port in it; give the address alone ({inner}) "
                f"and the port as port: {m['port'] or '<number>'}"
            )
        raise ValueError(f"write an IPv6 address without brackets: {inner}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            pass
        else:
            return host
        if m := _HOST_PORT.match(host):
            raise ValueError(
                f"host {host!r} has a port in it; give the host alone ({m['host']}) "
                f"and the port as port: {m['port'] or '<number>'}"
            )
        raise ValueError(f"{host!r} is not a valid IPv6 address")
    if _NUMERIC_DOTTED.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"{host!r} is not a valid IPv4 address (four numbers 0..255 without leading "
                "zeros, e.g. 192.168.0.10)"
            ) from None
        return host
    if not host.isascii():
        raise ValueError(
            f"host name {host!r} is not ASCII; write its ASCII form (xn--…, as DNS has it)"
        )
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        raise ValueError(f"host name is {len(name)} characters long, more than 253")
    for label in name.split("."):
        if not label:
            raise ValueError(f"host name {host!r} has an empty label (two dots in a row?)")
        if len(label) > 63:
            raise ValueError(f"host name {host!r}: label {label[:20]!r}… is longer than 63")
        if not _LABEL.match(label):
            raise ValueError(
                f"host name {host!r}: label {label!r} may hold only letters, digits and hyphens, "
                "and not begin or end with a hyphen"
            )
    return host


def check_url(url: str, *, schemes: tuple[str, ...], require_port: bool) -> str:
    """``url`` itself if its scheme is one of ``schemes``, its host passes :func:`check_host`
    and its port (required when ``require_port``) is in 1..65535; else ``ValueError``."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 host
        raise ValueError(f"url {url!r}: {exc}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"url {url!r} must begin with {' or '.join(s + '://' for s in schemes)}")
    netloc = parts.netloc
    if "@" in netloc:
        raise ValueError(
            f"url {url!r} has credentials in it; they never go in the site file (name "
            "environment variables for them instead)"
        )
    host = netloc
    port_text: str | None = None
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        host = host[1:end]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"url {url!r}: unexpected {rest!r} after the IPv6 address")
            port_text = rest[1:]
        if ":" not in host:
            raise ValueError(f"url {url!r}: brackets are only for IPv6 addresses")
    elif ":" in host:
        host, _, port_text = host.rpartition(":")
        if ":" in host:
            raise ValueError(f"url {url!r}: write an IPv6 host in brackets, e.g. [::1]:4840")
    if not host:
        raise ValueError(f"url {url!r} has no host")
    try:
        check_host(host)
    except ValueError as exc:
        raise ValueError(f"url {url!r}: {exc}") from None
    if port_text is None or port_text == "":
        if require_port:
            raise ValueError(f"url {url!r} needs a port, e.g. {parts.scheme}://{netloc}:4840/")
        return url
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"url {url!r}: port {port_text!r} is not a number in 1..65535")
    return url
