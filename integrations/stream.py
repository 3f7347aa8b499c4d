"""The integrations' framework-free core: an agent's speech in, the portrait's frames out with their audio.

Timeline (the engine's, ``avatar/engine.py``): 16 kHz samples; frame ``f`` shows the instant ``f / fps`` and
covers samples ``[f * 16000 / fps, (f + 1) * 16000 / fps)``. Pushed speech is appended at the end of the
timeline. While no speech is waiting and ``idle`` is on, silence is appended at the pace the frames are
consumed, so the portrait keeps breathing and blinking between turns at the engine's fps.

Every output ``AvatarFrame`` carries the audio it shows (int16 at ``audio_rate`` Hz, 1/fps seconds of it):
the pushed speech passed through, or silence. A transport that plays each frame's audio while it shows
the frame keeps lips and voice together whatever the engine's latency. ``mark`` puts any object into the
output right after the frames of the audio pushed before it (a pipecat ``TTSStoppedFrame``, LiveKit's
``AudioSegmentEnd``); ``interrupt`` drops the speech not yet out and eases the face back to idle.

The engine session runs in one worker thread (``server.engine_worker.EngineWorker``), fed at most
``windows_in_flight`` windows at a time; the event loop only copies audio and hands frames on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from avatar.audio.io import pcm16_to_float
from avatar.audio.vad import VoiceActivity
from avatar.audio.windowing import AudioRing, WindowConfig, Windower
from avatar.engine import SAMPLE_RATE, Engine, EngineSession, Frame, PreparedAvatar
from avatar.engines import create_engine
from avatar.provenance.marked_session import WatermarkedSession
from server.engine_worker import EngineWorker

_LAYOUTS = {1: "mono", 2: "stereo"}
_CLOSED = object()


def prepare_avatar(
    portrait: Any, engine: Engine | str, engine_options: dict[str, Any] | None = None
) -> tuple[Engine, PreparedAvatar]:
    """The engine (``engine`` itself, or the registered name created with ``engine_options``) and
    ``portrait`` (image path or RGB uint8 array) prepared by it. Blocking: call it in a thread."""
    chosen = engine if isinstance(engine, Engine) else create_engine(str(engine), **(engine_options or {}))
    return chosen, chosen.prepare(portrait)


@dataclass
class AvatarFrame:
    """One video frame of the portrait and the audio it shows."""

    index: int
    """Frame index on the session timeline (frames skipped by an interrupt leave a gap)."""
    image: np.ndarray
    """uint8, shape (size, size, 3), RGB."""
    audio: np.ndarray
    """int16, shape (audio_rate / fps rounded, channels): the speech this frame shows, or silence."""
    audio_rate: int
    speaking: bool
    """Whether ``audio`` holds pushed speech (False: idle silence or padding)."""
    fps: float

    @property
    def pts(self) -> float:
        """Seconds on the session timeline."""
        return self.index / self.fps


@dataclass
class StreamMarker:
    """An object passed through in order with the frames (see ``AvatarStream.mark``)."""

    item: Any
    keep_on_interrupt: bool = False


@dataclass
class StreamStats:
    """Counters of one stream (monotonic clock seconds for instants)."""

    frames_out: int = 0
    speaking_frames_out: int = 0
    engine_seconds: float = 0.0
    windows_rendered: int = 0
    interrupts: int = 0
    first_audio_in: float | None = None
    first_speaking_frame_out: float | None = None


class _AudioConverter:
    """int16 PCM at any rate and channel count -> (output format, 16 kHz mono float32 for the engine)."""

    def __init__(self, out_rate: int, out_channels: int) -> None:
        self.out_rate, self.out_channels = out_rate, out_channels
        self._source: tuple[int, int] | None = None
        self._to_out: av.AudioResampler | None = None
        self._to_engine: av.AudioResampler | None = None

    def convert(self, pcm: np.ndarray, rate: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """``pcm``: int16 interleaved, shape (n * channels,). Returns int16 (m, out_channels), float32 (k,)"""
        if self._source != (rate, channels):
            self._source = (rate, channels)
            passthrough_out = (rate, channels) == (self.out_rate, self.out_channels)
            passthrough_engine = (rate, channels) == (SAMPLE_RATE, 1)
            self._to_out = None if passthrough_out else self._resampler(self.out_rate, self.out_channels)
            self._to_engine = None if passthrough_engine else self._resampler(SAMPLE_RATE, 1)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=_LAYOUTS[channels])
        frame.sample_rate = rate
        out = pcm if self._to_out is None else self._run(self._to_out, frame)
        engine = pcm if self._to_engine is None else self._run(self._to_engine, frame)
        return out.reshape(-1, self.out_channels), pcm16_to_float(engine)

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """The resamplers' held-back tails (and a fresh start for the next audio)."""
        out = self._run(self._to_out, None) if self._to_out else np.zeros(0, np.int16)
        engine = self._run(self._to_engine, None) if self._to_engine else np.zeros(0, np.int16)
        self._source = self._to_out = self._to_engine = None
        return out.reshape(-1, self.out_channels), pcm16_to_float(engine)

    @staticmethod
    def _resampler(rate: int, channels: int) -> av.AudioResampler:
        return av.AudioResampler(format="s16", layout=_LAYOUTS[channels], rate=rate)

    @staticmethod
    def _run(resampler: av.AudioResampler, frame: av.AudioFrame | None) -> np.ndarray:
        chunks = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


class _Timeline:
    """The audio of the stretch of session timeline from frame ``first_frame`` on (a new one after an
    interrupt): the engine's 16 kHz ring with its VAD and windower, and the output-format audio beside it."""

    def __init__(self, config: WindowConfig, first_frame: int, capacity_seconds: float, out_rate: int,
                 out_channels: int) -> None:
        self.config = config
        self.first_frame = first_frame
        self.start = round(first_frame * config.samples_per_frame)
        self.ring = AudioRing(capacity_seconds)
        self.ring.end = self.start  # a fresh ring reads zeros before its end: left context is silence
        self.vad = VoiceActivity(history=int(capacity_seconds * 50) + 64)
        self.windower = Windower(config)
        self.windower.next_first_frame = self.windower.emitted_until = first_frame
        self.out_rate, self.out_channels = out_rate, out_channels
        self.out = bytearray()
        self.out_base = round(self.start * out_rate / SAMPLE_RATE)
        """Output-format sample index (on the timeline) of ``out[0]``."""
        self.real_end = self.start
        """Timeline end of the last pushed speech sample."""
        self.spans: list[tuple[int, int]] = []
        self.converter = _AudioConverter(out_rate, out_channels)

    def speech_fraction(self, lo: int, hi: int) -> float:
        return self.vad.speech_fraction(lo - self.start, hi - self.start)

    def next_window(self):
        """The next window whose audio (with look-ahead) is in the ring, or None."""
        return next(self.windower.ready(self.ring, self.speech_fraction), None)

    def pending_samples(self) -> int:
        """Samples in the ring that windows still need."""
        oldest = round(self.windower.next_first_frame * self.config.samples_per_frame)
        return self.ring.end - (oldest - self.config.left_context_samples)

    def append_speech(self, out_pcm: np.ndarray, samples: np.ndarray) -> None:
        if samples.size:
            self.spans.append((self.ring.end, self.ring.end + samples.size))
            self._append(samples)
            self.real_end = self.ring.end
        self.out.extend(out_pcm.astype(np.int16, copy=False).tobytes())

    def pad_silence(self, until: int) -> None:
        """Silence up to timeline sample ``until`` in both streams."""
        if until > self.ring.end:
            self._append(np.zeros(until - self.ring.end, np.float32))
        target = round(self.ring.end * self.out_rate / SAMPLE_RATE) - self.out_base
        missing = target * self.out_channels * 2 - len(self.out)
        if missing > 0:
            self.out.extend(bytes(missing))

    def pad_next_window(self) -> None:
        """Silence so that exactly the next window becomes ready."""
        self.pad_silence(self.windower.window_end_sample(self.windower.next_first_frame))

    def finish_segment(self) -> None:
        """End of a stretch of speech: the resamplers' tails, then silence to complete the last frame
        and the engine's look-ahead after it."""
        out_pcm, samples = self.converter.flush()
        self.append_speech(out_pcm, samples)
        spf = self.config.samples_per_frame
        last_frame = int(np.ceil(self.real_end / spf - 1e-9))
        self.pad_silence(round(last_frame * spf) + self.config.right_context_samples)

    def take(self, index: int) -> tuple[np.ndarray, bool]:
        """The output audio of frame ``index`` (int16 (n, channels)) and whether it holds speech; drops what
        came before it."""
        fps, width = self.config.fps, self.out_channels * 2
        lo = round(index * self.out_rate / fps) - self.out_base
        hi = round((index + 1) * self.out_rate / fps) - self.out_base
        chunk = bytes(self.out[max(lo, 0) * width : max(hi, 0) * width])
        chunk += bytes((hi - lo) * width - len(chunk))
        if lo > 0:
            del self.out[: lo * width]
            self.out_base += lo
        spf = self.config.samples_per_frame
        start, stop = round(index * spf), round((index + 1) * spf)
        self.spans = [s for s in self.spans if s[1] > start]
        speaking = any(s[0] < stop for s in self.spans)
        return np.frombuffer(chunk, np.int16).reshape(-1, self.out_channels), speaking

    def _append(self, samples: np.ndarray) -> None:
        self.vad.feed(samples)
        self.ring.write(samples)


class AvatarStream:
    """One talking-portrait stream: ``push_audio`` speech in, iterate ``AvatarFrame`` / ``StreamMarker`` out.

    Use it from one event loop. ``start`` opens the engine session (in a thread); ``aclose`` ends it.
    Output frames are rendered at most ``max_frames_ahead`` ahead of the consumer, and pushed speech waits
    (``push_audio`` awaits) while more than ``buffer_seconds`` of it are not rendered yet.
    """

    def __init__(
        self,
        engine: Engine,
        avatar: PreparedAvatar,
        *,
        audio_rate: int = 24000,
        audio_channels: int = 1,
        seed: int = 0,
        idle: bool = True,
        idle_lead_frames: float = 2.0,
        watermark: bool = True,
        buffer_seconds: float = 60.0,
        windows_in_flight: int = 2,
        max_frames_ahead: int = 50,
    ) -> None:
        if audio_channels not in _LAYOUTS:
            raise ValueError("audio_channels must be 1 or 2")
        self.engine, self.avatar = engine, avatar
        self.fps = engine.fps
        self.audio_rate, self.audio_channels = int(audio_rate), int(audio_channels)
        self.seed, self.idle, self.watermark = seed, idle, watermark
        self.idle_lead = idle_lead_frames / self.fps
        self.buffer_seconds = max(5.0, float(buffer_seconds))
        self.windows_in_flight = max(1, windows_in_flight)
        self.max_frames_ahead = max(1, max_frames_ahead)
        self.config = WindowConfig(fps=self.fps, **(engine.preferred_window or {}))
        self.stats = StreamStats()
        self._timeline = self._new_timeline(0)
        self._markers: list[tuple[int, StreamMarker]] = []
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._worker: EngineWorker | None = None
        self._pump_task: asyncio.Task | None = None
        self._in_flight = 0
        self._next_index = 0  # the frame after the last one put out
        self._play_end = 0.0
        self._closed = False
        self._error: BaseException | None = None

    @property
    def session_id(self) -> int | None:
        """The invisible watermark's session id (None without watermark or before ``start``)."""
        session = self._worker.session if self._worker else None
        return session.payload.session_id if isinstance(session, WatermarkedSession) else None

    async def start(self) -> None:
        """Open the engine session (in a thread) and start rendering (idle frames right away if ``idle``)."""
        session = await asyncio.to_thread(self._open_session)
        loop = asyncio.get_running_loop()
        self._worker = EngineWorker(session, loop, self._on_frames, self._on_error,
                                    max_windows=self.windows_in_flight + 1, name="avatar-stream")
        self._worker.start()
        self._play_end = loop.time()
        self._pump_task = asyncio.create_task(self._pump(), name="avatar-stream-pump")

    async def push_audio(self, pcm: bytes | np.ndarray, sample_rate: int, channels: int = 1) -> None:
        """Append speech: int16 interleaved PCM (bytes or array) at ``sample_rate`` with ``channels`` (1, 2).
        Awaits while the speech not rendered yet exceeds ``buffer_seconds``."""
        self._raise_if_failed()
        if channels not in _LAYOUTS or sample_rate <= 0:
            raise ValueError(f"unsupported audio: {sample_rate} Hz, {channels} channels (mono or stereo)")
        data = np.frombuffer(pcm, np.int16) if isinstance(pcm, bytes | bytearray | memoryview) else pcm
        data = np.asarray(data, np.int16).reshape(-1)
        if data.size == 0:
            return
        if self.stats.first_audio_in is None:
            self.stats.first_audio_in = time.monotonic()
        capacity = int(self.buffer_seconds * SAMPLE_RATE) - 2 * SAMPLE_RATE  # 2 s for context and padding
        step = sample_rate * channels  # one second per piece, so no piece overflows the ring
        timeline = self._timeline
        for begin in range(0, data.size, step):
            while timeline.pending_samples() + SAMPLE_RATE > capacity:
                self._room.clear()
                await self._room.wait()
                self._raise_if_failed()
                if timeline is not self._timeline:
                    return  # interrupted while waiting: the rest of this speech is dropped too
            out_pcm, samples = timeline.converter.convert(data[begin : begin + step], sample_rate, channels)
            timeline.append_speech(out_pcm, samples)
            self._wake.set()

    def end_segment(self) -> None:
        """The speech pushed so far is complete (end of a turn): render its last frames now."""
        self._timeline.finish_segment()
        self._wake.set()

    def mark(self, item: Any, keep_on_interrupt: bool = False) -> None:
        """Output ``item`` (as a ``StreamMarker``) right after the frames of all speech pushed so far;
        right away when they are all out. ``interrupt`` drops it unless ``keep_on_interrupt``."""
        marker = StreamMarker(item, keep_on_interrupt)
        position = self._timeline.real_end
        if self._markers or position > self._emitted_end():
            self._markers.append((position, marker))
        else:
            self._events.put_nowait(marker)

    def interrupt(self) -> None:
        """Drop all speech and frames not yet out (kept markers excepted); the face eases back to idle and
        the next speech starts right away."""
        self.stats.interrupts += 1
        old = self._timeline
        if self._worker is not None:
            self._in_flight -= self._worker.interrupt()
        first = max(old.windower.emitted_until, old.windower.next_first_frame)
        self._timeline = self._new_timeline(first)
        kept = [m for _, m in self._markers if m.keep_on_interrupt]
        self._markers = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if isinstance(event, StreamMarker) and event.keep_on_interrupt:
                kept.append(event)
        for marker in kept:
            self._events.put_nowait(marker)
        self._play_end = asyncio.get_running_loop().time()
        self._wake.set()
        self._room.set()

    def pending(self) -> bool:
        """Whether pushed speech or markers are still to come out."""
        return bool(self._markers) or self._timeline.real_end > self._emitted_end()

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until all pushed speech is out (call ``end_segment`` first), markers included, and the
        consumer has taken it."""
        deadline = time.monotonic() + timeout
        while (self.pending() or not self._events.empty()) and time.monotonic() < deadline:
            self._raise_if_failed()
            await asyncio.sleep(0.01)

    def __aiter__(self) -> AsyncIterator[AvatarFrame | StreamMarker]:
        return self._iterate()

    async def aclose(self) -> None:
        """Stop rendering and close the engine session (idempotent); iteration ends."""
        if self._closed:
            return
        self._closed = True
        if self._pump_task:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._worker:
            await asyncio.to_thread(self._worker.join, 5.0)
        self._events.put_nowait(_CLOSED)
        self._room.set()

    # -- internals --

    def _open_session(self) -> EngineSession:
        session = self.engine.new_session(self.avatar, seed=self.seed)
        return WatermarkedSession(session, size=self.engine.size) if self.watermark else session

    def _new_timeline(self, first_frame: int) -> _Timeline:
        return _Timeline(self.config, first_frame, self.buffer_seconds, self.audio_rate, self.audio_channels)

    def _emitted_end(self) -> int:
        """Timeline sample up to which frames are out (or dropped by an interrupt)."""
        timeline = self._timeline
        return round(max(timeline.first_frame, self._next_index) * self.config.samples_per_frame)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._wake.clear()
            self._submit_ready()
            timeout = None
            timeline = self._timeline
            starving = self._in_flight == 0 and self._events.qsize() == 0
            if self.idle and starving and timeline.next_window() is None:
                due = self._play_end - self.idle_lead
                if loop.time() >= due:
                    timeline.pad_next_window()
                    continue
                timeout = due - loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _submit_ready(self) -> None:
        assert self._worker is not None
        while self._in_flight < self.windows_in_flight and self._events.qsize() < self.max_frames_ahead:
            window = self._timeline.next_window()
            if window is None:
                return
            self._worker.submit(window)
            self._in_flight += 1

    def _on_frames(self, frames: list[Frame], seconds: float) -> None:
        """On the loop: the frames of one window, from the worker thread."""
        self._in_flight -= 1
        self.stats.engine_seconds += seconds
        self.stats.windows_rendered += 1
        timeline = self._timeline
        for frame in frames:
            if frame.index < timeline.first_frame or frame.index < self._next_index:
                continue  # rendered for speech that an interrupt dropped
            audio, speaking = timeline.take(frame.index)
            self._events.put_nowait(AvatarFrame(frame.index, frame.image, audio, self.audio_rate, speaking,
                                                self.fps))
            self._next_index = frame.index + 1
            self._release_markers()
        self._wake.set()
        self._room.set()

    def _release_markers(self) -> None:
        end = self._emitted_end()
        while self._markers and self._markers[0][0] <= end:
            self._events.put_nowait(self._markers.pop(0)[1])

    def _on_error(self, exc: BaseException) -> None:
        self._error = exc
        self._events.put_nowait(_CLOSED)
        self._room.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the avatar engine stopped: {self._error}") from self._error
        if self._closed:
            raise RuntimeError("the avatar stream is closed")

    async def _iterate(self) -> AsyncIterator[AvatarFrame | StreamMarker]:
        loop = asyncio.get_running_loop()
        while True:
            event = await self._events.get()
            if event is _CLOSED:
                if self._error is not None:
                    raise RuntimeError(f"the avatar engine stopped: {self._error}") from self._error
                return
            if isinstance(event, AvatarFrame):
                now = loop.time()
                self._play_end = max(self._play_end, now) + 1.0 / self.fps
                self.stats.frames_out += 1
                if event.speaking:
                    self.stats.speaking_frames_out += 1
                    if self.stats.first_speaking_frame_out is None:
                        self.stats.first_speaking_frame_out = time.monotonic()
            self._wake.set()
            yield event


__all__ = ["AvatarFrame", "AvatarStream", "StreamMarker", "StreamStats"]
