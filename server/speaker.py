"""What a session says in speak mode: say/audio requests in order, the speech timeline, events, interrupt.

The speak-mode timeline is fed in real time every ``TICK_S`` by ``tick``: queued speech first, silence
when none, through the same ring + windower as the microphone (``AudioInput.append``). Speech
requests are prepared off the event loop (TTS and decoding in worker threads) and enter the queue in
the order they were received. ``speaking_started`` is sent when the video shows the first frame of
a stretch of speech, ``speaking_finished`` when it shows the last one (or on interrupt / barge-in).
Events and late errors also go to the session's ``listeners``: controllers that sent to its channel.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from avatar.audio.vad import VoiceActivity
from avatar.engine import SAMPLE_RATE
from avatar.errors import AvatarError, ConfigError
from avatar.tts import TextToSpeech, create_tts
from avatar.tts.language import LanguageGuesser
from server import signalling
from server.audio_input import MonoResampler
from server.signalling import SignallingError
from server.speech_input import RateLimiter, SpeechQueue

if TYPE_CHECKING:
    from server.session import Session

log = logging.getLogger("server.speaker")

TICK_S = 0.02
BARGE_IN_WINDOW = SAMPLE_RATE * 2 // 5  # 400 ms of microphone audio ...
BARGE_IN_FRACTION = 0.5  # ... at least half of it speech stops the avatar

IDLE, QUEUED, SPEAKING = "idle", "queued", "speaking"
MAX_INTERRUPT_RECORDS = 100
LISTENER_SEND_TIMEOUT_S = 2.0

SendText = Callable[[str], Awaitable[None]]


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
    """Speak-mode state of one ``Session`` (all methods run on the event loop)."""

    def __init__(self, session: Session, tts: TtsProvider) -> None:
        self.session = session
        self.settings = session.config.speech
        self.tts = tts
        self.clock = session.clock
        self.queue = SpeechQueue()
        self.limiter = RateLimiter(self.settings.max_requests, self.settings.rate_window_s, self.clock)
        self.state = IDLE
        self.start_sample = 0  # timeline span of the current stretch of speech
        self.end_sample = 0
        self.generation = 0  # bumped by interrupt: requests of older generations are dropped
        self.pending = 0  # requests of this generation still being prepared
        self._tail: asyncio.Task | None = None
        self._t0: float | None = None
        self._fed = 0
        self.interrupts: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_INTERRUPT_RECORDS
        )
        """The latest interrupts: reason, server ``time``, ``played_sample``, ``muted`` ..."""
        self._mic = MonoResampler()
        self._mic_vad = VoiceActivity(aggressiveness=session.config.audio.vad_aggressiveness)
        self._mic_samples = 0
        self.listeners: dict[object, SendText] = {}
        """Controllers (key: their socket state) that sent to this session's channel: they get its
        events tagged with ``channel`` and ``session`` until their socket closes."""

    @property
    def active(self) -> bool:
        """Speech queued, being prepared, or still playing."""
        return self.state != IDLE or self.pending > 0 or self.queue.queued_samples > 0

    # ------------------------------------------------------------------------------- requests
    def check_mode(self, what: str) -> None:
        """say/audio need a speak-mode session (``SignallingError`` otherwise)."""
        if self.session.mode != "speak":
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
        """Queue the 16 kHz float32 samples ``job`` resolves to after every earlier request; ``job`` may be
        shared by several sessions (one synthesis or decoding per channel message)."""
        self._enqueue(job, what)

    def _enqueue(self, job: asyncio.Future, what: str) -> None:
        """Queue ``job``'s samples after every earlier request (whatever their outcome)."""
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
                    self.session.log.exception("%s failed", what)
                    if generation == self.generation:
                        await self._broadcast("error", message=f"{what} failed: internal error")
                    return
                if generation == self.generation:
                    self.queue.add(samples)
            finally:
                if generation == self.generation:
                    self.pending -= 1

        self._tail = self.session.spawn(load(), f"speech-{what}")

    # ------------------------------------------------------------------------------- timeline
    def tick(self) -> None:
        """Append queued speech (or silence) up to the wall clock, then update speaking events."""
        now = self.clock.now()
        if self._t0 is None:
            self._t0 = now
        missing = int((now - self._t0) * SAMPLE_RATE) - self._fed
        if missing > 0:
            audio = self.session.audio
            chunk, speech = self.queue.take(missing)
            if speech:
                if self.state == IDLE:
                    self.state, self.start_sample = QUEUED, audio.ring.end
                self.end_sample = audio.ring.end + speech
            self._fed += missing
            self.session.submit(audio.append(chunk, speech))
        self._update_events()

    def played_sample(self) -> int:
        """Timeline sample under the video frame on screen now (-1 before the first engine frame)."""
        video = self.session.video
        if video.shown_index < 0:
            return -1
        since = min(0.5, max(0.0, self.clock.now() - video.shown_at))
        return int(video.shown_index * SAMPLE_RATE / video.fps + since * SAMPLE_RATE)

    def _update_events(self) -> None:
        played = self.played_sample()
        if self.state == QUEUED and played >= self.start_sample:
            self.state = SPEAKING
            self._emit("speaking_started")
        if (self.state == SPEAKING and played >= self.end_sample and not self.pending
                and not self.queue.queued_samples):
            self.state = IDLE
            self._emit("speaking_finished", interrupted=False)

    def _emit(self, kind: str, **fields: Any) -> None:
        self.session.spawn(self._broadcast(kind, **fields), kind)

    async def _broadcast(self, kind: str, **fields: Any) -> None:
        """Send an event to the session's socket, and tagged with channel and session to its listeners."""
        await self.session.send_quietly(signalling.event(kind, **fields))
        if self.listeners:
            tagged = signalling.event(kind, **fields, channel=self.session.channel, session=self.session.id)
            await asyncio.gather(*(_send_quietly(send, tagged) for send in list(self.listeners.values())))

    # ------------------------------------------------------------------------------ interrupt
    def interrupt(self, reason: str = "interrupt") -> dict[str, Any]:
        """Stop speaking now: drop queued and pending speech, mute what is already on the timeline past
        the frame on screen, drop queued windows and frames, and let the engine ease back to idle."""
        session = self.session
        played = max(0, self.played_sample())
        self.generation += 1
        self.pending = 0
        dropped = self.queue.clear()
        muted = session.audio.mute(played) if session.mode == "speak" else 0
        windows, frames = session.drop_queued_output()
        record = {
            "reason": reason, "time": self.clock.now(), "played_sample": played, "muted": muted,
            "dropped_samples": dropped, "windows_dropped": windows, "frames_dropped": frames,
        }
        self.interrupts.append(record)
        if self.state == SPEAKING:
            self._emit("speaking_finished", interrupted=True, reason=reason)
        self.state = IDLE
        session.log.info("%s (%.2f s of speech dropped)", reason,
                 (dropped + muted) / SAMPLE_RATE)
        return record

    # ------------------------------------------------------------------------------- barge-in
    def hear(self, frame: av.AudioFrame) -> bool:
        """Microphone audio in speak mode: only voice activity; returns True when it barged in."""
        samples = self._mic(frame)
        if samples.size == 0:
            return False
        self._mic_vad.feed(samples)
        self._mic_samples += samples.size
        return self.check_barge_in()

    def hear_samples(self, samples: np.ndarray) -> bool:
        """Like ``hear`` for 16 kHz float32 samples (tests, adapters)."""
        self._mic_vad.feed(np.asarray(samples, dtype=np.float32).reshape(-1))
        self._mic_samples += int(np.size(samples))
        return self.check_barge_in()

    @property
    def user_speaking(self) -> bool:
        start = max(0, self._mic_samples - BARGE_IN_WINDOW)
        return self._mic_vad.speech_fraction(start, self._mic_samples) >= BARGE_IN_FRACTION

    def check_barge_in(self) -> bool:
        if not (self.settings.barge_in and self.active and self._mic_samples >= BARGE_IN_WINDOW):
            return False
        if not self.user_speaking:
            return False
        self.interrupt("barge_in")
        return True


async def _send_quietly(send: SendText, text: str) -> None:
    """Send to a controller; a slow or closed socket is ignored (it leaves when it closes)."""
    try:
        await asyncio.wait_for(send(text), LISTENER_SEND_TIMEOUT_S)
    except Exception:
        pass
