"""Session lifecycle without a browser: start from a real aiortc offer, then one idempotent teardown."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from aiortc import RTCPeerConnection

from avatar.engine import PreparedAvatar
from server.session import Session, SessionRegistry
from server.signalling import SignallingError

AVATAR = PreparedAvatar("t", np.zeros((64, 64, 3), np.uint8))


async def _offer(audio: bool = True) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    if audio:
        pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


class Outbox:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def send(self, text: str) -> None:
        self.messages.append(json.loads(text))


async def _start(make_config, engine, **overrides):
    config = make_config(**{"engine.size": 64, **overrides})
    registry = SessionRegistry(2)
    outbox = Outbox()
    session = Session(config, engine, AVATAR, outbox.send, on_closed=registry.remove, number=1)
    registry.add(session)
    client, sdp = await _offer()
    answer = await session.start(sdp)
    return session, registry, outbox, client, answer


async def test_start_answers_and_close_twice_frees_everything(make_config, box_engine_factory):
    engine = box_engine_factory(size=64)
    session, registry, outbox, client, answer = await _start(make_config, engine)
    assert answer.startswith("v=0") and "m=video" in answer and "a=sendonly" in answer
    assert len(registry) == 1 and session.worker.alive
    await asyncio.sleep(0.5)  # the pad loop turns silence into windows; the engine renders idle frames
    assert engine.sessions[0].windows > 0 and len(session.buffer) + session.buffer.dropped > 0
    tasks = list(session._tasks)
    assert tasks
    await asyncio.gather(session.close("test"), session.close("again"))
    await session.close("third time")
    assert session.closed and session.close_reason == "test"
    assert all(t.done() for t in tasks) and not session._tasks
    assert not session.worker.alive
    assert engine.sessions[0].closed == 1
    assert session.pc.connectionState == "closed"
    assert session.video.readyState == "ended"
    assert len(registry) == 0
    assert [m["type"] for m in outbox.messages][-1] == "ended"
    await client.close()


async def test_engine_failure_reports_error_and_ends_session(make_config, box_engine_factory):
    engine = box_engine_factory(size=64, fail_at=2)
    session, registry, outbox, client, _ = await _start(make_config, engine)
    for _ in range(200):
        if session.closed and len(registry) == 0:
            break
        await asyncio.sleep(0.02)
    await session.close()
    types = [m["type"] for m in outbox.messages]
    assert "error" in types and types[-1] == "ended"
    error = next(m for m in outbox.messages if m["type"] == "error")
    assert error["message"].startswith("engine failed") and "\n" not in error["message"]
    assert len(registry) == 0 and not session.worker.alive
    await client.close()


async def test_bad_sdp_closes_the_half_started_session(make_config, box_engine_factory):
    engine = box_engine_factory(size=64)
    config = make_config(**{"engine.size": 64})
    registry = SessionRegistry(2)
    session = Session(config, engine, AVATAR, Outbox().send, on_closed=registry.remove)
    registry.add(session)
    with pytest.raises(SignallingError, match="invalid offer sdp"):
        await session.start("v=0\r\nm=video 9 RTP/AVP 0\r\ngarbage\r\n")
    assert session.closed and len(registry) == 0


def test_registry_says_busy_beyond_max_sessions():
    registry = SessionRegistry(1)

    class Dummy:
        id = "a"
        closed = False

    registry.add(Dummy())
    with pytest.raises(SignallingError, match="server busy: 1 sessions running, try later"):
        registry.check_capacity()
    registry.remove(Dummy())
    registry.check_capacity()


def test_a_closing_session_does_not_hold_a_place():
    """A reloaded page's old session is still tearing down when the new offer comes: not busy."""
    registry = SessionRegistry(1)

    class Leaving:
        id = "old"
        closed = True

    registry.add(Leaving())
    registry.check_capacity()
    assert len(registry) == 1 and registry.active() == 0
