"""What a session says in speak mode: say/audio requests in order, speaking events, interrupt, barge-in.

Speech requests are prepared off the event loop (TTS and decoding in worker threads) and enter the
``SpeechQueue`` in the order they were received; the session's ``SpeechSource`` (server/audio_sources.py)
feeds that queue into the timeline in real time and tells the ``Speaker`` when speech enters it and when
the microphone heard enough to judge barge-in. ``speaking_started`` is sent when the video shows the
first frame of a stretch of speech, ``speaking_finished`` when it shows the last one (or on interrupt /
barge-in). Events and late errors also go to the ``listeners``: controllers that sent to the session's
channel.

The ``Speaker`` reaches its session only through ``SpeakerHost`` (four methods) and its ``AudioSource``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from avatar.engine import SAMPLE_RATE
from avatar.errors import AvatarError, ConfigError
from avatar.tts import TextToSpeech, create_tts
from avatar.tts.language import LanguageGuesser
from server import signalling
from server.audio_sources import AudioSource
from server.clock import Clock
from server.config import SpeechSettings
from server.modes import SessionMode, SpeechState
from server.signalling import SignallingError
from server.speech_input import RateLimiter, SpeechQueue

log = logging.getLogger("server.speaker")

MAX_INTERRUPT_RECORDS = 100
LISTENER_SEND_TIMEOUT_S = 2.0

SendText = Callable[[str], Awaitable[None]]


class SpeakerHost(Protocol):
    """What a ``Speaker`` needs from its session."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """Run ``coro`` as a task owned by the session (cancelled when it closes)."""

    async def send_quietly(self, text: str) -> None:
        """Send one message to the session's own client (a closed socket is ignored)."""

    def played_sample(self) -> int:
        """Timeline sample under the video frame on screen now (-1 before the first engine frame)."""

    def drop_queued_output(self) -> tuple[int, int]:
        """Drop the windows waiting for the engine and the frames waiting for the video track, and let
        the engine ease back to idle; returns (windows, frames) dropped."""


class TtsProvider:
    """One text-to-speech engine per server, created on first use in a worker thread."""

    def __init__(self, name: str, max_chars: int) -> None:
        self.name = name
        self.max_chars = max_chars
        self._tts: TextToSpeech | None = None
        self._lock = asyncio.Lock()
        self.languages = LanguageGuesser()
        """Tells a text's language among the voices the pages offer (avatar/tts/language.py)."""

    async def detect_language(self, text: str) -> dict[str, Any]:
        """``{"language": "es" | None, "confidence": 0..1}`` for ``text`` (None: too short or unsure), told
        in a worker thread."""
        if len(text) > self.max_chars:
            raise SignallingError(f"text too long: {len(text)} characters (at most {self.max_chars})")
        found = await asyncio.to_thread(self.languages.guess, text)
        return {"language": found.code if found else None, "confidence": found.confidence if found else 0.0}

    async def get(self) -> TextToSpeech:
        async with self._lock:
            if self._tts is None:
                try:
                    tts = await asyncio.to_thread(create_tts, self.name)
                except ConfigError as exc:
                    raise SignallingError(f"text to speech is unavailable: {exc}") from None
                tts.max_chars = self.max_chars
                self._tts = tts
        return self._tts


class Speaker:
    """Speak-mode requests and events of one session (all methods run on the event loop).

    ``source`` is the session's audio source; a speak-mode session's ``SpeechSource`` takes its speech
    from ``queue`` and reports to this speaker (it becomes the source's ``listener``). A mirror-mode
    session has a speaker too: it refuses say/audio (``check_mode``) and handles ``interrupt``.
    """

    def __init__(
        self,
        host: SpeakerHost,
        source: AudioSource,
        queue: SpeechQueue,
        settings: SpeechSettings,
        tts: TtsProvider,
        clock: Clock,
        mode: SessionMode = SessionMode.SPEAK,
        session_log: logging.Logger | logging.LoggerAdapter = log,
        tag: dict[str, Any] | None = None,
    ) -> None:
        self.host = host
        self.source = source
        source.listener = self
        self.queue = queue
        self.settings = settings
        self.tts = tts
        self.clock = clock
        self.mode = mode
        self.log = session_log
        self.tag = dict(tag or {})
        """Fields added to the events the listeners get: the session's ``channel`` and ``session`` id."""
        self.limiter = RateLimiter(settings.max_requests, settings.rate_window_s, clock)
        self.state = SpeechState.IDLE
        self.start_sample = 0  # timeline span of the current stretch of speech
        self.end_sample = 0
        self.generation = 0  # bumped by interrupt: requests of older generations are dropped
        self.pending = 0  # requests of this generation still being prepared
        self._tail: asyncio.Task | None = None
        self.interrupts: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_INTERRUPT_RECORDS
        )
        """The latest interrupts: reason, server ``time``, ``played_sample``, ``muted`` ..."""
        self.listeners: dict[object, SendText] = {}
        """Controllers (key: their socket state) that sent to this session's channel: they get its
        events tagged with ``channel`` and ``session`` until their socket closes."""

    @property
    def active(self) -> bool:
        """Speech queued, being prepared, or still playing."""
        return self.state is not SpeechState.IDLE or self.pending > 0 or self.queue.queued_samples > 0

    @property
    def user_speaking(self) -> bool:
        """The microphone carries the user's voice now (speak mode; always False in mirror mode)."""
        return self.source.user_speaking

    # ------------------------------------------------------------------------------- requests
    def check_mode(self, what: str) -> None:
        """say/audio need a speak-mode session (``SignallingError`` otherwise)."""
        if self.mode is not SessionMode.SPEAK:
            raise SignallingError(f"{what} needs a speak-mode session: offer with \"mode\": \"speak\"")

    def _check_queue_room(self) -> None:
        """Speech waiting to be spoken is bounded by ``speech.max_queued_s``."""
        queued = self.queue.queued_samples / SAMPLE_RATE
        limit = self.settings.max_queued_s
        if queued >= limit:
            raise SignallingError(
                f"speech queue full: {queued:.0f} s waiting (at most {limit:g} s); wait or send interrupt"
            )

    def admit(self) -> float:
        """Room in the speech queue, then the per-session rate limit, which counts this request: returns
        its stamp for ``refund`` (refusals raise ``SignallingError``). Called before any synthesis or
        decoding (server/speech_requests.py)."""
        self._check_queue_room()
        return self.limiter.check("say/audio messages")

    def refund(self, stamp: float) -> None:
        """Uncount an admitted request that then failed (pushed audio that did not decode)."""
        self.limiter.refund(stamp)

    def speak(self, job: asyncio.Future, what: str) -> None:
        """Queue the 16 kHz float32 samples ``job`` resolves to after every earlier request (whatever
        their outcome); ``job`` may be shared by several sessions (one synthesis or decoding per channel
        message)."""
        generation, previous = self.generation, self._tail
        self.pending += 1

        async def load() -> None:
            try:
                if previous is not None:
                    await asyncio.wait([previous])
                try:
                    samples = await job
                except AvatarError as exc:
                    if generation == self.generation:
                        await self._broadcast("error", message=signalling.one_line(f"{what} failed: {exc}"))
                    return
                except Exception:
                    self.log.exception("%s failed", what)
                    if generation == self.generation:
                        await self._broadcast("error", message=f"{what} failed: internal error")
                    return
                if generation == self.generation:
                    self.queue.add(samples)
            finally:
                if generation == self.generation:
                    self.pending -= 1

        self._tail = self.host.spawn(load(), f"speech-{what}")

    # ------------------------------------------------------------------------------- timeline
    def speech_entered(self, start: int, end: int) -> None:
        """The source put speech on timeline samples [start, end): a stretch starts or grows."""
        if self.state is SpeechState.IDLE:
            self.state, self.start_sample = SpeechState.QUEUED, start
        self.end_sample = end

    def update(self) -> None:
        """After each timeline tick: ``speaking_started`` / ``speaking_finished`` as the video shows the
        first / last frame of the stretch."""
        if self.state is SpeechState.IDLE:
            return
        played = self.host.played_sample()
        if self.state is SpeechState.QUEUED and played >= self.start_sample:
            self.state = SpeechState.SPEAKING
            self._emit("speaking_started")
        if (self.state is SpeechState.SPEAKING and played >= self.end_sample and not self.pending
                and not self.queue.queued_samples):
            self.state = SpeechState.IDLE
            self._emit("speaking_finished", interrupted=False)

    def _emit(self, kind: str, **fields: Any) -> None:
        self.host.spawn(self._broadcast(kind, **fields), kind)

    async def _broadcast(self, kind: str, **fields: Any) -> None:
        """Send an event to the session's socket, and tagged with channel and session to its listeners."""
        await self.host.send_quietly(signalling.event(kind, **fields))
        if self.listeners:
            tagged = signalling.event(kind, **fields, **self.tag)
            await asyncio.gather(*(_send_quietly(send, tagged) for send in list(self.listeners.values())))

    # ------------------------------------------------------------------------------ interrupt
    def interrupt(self, reason: str = "interrupt") -> dict[str, Any]:
        """Stop speaking now: drop queued and pending speech, mute what is already on the timeline past
        the frame on screen, drop queued windows and frames, and let the engine ease back to idle."""
        played = max(0, self.host.played_sample())
        self.generation += 1
        self.pending = 0
        dropped = self.queue.clear()
        muted = self.source.mute(played)
        windows, frames = self.host.drop_queued_output()
        record = {
            "reason": reason, "time": self.clock.now(), "played_sample": played, "muted": muted,
            "dropped_samples": dropped, "windows_dropped": windows, "frames_dropped": frames,
        }
        self.interrupts.append(record)
        if self.state is SpeechState.SPEAKING:
            self._emit("speaking_finished", interrupted=True, reason=reason)
        self.state = SpeechState.IDLE
        self.log.info("%s (%.2f s of speech dropped)", reason, (dropped + muted) / SAMPLE_RATE)
        return record

    # ------------------------------------------------------------------------------- barge-in
    def voice_heard(self) -> bool:
        """The source heard enough microphone audio to judge: barge in (interrupt) when barge-in is on,
        the avatar speaks or has speech coming, and the user is talking. Returns whether it did."""
        if not (self.settings.barge_in and self.active):
            return False
        if not self.source.user_speaking:
            return False
        self.interrupt("barge_in")
        return True


async def _send_quietly(send: SendText, text: str) -> None:
    """Send to a controller; a slow or closed socket is ignored (it leaves when it closes)."""
    try:
        await asyncio.wait_for(send(text), LISTENER_SEND_TIMEOUT_S)
    except Exception:
        pass
