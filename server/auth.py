"""Who may open ``/ws`` (and read ``/metrics``): an optional shared token and an optional origin list.

``server.auth_token`` (empty: no check) is accepted as ``?token=<token>`` in the URL or as an
``Authorization: Bearer <token>`` header, compared in constant time. ``server.allowed_origins`` (empty:
any) lists the browser origins allowed to open the socket; requests without an ``Origin`` header
(non-browser clients) pass the origin check, so use the token to keep those out.
"""

from __future__ import annotations

import hmac
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


def origin_ok(allowed: list[str], headers: Headers) -> bool:
    """True when no origin list is configured, the request has no Origin, or it is in the list."""
    if not allowed:
        return True
    origin = headers.get("Origin")
    if origin is None:
        return True
    return origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}
