"""One streaming session: a peer connection, its audio input, engine worker, frame buffer and tracks.

Lifecycle (``state``, ``SessionState``): starting -> ``start(offer_sdp)`` returns the answer SDP ->
running until ``close`` is called (socket closed, shutdown) or it closes itself (peer connection
failed/closed, engine error) -> closing -> closed. ``close`` is the one idempotent teardown path: tasks
cancelled, tracks stopped, worker thread stopped and joined (it closes the engine session), peer
connection closed, registry entry removed.

The face's voice comes from one ``AudioSource`` (server/audio_sources.py) chosen by the mode: the
microphone (mirror) or queued speech (speak); the ``Speaker`` handles speak-mode requests and events
through the narrow ``SpeakerHost`` interface; ``SessionStats`` keeps the numbers.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from avatar.engine import SAMPLE_RATE, Engine, EngineSession, Frame, PreparedAvatar
from avatar.errors import AvatarError
from avatar.provenance.marked_session import WatermarkedSession
from server import signalling
from server.audio_input import AudioInput
from server.audio_sources import AudioSource, MicrophoneSource, SpeechSource
from server.clock import Clock, MonotonicClock
from server.config import Config
from server.degrade import LoadShedder
from server.echo_audio import EchoAudioTrack
from server.engine_worker import EngineWorker
from server.logs import SessionLog
from server.mdns_candidates import add_later, split_mdns_candidates
from server.metrics import ServerMetrics
from server.modes import SessionMode, SessionState
from server.session_stats import SessionStats
from server.signalling import SignallingError
from server.speaker import Speaker, TtsProvider
from server.speech_input import SpeechQueue
from server.video_track import FrameBuffer, PacedVideoTrack

log = logging.getLogger("server.session")

PAD_INTERVAL_S = 0.02
STATS_INTERVAL_S = 1.0
JOIN_TIMEOUT_S = 5.0
MAX_BACKLOG_FRAMES = 3
ENGINE_QUEUE_WINDOWS = 3

SendText = Callable[[str], Awaitable[None]]


class SessionRegistry:
    """Sessions until their teardown ends; those starting or running are bounded by ``max_sessions``."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def next_number(self) -> int:
        self._counter += 1
        return self._counter

    def active(self) -> int:
        """Sessions starting or running: those closing (a page reloaded, a socket gone) are leaving and
        do not hold a place, so a client that reconnects at once is not told the server is busy."""
        return sum(1 for session in self._sessions.values() if not session.closed)

    def check_capacity(self) -> None:
        active = self.active()
        if active >= self.max_sessions:
            raise SignallingError(f"server busy: {active} sessions running, try later")

    def add(self, session: Session) -> None:
        self.check_capacity()
        self._sessions[session.id] = session

    def remove(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def on_channel(self, channel: str) -> list[Session]:
        """The running speak-mode sessions whose offer named ``channel`` (oldest first)."""
        return [s for s in self._sessions.values()
                if s.channel == channel and s.mode is SessionMode.SPEAK and s.running]


class Session:
    """A live talking-portrait stream for one client (create, ``await start(sdp)``, ``await close()``)."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        avatar: PreparedAvatar,
        send: SendText,
        on_closed: Callable[[Session], None] = lambda session: None,
        number: int = 0,
        clock: Clock | None = None,
        mode: SessionMode | str = SessionMode.MIRROR,
        tts: TtsProvider | None = None,
        metrics: ServerMetrics | None = None,
        channel: str | None = None,
        channel_key: str | None = None,
    ) -> None:
        self.id = secrets.token_hex(4)
        self.log = SessionLog(log, self.id)
        self.metrics = metrics
        self.shedder = LoadShedder(config.server.degrade)
        """Renders every other window while the engine cannot keep up (see server/degrade.py)."""
        self.number = number
        self.seed = config.engine.seed + number
        """The engine session's seed (its motion's noise): reported in ``stats`` so a benchmark can render
        the same motion offline (benchmarks/lip_sync.py)."""
        self.config = config
        self.engine = engine
        self.avatar = avatar
        self._send = send
        self._on_closed = on_closed
        self.clock = clock or MonotonicClock()
        self.loop = asyncio.get_running_loop()
        audio = config.audio
        window = config.window_config(engine.preferred_window).at_least(engine.lookahead_ms)
        self.audio = AudioInput(
            window, audio.vad_aggressiveness, audio.ring_seconds, audio.max_gap_ms, self.clock
        )
        # A window's frames arrive together: the buffer must hold one window plus the latency slack.
        self.buffer = FrameBuffer(
            max(config.video.frame_queue, 2 * window.hop), MAX_BACKLOG_FRAMES + window.hop
        )
        self.video = PacedVideoTrack(self.buffer, avatar.image, config.engine.fps, self.clock, self._on_shown)
        self.mode = SessionMode(mode)
        """``mirror``: the face speaks the inbound microphone; ``speak``: it speaks say/audio requests
        and the microphone only drives barge-in."""
        self.channel = channel
        """Speak mode: the name controllers (sockets without a session) send say/audio/interrupt to ..."""
        self.channel_key = channel_key
        """... with this secret (server/channels.py)."""
        queue = SpeechQueue()
        self.source: AudioSource = (
            SpeechSource(self.audio, queue, self.clock, audio.vad_aggressiveness)
            if self.mode is SessionMode.SPEAK else MicrophoneSource(self.audio)
        )
        """Feeds the timeline: the microphone (mirror) or queued speech (speak)."""
        self.speaker = Speaker(
            self, self.source, queue, config.speech,
            tts or TtsProvider(config.speech.tts, config.speech.max_text_chars), self.clock,
            mode=self.mode, session_log=self.log, tag={"channel": channel, "session": self.id},
        )
        self.discard_before = 0  # engine frames with a smaller index are stale (cut before an interrupt)
        self.echo: EchoAudioTrack | None = None
        if config.video.echo_audio or self.mode is SessionMode.SPEAK:
            self.echo = EchoAudioTrack(self.audio.ring, self.video, self.clock)
        self.pc: RTCPeerConnection | None = None
        self.worker: EngineWorker | None = None
        self.remote_tracks: list[MediaStreamTrack] = []
        self._audio_track: MediaStreamTrack | None = None
        self._tasks: set[asyncio.Task] = set()
        self._close_task: asyncio.Task | None = None
        self.close_reason = ""
        self.state = SessionState.STARTING
        self.join_timeout_s = JOIN_TIMEOUT_S
        """How long teardown waits for the engine thread (shutdown shortens it to its deadline)."""
        self.started_at = self.clock.now()
        self.statistics = SessionStats(self.clock, self.started_at, self.video, self.buffer, self.audio,
                                       self.shedder, metrics)

    # ----------------------------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        """``start`` returned an answer and no teardown was requested."""
        return self.state is SessionState.RUNNING

    @property
    def closed(self) -> bool:
        """A teardown was requested (closing) or has finished (closed)."""
        return self.state in (SessionState.CLOSING, SessionState.CLOSED)

    async def start(self, offer_sdp: str) -> str:
        """Negotiate the offer and start streaming; returns the answer SDP (ICE gathering complete).

        Raises ``SignallingError`` (bad SDP) or ``AvatarError`` (engine); the session is closed then.
        """
        try:
            return await self._start(offer_sdp)
        except AvatarError as exc:
            await self.close(f"start failed: {exc}")
            raise
        except Exception as exc:
            self.log.exception("start failed")
            await self.close("start failed")
            raise SignallingError(f"could not start the session: {exc.__class__.__name__}") from None

    async def _start(self, offer_sdp: str) -> str:
        ice = [RTCIceServer(**entry) for entry in self.config.server.ice_servers]
        # [] (not None): aiortc would otherwise add its default public STUN server (stun.l.google.com)
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        offer_sdp, mdns_candidates, mdns_ended = split_mdns_candidates(offer_sdp)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise SignallingError(f"invalid offer sdp: {exc.__class__.__name__}: {exc}") from None
        if mdns_candidates:  # resolved in the background: aiortc would wait up to 1 s for them here
            self.spawn(add_later(pc, mdns_candidates, mdns_ended), "mdns-candidates")
        kinds = [t.kind for t in pc.getTransceivers()]
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                shorten_audio_jitter_buffer(transceiver.receiver)
        if "video" not in kinds:
            raise SignallingError("offer has no video m-line; add a recvonly video transceiver")
        seed = self.seed
        engine_session = await asyncio.to_thread(self._open_engine_session, seed)
        self.worker = EngineWorker(
            engine_session, self.loop, self._on_frames, self._on_engine_error,
            max_windows=ENGINE_QUEUE_WINDOWS, name=f"engine-{self.id}",
        )
        self.statistics.worker = self.worker
        self.worker.start()
        self._direct(pc.addTrack(self.video), "sendonly")
        audio_transceivers = [t for t in pc.getTransceivers() if t.kind == "audio"]
        if self.echo is not None and audio_transceivers:
            self._direct(pc.addTrack(self.echo), "sendrecv")
        else:
            for transceiver in audio_transceivers:
                transceiver.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
        if self.closed:
            raise SignallingError("session closed while starting")
        self.spawn(self._timeline_loop(), "timeline")
        self.spawn(self._stats_loop(), "stats")
        self.state = SessionState.RUNNING
        self.log.info("started avatar=%s seed=%d media=%s mode=%s channel=%s", self.avatar.avatar_id,
                      seed, "+".join(kinds), self.mode, self.channel or "-")
        return pc.localDescription.sdp

    def _open_engine_session(self, seed: int) -> EngineSession:
        """Runs in a worker thread: the engine session, watermarked unless the config says not to."""
        engine_session = self.engine.new_session(self.avatar, seed)
        if self.config.provenance.watermark:
            engine_session = WatermarkedSession(engine_session, size=self.avatar.image.shape[0])
            self.log.info("watermark id %06x", engine_session.payload.session_id)
        return engine_session

    def _direct(self, sender: Any, direction: str) -> None:
        for transceiver in self.pc.getTransceivers() if self.pc else []:
            if transceiver.sender is sender:
                transceiver.direction = direction

    def request_close(self, reason: str, error: str | None = None) -> asyncio.Task:
        """Start the teardown once (later calls return the same task). ``error``, if given, is sent to
        the client as an error message before the teardown."""
        if self._close_task is None:
            announce = self.state is SessionState.RUNNING  # an answer was sent: the client hears "ended"
            self.state = SessionState.CLOSING
            self.close_reason = reason
            self._close_task = asyncio.ensure_future(self._teardown(reason, error, announce))
        return self._close_task

    async def close(self, reason: str = "closed") -> None:
        """Tear everything down; idempotent and safe to call from anywhere on the loop."""
        await asyncio.shield(self.request_close(reason))

    async def _teardown(self, reason: str, error: str | None = None, announce: bool = False) -> None:
        self.log.info("closing reason=%r", reason)
        if error is not None:
            await self._send_quietly(signalling.error(error))
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for track in [self.video, self.echo, *self.remote_tracks]:
            if track is not None:
                _quietly(track.stop)
        if self.worker is not None:
            joined = await asyncio.to_thread(self.worker.join, self.join_timeout_s)
            if not joined:  # a daemon thread: it cannot keep the process alive
                self.log.warning("engine thread still busy after %.1f s; abandoned", self.join_timeout_s)
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), timeout=5.0)
            except Exception:
                self.log.exception("closing the peer connection failed")
        self.buffer.clear()
        self.statistics.observe_first_frame()
        _quietly(lambda: self._on_closed(self))
        if announce:
            await self._send_quietly(signalling.ended(self.id, reason))
        self.state = SessionState.CLOSED
        self.log.info("closed after_s=%.1f frames_sent=%d", self.clock.now() - self.started_at,
                      self.video.sent)

    # ------------------------------------------------------------------------------ media plumbing
    def _on_track(self, track: MediaStreamTrack) -> None:
        self.remote_tracks.append(track)
        if track.kind == "audio" and self._audio_track is None:
            self._audio_track = track
            self.spawn(self._read_audio(track), "audio-in")
        else:
            self.spawn(self._drain(track), f"drain-{track.kind}")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        self.log.info("inbound audio track")
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self.log.info("inbound audio ended; silence keeps the face moving")
                return
            try:
                windows = self.source.hear(frame)
            except Exception:
                self.log.exception("unusable audio frame skipped")
                continue
            self.submit(windows)

    async def _drain(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            return

    async def _timeline_loop(self) -> None:
        """Every ``PAD_INTERVAL_S``: the source keeps the timeline up with the clock (silence padding or
        queued speech), then the speaker sends the speaking events the video has reached."""
        while True:
            self.submit(self.source.tick())
            self.speaker.update()
            await self.clock.sleep(PAD_INTERVAL_S)

    def submit(self, windows: list) -> None:
        """Hand audio windows to the engine thread (oldest dropped when it falls behind)."""
        if self.worker is not None and not self.closed:
            for window in windows:
                if self.shedder.admit():
                    self.worker.submit(window)

    def drop_queued_output(self) -> tuple[int, int]:
        """Interrupt: drop the windows waiting for the engine and the frames waiting for the track,
        ignore frames of windows already cut, and have the engine ease back to idle (its
        ``interrupt()`` runs in the engine thread before the next window). Returns (windows, frames)."""
        windows = self.worker.interrupt() if self.worker is not None else 0
        frames = len(self.buffer)
        self.buffer.clear()
        self.discard_before = self.audio.windower.next_first_frame
        return windows, frames

    def played_sample(self) -> int:
        """Timeline sample under the video frame on screen now (-1 before the first engine frame)."""
        video = self.video
        if video.shown_index < 0:
            return -1
        since = min(0.5, max(0.0, self.clock.now() - video.shown_at))
        return int(video.shown_index * SAMPLE_RATE / video.fps + since * SAMPLE_RATE)

    def _on_frames(self, frames: list[Frame], engine_s: float) -> None:
        if self.closed:
            return
        for frame in frames:
            if frame.index >= self.discard_before:
                self.buffer.push(frame)
        self.statistics.engine_rendered(len(frames), engine_s)

    def _on_shown(self, frame: Frame, sent_at: float) -> None:
        self.statistics.frame_shown(frame, sent_at)

    def _on_engine_error(self, exc: BaseException) -> None:
        if self.closed:
            return
        detail = str(exc) if isinstance(exc, AvatarError) else exc.__class__.__name__
        self.log.error("engine failed: %s", detail, exc_info=exc)
        self.request_close(f"engine failed: {detail}", error=f"engine failed: {detail}")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState if self.pc else "closed"
        self.log.info("connection %s", state)
        if state in ("failed", "closed"):
            self.request_close(f"peer connection {state}")

    # ------------------------------------------------------------------------------------- stats
    async def _stats_loop(self) -> None:
        last = self.clock.now()
        while True:
            await self.clock.sleep(STATS_INTERVAL_S)
            now = self.clock.now()
            was_degraded = self.shedder.degraded
            dropped = self.statistics.windows_dropped
            self.shedder.update(now - last, self.statistics.take_busy_s(), dropped)
            last = now
            if self.shedder.degraded != was_degraded:
                self.log.warning("degraded=%s windows_dropped=%d windows_skipped=%d",
                                 str(self.shedder.degraded).lower(), dropped, self.shedder.skipped)
            await self._send_quietly(signalling.stats(self.stats()))

    def totals(self) -> dict[str, float]:
        """Counters (for /metrics) and gauges of this session right now (``SessionStats.totals``)."""
        return self.statistics.totals()

    def stats(self) -> dict[str, Any]:
        """The ``stats`` event's fields: counters since the last call (fps, engine_ms), totals, and the
        session's mode and speech state; see docs/protocol.md."""
        speaker = self.speaker
        return {
            "session": self.id,
            "seed": self.seed,
            **self.statistics.report(),
            "mode": self.mode,
            "speech_state": speaker.state,
            "speech_queued_s": round(speaker.queue.queued_samples / SAMPLE_RATE, 2),
            "user_speaking": speaker.user_speaking,
        }

    # ----------------------------------------------------------------------------------- helpers
    def spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        """Run ``coro`` as a task owned by the session (cancelled at close; a failure ends the session)."""
        task = asyncio.ensure_future(coro)
        task.set_name(f"{name}-{self.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task


    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task %s failed", task.get_name(), exc_info=task.exception())
            self.request_close(f"internal error in {task.get_name()}")

    async def send_quietly(self, text: str) -> None:
        """Send one message to the client; a closed socket is ignored."""
        await self._send_quietly(text)

    async def _send_quietly(self, text: str) -> None:
        try:
            await asyncio.wait_for(self._send(text), timeout=2.0)
        except Exception:  # the socket is gone; the session ends through the socket handler
            pass


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:
        log.exception("teardown step failed")


def shorten_audio_jitter_buffer(receiver: Any) -> bool:
    """Release inbound audio packets as soon as they are complete instead of after 4 more packets.

    aiortc's audio receiver holds ``prefetch=4`` packets (~80 ms) to smooth playout; the server needs no
    playout smoothing (audio goes into a ring buffer, and gaps are padded), so that delay only adds to
    mouth-to-photon latency. This reaches into aiortc's private receiver state, guarded: when the
    attribute is not there (another aiortc version) nothing changes. Returns whether it applied.
    """
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if buffer is None or not isinstance(getattr(buffer, "_prefetch", None), int):
        return False
    buffer._prefetch = 0
    return True
