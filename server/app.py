"""The server: HTTP routes through websockets' ``process_request`` hook, and the ``/ws`` signalling loop.

Routes: ``GET /health`` (JSON status), ``GET /avatars`` (JSON list), ``/ws`` (WebSocket signalling,
docs/protocol.md), everything else from the static folder (``/`` -> index.html, ``/<page>`` ->
``<page>.html``). Nothing a client sends can crash the server or close it with an internal error.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
from dataclasses import dataclass

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from avatar.engine import SAMPLE_RATE, Engine
from avatar.errors import AvatarError
from server import signalling
from server.avatars import AvatarRegistry
from server.clock import Clock
from server.config import Config
from server.session import Session, SessionRegistry
from server.signalling import Interrupt, ListAvatars, Offer, Ping, PushAudio, Say, SignallingError
from server.speaker import TtsProvider
from server.static_files import StaticFiles

log = logging.getLogger("server.app")
WS_PATH = "/ws"


@dataclass
class SocketState:
    """What one signalling socket owns: at most one live session at a time."""

    peer: str
    session: Session | None = None


class App:
    """Owns the avatar and session registries and the listening server (``start`` / ``stop``)."""

    def __init__(self, config: Config, engine: Engine, clock: Clock | None = None) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.avatars = AvatarRegistry(
            engine, config.path(config.avatar.default), config.path(config.avatar.dir)
        )
        self.sessions = SessionRegistry(config.server.max_sessions)
        self.tts = TtsProvider(config.speech.tts, config.speech.max_text_chars)
        self.static = StaticFiles(config.path(config.server.static_dir))
        self._server: Server | None = None
        self._stopping = False
        self.port = config.server.port

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Prepare the default avatar (a bad portrait raises ``PortraitError``) then listen.
        ``port`` 0 picks a free port (see ``self.port``)."""
        await self.avatars.prepare_default()
        self._server = await serve(
            self.handle_socket,
            host or self.config.server.host,
            self.config.server.port if port is None else port,
            process_request=self.process_request,
            max_size=self.config.server.max_message_bytes,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving http://%s:%d (engine %s)", host or self.config.server.host, self.port,
                 getattr(self.engine, "name", "engine"))

    async def stop(self) -> None:
        """Graceful shutdown within ``server.shutdown_timeout_s``: stop accepting, close sessions in
        order, then close the remaining sockets."""
        if self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.shutdown_timeout_s
        if self._server is not None:
            self._server.close(close_connections=False)  # stop accepting connections
        for session in self.sessions:
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(session.close("server shutting down"), max(0.05, remaining))
            except TimeoutError:
                log.warning("session %s: did not close within the shutdown timeout", session.id)
        if self._server is not None:
            closing = [asyncio.ensure_future(c.close(1001, "server shutting down"))
                       for c in self._server.connections]
            remaining = max(0.05, deadline - loop.time())
            if closing:
                await asyncio.wait(closing, timeout=remaining)
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(0.05, deadline - loop.time()))
            except TimeoutError:
                log.warning("shutdown timeout: some connections were still open")
        log.info("server stopped")

    # ------------------------------------------------------------------------------------- HTTP
    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None  # continue with the WebSocket handshake (plain GETs get 426 from websockets)
        if path == "/health":
            body = {"status": "ok", "engine": getattr(self.engine, "name", "engine"),
                    "sessions": len(self.sessions)}
            return json_response(body)
        if path == "/avatars":
            return json_response(self.avatars.public_list())
        found = await asyncio.to_thread(self.static.read, request.path)
        if found is None:
            return text_response(404, "not found\n")
        body, content_type = found
        return make_response(200, body, content_type)

    # -------------------------------------------------------------------------------- signalling
    async def handle_socket(self, ws: ServerConnection) -> None:
        state = SocketState(peer=_peer(ws))
        log.info("socket open from %s", state.peer)

        async def send(text: str) -> None:
            await ws.send(text)

        try:
            async for raw in ws:
                reply = await self.handle_message(state, raw, send)
                await ws.send(reply)
        except ConnectionClosed as exc:
            code = exc.sent.code if exc.sent is not None else exc.rcvd.code if exc.rcvd is not None else None
            if code == 1009:
                log.info("socket from %s: message over %d bytes, closing it", state.peer,
                         self.config.server.max_message_bytes)
        except Exception:
            log.exception("socket from %s: unexpected error", state.peer)
        finally:
            if state.session is not None:
                await state.session.close("socket closed")
            log.info("socket from %s closed", state.peer)

    async def handle_message(self, state: SocketState, raw: str | bytes, send) -> str:
        """The reply to one client message (an error message for anything wrong)."""
        try:
            message = signalling.parse_message(raw)
            if isinstance(message, Ping):
                return signalling.pong()
            if isinstance(message, ListAvatars):
                return signalling.avatars(self.avatars.public_list())
            if isinstance(message, Offer):
                return await self._offer(state, message, send)
            if isinstance(message, Say | PushAudio | Interrupt):
                return await self._speech(state, message)
            raise SignallingError("unsupported message")
        except AvatarError as exc:
            log.info("socket from %s: %s", state.peer, exc)
            return signalling.error(str(exc))
        except Exception:
            log.exception("socket from %s: failed to handle a message", state.peer)
            return signalling.error("internal error while handling the message")

    async def _speech(self, state: SocketState, message: Say | PushAudio | Interrupt) -> str:
        session = state.session
        if session is None or session.closed or not session.running:
            raise SignallingError("start a session first: send an offer")
        if isinstance(message, Say):
            return await session.speaker.say(message.text, message.voice)
        if isinstance(message, PushAudio):
            return await session.speaker.push_audio(message)
        record = session.speaker.interrupt()
        return signalling.event("interrupted", dropped_s=round(
            (record["dropped_samples"] + record["muted"]) / SAMPLE_RATE, 2))

    async def _offer(self, state: SocketState, offer: Offer, send) -> str:
        if state.session is not None and not state.session.closed:
            raise SignallingError(f"an offer was already made on this socket (session {state.session.id})")
        if self._stopping:
            raise SignallingError("server is shutting down")
        self.sessions.check_capacity()
        avatar = await self.avatars.get(offer.avatar)
        session = Session(
            self.config, self.engine, avatar, send,
            on_closed=self.sessions.remove, number=self.sessions.next_number(), clock=self.clock,
            mode=offer.mode, tts=self.tts,
        )
        self.sessions.add(session)  # may still say busy if another offer won the race
        state.session = session
        log.info("session %s: offer from %s (avatar %s, mode %s)", session.id, state.peer, avatar.avatar_id,
                 offer.mode)
        answer_sdp = await session.start(offer.sdp)
        return signalling.answer(answer_sdp, session.id)


def make_response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(value: object, status: int = 200) -> Response:
    return make_response(status, json.dumps(value).encode(), "application/json")


def text_response(status: int, text: str) -> Response:
    return make_response(status, text.encode(), "text/plain; charset=utf-8")


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
