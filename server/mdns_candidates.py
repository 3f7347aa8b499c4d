"""Browsers hide their host addresses behind mDNS names (``<uuid>.local``) until the page has media
permission, as a kiosk or overlay page never does. aiortc resolves such candidates inside
``setRemoteDescription``, waiting up to 1 s per offer where nobody answers the multicast query (measured:
1.01 s vs 0.00 s for the same offer with plain addresses), so the answer - and the first frame - came a
second late. ``split_mdns_candidates`` takes them out of the offer; ``add_later`` hands them to the peer
connection afterwards, in the background, where resolving them delays nothing (the browser's own
connectivity checks reach the server meanwhile and give it a peer-reflexive candidate).
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger("server.session")


def split_mdns_candidates(sdp: str) -> tuple[str, list[tuple[str | None, str]], bool]:
    """(the SDP without ``a=candidate`` lines whose address ends in ``.local`` and, when any were taken
    out, without ``a=end-of-candidates``; the taken lines as (mid, text after ``a=candidate:``); whether
    an end-of-candidates line was taken)."""
    kept: list[str] = []
    taken: list[tuple[str | None, str]] = []
    mid: str | None = None
    ends = 0
    lines = sdp.splitlines()
    for line in lines:
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip()
        elif line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) > 4 and fields[4].lower().endswith(".local"):
                taken.append((mid, line[len("a=candidate:"):]))
                continue
        elif line.startswith("a=end-of-candidates"):
            ends += 1
        kept.append(line)
    if not taken:
        return sdp, [], False
    if ends:
        kept = [line for line in kept if not line.startswith("a=end-of-candidates")]
    return "\r\n".join(kept) + "\r\n", taken, bool(ends)


async def add_later(pc: RTCPeerConnection, taken: list[tuple[str | None, str]], ended: bool) -> None:
    """Give ``pc`` the candidates ``split_mdns_candidates`` took out (then end-of-candidates if the offer
    had it). A candidate aiortc cannot parse or add is skipped with a log line."""
    for mid, text in taken:
        try:
            candidate = candidate_from_sdp(text)
            candidate.sdpMid = mid
            if mid is None:
                candidate.sdpMLineIndex = 0
            await pc.addIceCandidate(candidate)
        except Exception as exc:  # a malformed candidate must not end the session
            log.info("skipped remote mDNS candidate: %s: %s", exc.__class__.__name__, exc)
    if ended:
        try:
            await pc.addIceCandidate(None)
        except Exception as exc:
            log.info("end-of-candidates not applied: %s: %s", exc.__class__.__name__, exc)
