"""Who may open ``/ws`` (and read ``/metrics``): an optional shared token and a browser origin check.

``server.auth_token`` (empty: no check) is accepted as ``?token=<token>`` in the URL or as an
``Authorization: Bearer <token>`` header, compared in constant time.

Origins (cross-site WebSocket hijacking): a browser sends an ``Origin`` header with every WebSocket
handshake. With ``server.allowed_origins`` empty (the default) only **same-origin** pages may open the
socket: the Origin's ``host[:port]`` must equal the request's ``Host`` header (scheme ignored, exact
name: a page from ``http://localhost:8080`` may not talk to ``127.0.0.1:8080``). While the server
listens on a loopback address the Host must also be a loopback name (``localhost``, ``127.x.y.z``,
``[::1]``), so a DNS-rebinding page (``http://evil.example:8080`` resolving to 127.0.0.1) is refused
too. A non-empty list replaces that rule: only the listed origins pass (``"*"`` lets any origin in).
Requests without an ``Origin`` (python clients, curl) pass the origin check, so use the token to
keep those out.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers


def request_token(path: str, headers: Headers) -> str | None:
    """The token a request carries (``Authorization: Bearer`` first, then ``?token=``), or None."""
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    query = urlsplit(path).query
    values = parse_qs(query, keep_blank_values=True).get("token") if query else None
    return values[0] if values else None


def token_ok(expected: str, path: str, headers: Headers) -> bool:
    """True when no token is configured or the request carries the right one."""
    if not expected:
        return True
    given = request_token(path, headers)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


ANY_ORIGIN = "*"
"""In ``server.allowed_origins``: every origin may open the socket (what an empty list meant before)."""
DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def origin_refusal(allowed: list[str], headers: Headers, server_host: str = "") -> str | None:
    """None when the request may open the socket; otherwise a one-line reason for the page.

    ``allowed``: ``server.allowed_origins`` (empty: same-origin only, ``"*"``: any); ``server_host``:
    the address the server listens on (``server.host``), for the DNS-rebinding guard."""
    origin = headers.get("Origin")
    if origin is None:
        return None  # not a browser: the token is what keeps such clients out
    origin = origin.strip().rstrip("/").lower()
    if allowed:
        listed = {o.strip().rstrip("/").lower() for o in allowed}
        if ANY_ORIGIN in listed or origin in listed:
            return None
        return (f"origin {_shown(origin)} may not open this socket: it is not in server.allowed_origins")
    host = (headers.get("Host") or "").strip().lower()
    if not host or _netloc(origin) != _strip_default_port(host, origin):
        return (f"origin {_shown(origin)} may not open this socket: only pages served by this server "
                f"({_shown(host or '?')}) may, or list the origin in server.allowed_origins")
    if _is_loopback(server_host) and not _is_loopback(_hostname(host)):
        return (f"host name {_shown(_hostname(host))} is not a loopback name while the server listens on "
                f"{server_host}: open the page at 127.0.0.1 or localhost, or list the origin in "
                "server.allowed_origins")
    return None


def origin_ok(allowed: list[str], headers: Headers, server_host: str = "") -> bool:
    """True when ``origin_refusal`` finds nothing to refuse."""
    return origin_refusal(allowed, headers, server_host) is None


def _netloc(origin: str) -> str | None:
    """``scheme://host[:port]`` -> ``host[:port]`` without the scheme's default port; None if malformed."""
    scheme, sep, rest = origin.partition("://")
    if not sep or not rest or "/" in rest or "@" in rest:
        return None
    port = DEFAULT_PORTS.get(scheme)
    return rest[: -len(port) - 1] if port and rest.endswith(":" + port) else rest


def _strip_default_port(host: str, origin: str) -> str:
    """The Host header without the default port of the Origin's scheme (browsers omit it in both)."""
    port = DEFAULT_PORTS.get(origin.partition("://")[0])
    return host[: -len(port) - 1] if port and host.endswith(":" + port) else host


def _hostname(host: str) -> str:
    """``name:port``, ``[v6]:port`` or ``name`` -> the name (IPv6 without brackets)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(name: str) -> bool:
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _shown(text: str, limit: int = 80) -> str:
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
