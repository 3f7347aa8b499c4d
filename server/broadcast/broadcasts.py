"""Sessions published into Janus (offer option ``"broadcast": true``, server config ``server.janus``).

A session's outgoing tracks (``session.video``, and ``session.echo``, the avatar's voice, when it has
one) are read once by a ``FanOut`` (server/broadcast/fanout.py): the session's own client and the Janus
publisher each get their own copy of every frame (the session's own senders are switched to their
copy with ``replaceTrack`` right after the answer, before media flows), so the engine renders once and
the picture is encoded once per peer connection (the client's and Janus's), however many viewers Janus
serves. Publishing runs in the background after the answer; the client then gets
``{"type": "broadcasting", "room", "feed", "display"}``, or one ``error`` line
``broadcast failed: ...`` (Janus unreachable, room missing, ...), and the session itself goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiortc.mediastreams import MediaStreamTrack

from avatar.errors import AvatarError
from server import signalling
from server.broadcast.fanout import FanOut
from server.broadcast.janus_api import JanusError
from server.broadcast.publisher import JanusPublisher
from server.broadcast.settings import JanusSettings
from server.signalling import SignallingError

if TYPE_CHECKING:
    from server.session import Session

log = logging.getLogger("server.broadcast")
CLIENT_WAIT_S = 10.0


class Broadcasts:
    """The broadcasting sessions of one server (at most ``settings.max_publishers``)."""

    def __init__(self, settings: JanusSettings | None, ice_servers: list[dict] | None = None) -> None:
        self.settings = settings
        self.ice_servers = ice_servers or []
        self._publishers: dict[str, JanusPublisher] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._proxies: dict[str, list[MediaStreamTrack]] = {}
        self._background: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def check(self) -> None:
        """Before a broadcast offer: refuse it (``SignallingError``) when off or full."""
        refusal = self._refusal()
        if refusal is not None:
            raise SignallingError(refusal)

    def _refusal(self) -> str | None:
        if self.settings is None:
            return "broadcast is off on this server: it needs server.janus in its config"
        if len(self._tasks) >= self.settings.max_publishers:
            return (f"broadcast busy: {len(self._tasks)} of {self.settings.max_publishers} broadcasts "
                    "running, try later")
        return None

    def start(self, session: Session) -> None:
        """Relay the started session's tracks and publish them in the background. Full meanwhile (another
        offer won the race while this session started): one error line, and the session goes on."""
        refusal = self._refusal()
        if refusal is not None:
            self._in_background(self._refuse(session, refusal))
            return
        fanouts = {track: FanOut(track) for track in (session.video, session.echo) if track is not None}
        for sender in session.pc.getSenders() if session.pc else []:
            if sender.track in fanouts:  # the session's own client now gets a copy too
                sender.replaceTrack(fanouts[sender.track].subscribe())
        video = fanouts[session.video].subscribe()
        audio = fanouts[session.echo].subscribe() if session.echo is not None else None
        self._proxies[session.id] = [track for track in (video, audio) if track is not None]
        display = session.channel or f"avatar-{session.id}"
        publisher = JanusPublisher(self.settings, video, audio, display, self.ice_servers,
                                   on_lost=lambda reason: self._lost(session, reason))
        self._publishers[session.id] = publisher
        task = asyncio.ensure_future(self._publish(session, publisher))
        self._tasks[session.id] = task

    async def _publish(self, session: Session, publisher: JanusPublisher) -> None:
        try:
            feed = await publisher.start()
        except (JanusError, AvatarError) as exc:
            session.log.warning("broadcast failed: %s", exc)
            await client_connected(session)  # the answer goes first: an earlier error would refuse it
            await session.send_quietly(signalling.error(f"broadcast failed: {exc}"))
            await self.stop(session)
            return
        await client_connected(session)
        await session.send_quietly(signalling.event(
            "broadcasting", session=session.id, room=publisher.settings.room, feed=feed,
            display=publisher.display))

    async def _refuse(self, session: Session, refusal: str) -> None:
        await client_connected(session)
        await session.send_quietly(signalling.error(refusal))

    def _lost(self, session: Session, reason: str) -> None:
        async def report() -> None:
            await session.send_quietly(signalling.error(f"broadcast ended: {reason}"))
            await self.stop(session)

        if not session.closed:
            self._in_background(report())

    def session_closed(self, session: Session) -> None:
        """From the session's close callback (not a coroutine): stop its broadcast in the background."""
        if session.id in self._tasks:
            self._in_background(self.stop(session))

    def _in_background(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._background.discard)

    async def stop(self, session: Session) -> None:
        """Stop publishing ``session`` (its own stream goes on); idempotent."""
        await self._stop(session.id)

    async def stop_all(self) -> None:
        for session_id in list(self._tasks):
            await self._stop(session_id)

    async def _stop(self, session_id: str) -> None:
        task = self._tasks.pop(session_id, None)
        publisher = self._publishers.pop(session_id, None)
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=2.0)
        if publisher is not None:
            await publisher.stop()
        for proxy in self._proxies.pop(session_id, []):
            proxy.stop()


async def client_connected(session: Session, timeout_s: float = CLIENT_WAIT_S) -> None:
    """Wait until the session's own client has connected (it applied the answer), closed, or a timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (not session.closed and session.pc is not None and session.pc.connectionState != "connected"
           and loop.time() < deadline):
        await asyncio.sleep(0.05)
