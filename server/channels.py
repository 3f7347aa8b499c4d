"""Which sessions a controller's channel message reaches: the speak-mode sessions opened on that channel
with the same secret key (compared in constant time), or all of them when the key is the server's
``auth_token``. Two overlays that chose different keys for one channel name are reached separately.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from server.signalling import SignallingError

if TYPE_CHECKING:
    from server.session import Session, SessionRegistry


def key_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; an unset ``expected`` never matches."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def channel_targets(sessions: SessionRegistry, name: str, key: str, server_token: str = "") -> list[Session]:
    """The sessions on channel ``name`` that ``key`` opens (oldest first). Raises ``SignallingError``:
    ``no session on channel 'x'`` or ``wrong key for channel 'x'``."""
    named = sessions.on_channel(name)
    if not named:
        raise SignallingError(f"no session on channel '{name}'")
    if key_matches(key, server_token):
        return named
    matched = [session for session in named if key_matches(key, session.channel_key)]
    if not matched:
        raise SignallingError(f"wrong key for channel '{name}': use the key its overlay was opened with")
    return matched
