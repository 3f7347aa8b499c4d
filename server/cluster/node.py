"""A node: hosts the real sessions (``server.session.Session``) that gateways place on it.

``NodeService`` is a plain class with async methods (tests call it directly); ``server/cluster/ray_nodes.py``
runs it as a Ray actor, one per Ray node, whose event loop owns each session's peer connection, engine
worker and pacing, so media flows between the browser and this node. It runs the server's own message
handling (``App.handle_message``) without a listening socket: the gateway forwards a client's offer and
speech messages as they came (``handle``), and collects what the sessions send back with ``events``
(long polling, one mailbox per client). A client nobody polled for ``CLIENT_LEASE_S`` (its gateway died)
is forgotten: its session closes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

from avatar.engine import Engine
from avatar.errors import AvatarError
from server import signalling
from server.app import App, SocketState
from server.config import Config
from server.limits import MessageRateLimit
from server.signalling import Offer

log = logging.getLogger("server.cluster.node")

CLIENT_LEASE_S = 10.0
"""A client whose gateway has not polled its events this long is forgotten (its session closes)."""
MAILBOX_MESSAGES = 256
"""Events kept per client between two polls (the oldest go first; a poll comes every ``POLL_WAIT_S``)."""
POLL_WAIT_S = 2.0
"""The longest an ``events`` call waits for a first event."""
UNLIMITED = 1e9
"""The gateway rate-limits client messages; the node does not count them again."""


@dataclass(eq=False)
class RemoteClient:
    """A gateway's socket as seen by a node: its socket state here and the events waiting for it."""

    state: SocketState
    mailbox: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=MAILBOX_MESSAGES))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    polled_at: float = field(default_factory=time.monotonic)

    async def send(self, text: str) -> None:
        self.mailbox.append(text)
        self.ready.set()


class NodeService:
    """Sessions of one node, for gateways; ``capacity`` bounds them (``server busy`` beyond)."""

    def __init__(self, config: Config, name: str, capacity: int, engine: Engine) -> None:
        if capacity < 1:
            raise AvatarError(f"node {name} has room for no {config.engine.name} session "
                              "(its Ray resources / cluster.session_cost)")
        self.name = name
        self.capacity = capacity
        self.config = config.with_overrides({"server.max_sessions": capacity})
        self.engine = engine
        self.draining = False
        self.app: App | None = None
        self.clients: dict[str, RemoteClient] = {}
        self._janitor: asyncio.Task | None = None

    async def start(self) -> dict[str, object]:
        """Prepare the default avatar (a bad portrait raises ``PortraitError``); returns ``status()``."""
        self.app = App(self.config, self.engine)
        await self.app.avatars.prepare_default()
        self._janitor = asyncio.ensure_future(self._forget_unpolled())
        log.info("node %s ready: engine=%s capacity=%d", self.name, self.engine.name, self.capacity)
        return await self.status()

    async def status(self) -> dict[str, object]:
        """The node's heartbeat: name, engine, capacity, running sessions, draining, and the picture sizes
        its engine renders (an offer's ``size``)."""
        running = len(self.app.sessions) if self.app is not None else 0
        return {"name": self.name, "engine": self.config.engine.name, "capacity": self.capacity,
                "running": running, "draining": self.draining, "sizes": list(self.engine.output_sizes)}

    async def drain(self, draining: bool = True) -> dict[str, object]:
        """Take no new sessions (``False``: take them again); running sessions go on."""
        self.draining = draining
        log.info("node %s draining=%s", self.name, draining)
        return await self.status()

    async def handle(self, client: str, raw: str) -> str:
        """One message of ``client`` (an offer, or say/audio/interrupt for its session or a channel):
        the reply the server would give, as JSON text."""
        app = self._app()
        remote = self.clients.get(client)
        if remote is None:
            remote = self.clients[client] = RemoteClient(
                SocketState(peer=f"gateway-client {client}", limit=MessageRateLimit(UNLIMITED, UNLIMITED)))
        remote.polled_at = time.monotonic()
        if self.draining and _is_offer(raw):
            return signalling.error(f"server busy: node {self.name} is draining, try later")
        return await app.handle_message(remote.state, raw, remote.send)

    async def events(self, client: str, wait_s: float = POLL_WAIT_S) -> list[str] | None:
        """What the sessions sent ``client`` since the last call; waits up to ``wait_s`` for a first one.
        None: the node does not know ``client`` (forgotten, or the node restarted): stop polling."""
        remote = self.clients.get(client)
        if remote is None:
            return None
        remote.polled_at = time.monotonic()
        if not remote.mailbox:
            remote.ready.clear()
            try:
                await asyncio.wait_for(remote.ready.wait(), max(0.0, min(wait_s, POLL_WAIT_S)))
            except TimeoutError:
                pass
        remote.polled_at = time.monotonic()
        texts = list(remote.mailbox)
        remote.mailbox.clear()
        return texts

    async def forget(self, client: str, reason: str = "socket closed") -> None:
        """``client``'s socket closed: its session closes, it stops listening to channels."""
        remote = self.clients.pop(client, None)
        if remote is not None and self.app is not None:
            if remote.state.session is not None:
                await remote.state.session.close(reason)
            await self.app.socket_closed(remote.state)

    async def stop(self) -> None:
        """Close every session (the node is shutting down)."""
        if self._janitor is not None:
            self._janitor.cancel()
        if self.app is not None:
            await self.app.stop()

    def _app(self) -> App:
        if self.app is None:
            raise AvatarError(f"node {self.name} is not started")
        return self.app

    async def _forget_unpolled(self) -> None:
        while True:
            await asyncio.sleep(CLIENT_LEASE_S / 4)
            now = time.monotonic()
            for client, remote in list(self.clients.items()):
                if now - remote.polled_at > CLIENT_LEASE_S:
                    log.info("node %s: client %s not polled for %.0f s: forgetting it", self.name, client,
                             now - remote.polled_at)
                    await self.forget(client, "gateway gone")


def _is_offer(raw: str) -> bool:
    try:
        return isinstance(signalling.parse_message(raw), Offer)
    except AvatarError:
        return False
