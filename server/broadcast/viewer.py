"""A Janus VideoRoom subscriber with aiortc: watches one feed and counts what it receives.

Used by the tests and ``benchmarks/janus_fanout.py`` (a browser viewer uses Janus's own ``janus.js``;
docs/deploy.md). ``JanusViewer(janus_session, room, feed)``: ``await start()`` joins as a subscriber,
answers Janus's offer (recvonly) and starts counting: ``frames`` (distinct video frames decoded: a frame
resent with the same RTP timestamp counts once), ``timestamps`` (their RTP timestamps, for matching them
with the publisher's frames), ``audio_frames`` and the newest ``picture`` (luma, every 4th pixel).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.broadcast.janus_api import JanusError, JanusSession
from server.broadcast.publisher import VIDEOROOM

FINGERPRINT_SIDE = 32


def luma_fingerprint(frame) -> np.ndarray:
    """``FINGERPRINT_SIDE``² luma samples (uint8) on a regular grid of a decoded yuv420p frame, read from
    its Y plane without conversion; ``picture_fingerprint`` gives the same from the sender's RGB."""
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    return luma[_grid(frame.height), :][:, _grid(frame.width)]


def picture_fingerprint(rgb: np.ndarray) -> np.ndarray:
    """What ``luma_fingerprint`` reads after encoding: BT.601 limited-range luma of an RGB picture."""
    grid = rgb[_grid(rgb.shape[0]), :][:, _grid(rgb.shape[1])].astype(np.float32)
    luma = 16 + (0.299 * grid[..., 0] + 0.587 * grid[..., 1] + 0.114 * grid[..., 2]) * 219 / 255
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)


def _grid(length: int) -> np.ndarray:
    return (np.arange(FINGERPRINT_SIDE) * length) // FINGERPRINT_SIDE + length // (2 * FINGERPRINT_SIDE)


class JanusViewer:
    def __init__(self, janus: JanusSession, room: int | str, feed: int | str, pin: str = "",
                 ice_servers: list[dict] | None = None, fingerprints: bool = False) -> None:
        self.janus = janus
        self.room = room
        self.feed = feed
        self.pin = pin
        self.ice_servers = ice_servers or []
        self.pc: RTCPeerConnection | None = None
        self.handle: int | None = None
        self.frames = 0
        self.timestamps: list[int] = []
        self.arrivals: list[float] = []
        """``time.monotonic()`` when each frame was decoded."""
        self.fingerprints: list[bytes] | None = [] if fingerprints else None
        """With ``fingerprints=True``: each frame's ``luma_fingerprint`` (for matching it to the sender's)."""
        self.audio_frames = 0
        self.first_frame_at: float | None = None
        self._newest = None  # the newest decoded VideoFrame
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.handle = await self.janus.attach(VIDEOROOM)
        body = {"request": "join", "ptype": "subscriber", "room": self.room,
                "streams": [{"feed": self.feed}]}
        if self.pin:
            body["pin"] = self.pin
        _, jsep = await self.janus.request(self.handle, body)
        if jsep is None or jsep.get("type") != "offer":
            raise JanusError("Janus sent no SDP offer for the subscription")
        ice = [RTCIceServer(**entry) for entry in self.ice_servers]
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        pc.on("track", self._on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.janus.request(self.handle, {"request": "start", "room": self.room},
                                 {"type": "answer", "sdp": pc.localDescription.sdp})

    @property
    def picture(self) -> np.ndarray | None:
        """The newest frame's luma, every 4th row and column (converted when asked, not per frame)."""
        return None if self._newest is None else self._newest.to_ndarray(format="gray")[::4, ::4]

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(
            self._count_video(track) if track.kind == "video" else self._count_audio(track)))

    async def _count_video(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if self.timestamps and frame.pts == self.timestamps[-1]:
                    continue  # the same frame again
                self.timestamps.append(int(frame.pts))
                self.arrivals.append(time.monotonic())
                if self.fingerprints is not None:
                    self.fingerprints.append(luma_fingerprint(frame).tobytes())
                self.frames += 1
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                self._newest = frame
        except MediaStreamError:
            return

    async def _count_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.audio_frames += 1
        except MediaStreamError:
            return

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.handle is not None:
            try:
                await self.janus.detach(self.handle)
            except JanusError:
                pass
        if self.pc is not None:
            await self.pc.close()
