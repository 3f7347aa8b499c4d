"""Offers whose host candidates are mDNS names (browsers without media permission) are answered without
waiting for name resolution, and still connect (server/mdns_candidates.py)."""

from __future__ import annotations

import json

from aiortc import RTCSessionDescription
from websockets.asyncio.client import connect

from server.app import App
from server.mdns_candidates import split_mdns_candidates
from tests.test_hostile_input import RealClient

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    "a=candidate:1 1 udp 2122260223 4f2a8c1e-0000-4000-8000-000000000001.local 50000 typ host\r\n"
    "a=candidate:2 1 udp 1686052607 203.0.113.7 50001 typ srflx raddr 0.0.0.0 rport 0\r\n"
    "a=end-of-candidates\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
    "a=candidate:1 1 udp 2122260223 4F2A8C1E-0000-4000-8000-000000000001.LOCAL 50000 typ host\r\n"
)


def test_mdns_candidates_are_taken_out_with_their_mid():
    sdp, taken, ended = split_mdns_candidates(OFFER)
    assert [mid for mid, _ in taken] == ["0", "1"] and ended
    assert ".local" not in sdp.lower() and "end-of-candidates" not in sdp
    assert "203.0.113.7" in sdp and sdp.count("m=") == 2
    assert split_mdns_candidates(sdp) == (sdp, [], False)


def _hide_host_addresses(sdp: str) -> str:
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " typ host" in line:
            fields = line.split()
            fields[4] = "0a1b2c3d-1111-2222-3333-444455556666.local"
            line = " ".join(fields)
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


async def test_an_offer_with_only_mdns_host_candidates_connects(make_config, box_engine_factory):
    config = make_config(**{"engine.size": 128, "provenance.watermark": False})
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    client = RealClient()
    try:
        await client.pc.setLocalDescription(await client.pc.createOffer())
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            sdp = _hide_host_addresses(client.pc.localDescription.sdp)
            assert ".local" in sdp
            await ws.send(json.dumps({"type": "offer", "sdp": sdp}))
            answer = json.loads(await ws.recv())
            assert answer["type"] == "answer", answer
            await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            assert await client.wait_frames(10), "no video over peer-reflexive candidates"
    finally:
        await client.close()
        await app.stop()
