"""The 64-bit message every generated frame carries.

Layout (most significant bit first, 64 bits in all):

====== ===== =========================================================================
bits   width field
====== ===== =========================================================================
0-7    8     project marker ``0xA7`` (fixed: tells this project's marks from noise)
8-31   24    render/session id (random per session or offline render)
32-47  16    coarse timestamp: whole minutes since 2026-01-01 00:00 UTC, modulo 65536
             (wraps every ~45.5 days; it is the *start* of the session or render)
48-63  16    CRC-16/CCITT-FALSE over bytes 0-5 (marker, id, timestamp)
====== ===== =========================================================================

A random 64-bit word passes the marker and CRC checks with probability 2^-24 (about 6e-8).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

PAYLOAD_BITS = 64
MARKER = 0xA7
MARKER_BITS = 8
ID_BITS = 24
TIME_BITS = 16
CRC_BITS = 16
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Minute 0 of the timestamp field."""


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def minutes_since_epoch(when: datetime | None = None) -> int:
    """Whole minutes from ``EPOCH`` to ``when`` (default: now), modulo 2^16. Naive datetimes are UTC."""
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int((when - EPOCH).total_seconds() // 60) % (1 << TIME_BITS)


@dataclass(frozen=True)
class Payload:
    """What a mark says: which render/session produced the frame and roughly when it started."""

    session_id: int
    """24-bit render/session id, 0 .. 2^24-1."""
    minutes: int
    """Minutes since 2026-01-01 00:00 UTC, modulo 2^16 (see ``datetime_near``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.session_id < (1 << ID_BITS):
            raise ValueError(f"session_id must fit in {ID_BITS} bits, got {self.session_id}")
        if not 0 <= self.minutes < (1 << TIME_BITS):
            raise ValueError(f"minutes must fit in {TIME_BITS} bits, got {self.minutes}")

    @classmethod
    def create(cls, session_id: int | None = None, when: datetime | None = None) -> Payload:
        """A payload for a session starting at ``when`` (default now); a random id when none is given."""
        if session_id is None:
            session_id = secrets.randbits(ID_BITS)
        return cls(session_id=int(session_id), minutes=minutes_since_epoch(when))

    def datetime_near(self, reference: datetime | None = None) -> datetime:
        """The UTC start time this payload names, resolving the 16-bit wrap to the one closest before
        ``reference`` (default now) — exact to the minute when the mark is less than ~45 days old."""
        reference = reference or datetime.now(UTC)
        if reference.tzinfo is None:
            reference = reference.replace(tzinfo=UTC)
        period = 1 << TIME_BITS
        elapsed = int((reference - EPOCH).total_seconds() // 60)
        whole = elapsed - ((elapsed - self.minutes) % period)
        return EPOCH + timedelta(minutes=whole)

    def to_bytes(self) -> bytes:
        """8 bytes: marker, id (3), minutes (2), CRC (2), big-endian."""
        head = bytes([MARKER]) + self.session_id.to_bytes(3, "big") + self.minutes.to_bytes(2, "big")
        return head + crc16_ccitt(head).to_bytes(2, "big")

    def to_bits(self) -> np.ndarray:
        """uint8 array of shape (64,) with values 0/1, most significant bit first."""
        return np.unpackbits(np.frombuffer(self.to_bytes(), dtype=np.uint8))

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload | None:
        """Inverse of ``to_bits``; ``None`` when the marker or the CRC does not match."""
        bits = np.asarray(bits).reshape(-1)
        if bits.size != PAYLOAD_BITS:
            raise ValueError(f"expected {PAYLOAD_BITS} bits, got {bits.size}")
        raw = np.packbits((bits != 0).astype(np.uint8)).tobytes()
        if raw[0] != MARKER or crc16_ccitt(raw[:6]) != int.from_bytes(raw[6:8], "big"):
            return None
        return cls(session_id=int.from_bytes(raw[1:4], "big"), minutes=int.from_bytes(raw[4:6], "big"))

    def __str__(self) -> str:
        started = self.datetime_near().strftime("%Y-%m-%d %H:%M UTC")
        return f"session {self.session_id:06x}, started {started} (minute {self.minutes})"
