"""Publish a track pair into a Janus VideoRoom room with aiortc, once; Janus fans it out to viewers.

``JanusPublisher(settings, video, audio, display)``: ``await start()`` creates a Janus session, attaches
``janus.plugin.videoroom``, offers the tracks from a new aiortc peer connection (sendonly, VP8 video and
Opus audio as the room wants) with ``joinandconfigure`` and applies Janus's answer; it returns the feed id
viewers subscribe to. ``await stop()`` leaves the room and closes everything (idempotent). The tracks are
not stopped: they belong to the caller (for a session: relayed copies, see server/broadcast/broadcasts.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from server.broadcast.janus_api import JanusError, JanusSession
from server.broadcast.settings import JanusSettings

log = logging.getLogger("server.broadcast")

VIDEOROOM = "janus.plugin.videoroom"
CONNECT_TIMEOUT_S = 15.0


class JanusPublisher:
    """One publisher (feed) in ``settings.room``; ``on_lost(reason)`` is called once if Janus or the
    media path goes away while publishing."""

    def __init__(self, settings: JanusSettings, video: MediaStreamTrack, audio: MediaStreamTrack | None,
                 display: str, ice_servers: list[dict] | None = None,
                 on_lost: Callable[[str], None] = lambda reason: None) -> None:
        self.settings = settings
        self.video = video
        self.audio = audio
        self.display = display
        self.ice_servers = ice_servers or []
        self.on_lost = on_lost
        self.feed: int | str | None = None
        self.pc: RTCPeerConnection | None = None
        self.janus: JanusSession | None = None
        self._stopped = False
        self._lost = False

    async def start(self) -> int | str:
        """Publish; returns the feed id. Raises ``JanusError`` (one line) and cleans up on failure."""
        try:
            return await self._start()
        except JanusError:
            await self.stop()
            raise
        except Exception as exc:
            await self.stop()
            raise JanusError(f"publishing to Janus failed: {exc.__class__.__name__}: {exc}") from None

    async def _start(self) -> int | str:
        self.janus = await JanusSession(self.settings.url, self.settings.api_secret).create()
        handle = await self.janus.attach(VIDEOROOM, self._on_event)
        ice = [RTCIceServer(**entry) for entry in self.ice_servers]
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        pc.on("connectionstatechange", self._on_connection_state)
        pc.addTransceiver(self.video, direction="sendonly")
        if self.audio is not None:
            pc.addTransceiver(self.audio, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
        body = {"request": "joinandconfigure", "ptype": "publisher", "room": self.settings.room,
                "display": self.display, "audio": self.audio is not None, "video": True}
        if self.settings.pin:
            body["pin"] = self.settings.pin
        data, jsep = await self.janus.request(
            handle, body, {"type": "offer", "sdp": pc.localDescription.sdp})
        if jsep is None or jsep.get("type") != "answer":
            raise JanusError("Janus joined the room but sent no SDP answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        self.feed = data.get("id")
        await self._wait_connected()
        log.info("broadcast published feed=%s room=%s display=%s", self.feed, self.settings.room,
                 self.display)
        return self.feed

    async def _wait_connected(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT_S
        while self.pc is not None and self.pc.connectionState != "connected":
            if self.pc.connectionState in ("failed", "closed") or loop.time() > deadline:
                raise JanusError(f"no media connection to Janus (ICE/DTLS {self.pc.connectionState})")
            await asyncio.sleep(0.05)

    def _on_event(self, event: dict) -> None:
        if event.get("janus") == "hangup" and not self._stopped:
            self._lose(f"Janus hung up: {event.get('reason', 'no reason given')}")

    def _on_connection_state(self) -> None:
        if self.pc is not None and self.pc.connectionState == "failed" and not self._stopped:
            self._lose("the media connection to Janus failed")

    def _lose(self, reason: str) -> None:
        if not self._lost:
            self._lost = True
            log.warning("broadcast lost feed=%s: %s", self.feed, reason)
            self.on_lost(reason)

    async def stop(self) -> None:
        """Leave the room, destroy the Janus session and close the peer connection (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self.janus is not None:
            await self.janus.close()  # destroying the session hangs up and unpublishes the feed
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), 5.0)
            except Exception:
                log.exception("closing the Janus peer connection failed")
