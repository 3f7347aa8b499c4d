"""The integrations' shared core (integrations/stream.py), framework-free: frames carry the audio they show,
idle frames between turns, markers keep their place, interrupt drops the speech not yet out.

The engine here is a small one whose frames show the loudness of the audio window the stream hands it for
that frame, so alignment is checked exactly; the real engine runs in test_integration_pipecat.py and
test_integration_livekit.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from avatar.engine import AudioWindow, Engine, EngineSession, Frame, PreparedAvatar
from integrations.stream import AvatarFrame, AvatarStream, StreamMarker

SIZE = 8


class LoudnessSession(EngineSession):
    """Frame ``f`` is grey at 1000 x the RMS of the 16 kHz samples the window assigns to ``f``."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.interrupts = 0

    def process(self, window: AudioWindow) -> list[Frame]:
        if self.fail_after is not None and window.first_frame >= self.fail_after:
            raise ValueError("engine broke")
        frames = []
        for index in range(window.emit_from, window.first_frame + window.num_frames):
            lo, hi = window.frame_span(index)
            part = window.samples[max(lo, 0) : hi]
            level = min(255.0, 1000.0 * float(np.sqrt(np.mean(part * part)))) if part.size else 0.0
            frames.append(Frame(index, np.full((SIZE, SIZE, 3), round(level), np.uint8)))
        return frames

    def interrupt(self) -> None:
        self.interrupts += 1


class LoudnessEngine(Engine):
    name = "loudness"

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(fps=25.0, size=SIZE)
        self.fail_after = fail_after

    def prepare(self, portrait, avatar_id=None, framing=None, size=None) -> PreparedAvatar:
        return PreparedAvatar("test", np.zeros((SIZE, SIZE, 3), np.uint8))

    def new_session(self, avatar, seed=0) -> EngineSession:
        return LoudnessSession(self.fail_after)


def bursts(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    """int16 interleaved: 100 ms tone bursts every 300 ms, of rising loudness (silence between)."""
    t = np.arange(round(seconds * rate)) / rate
    level = np.where((t % 0.3) < 0.1, 0.05 + 0.3 * t / seconds, 0.0)
    mono = (level * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    return np.repeat(mono, channels)


async def open_stream(**options) -> AvatarStream:
    engine = options.pop("engine", LoudnessEngine())
    stream = AvatarStream(engine, engine.prepare(None), watermark=False, **options)
    await stream.start()
    return stream


async def collect(stream: AvatarStream, until, limit: float = 10.0) -> list[AvatarFrame | StreamMarker]:
    """Events until ``until(event)`` is true (that one included)."""
    events = []

    async def run():
        async for event in stream:
            events.append(event)
            if until(event):
                return

    await asyncio.wait_for(run(), limit)
    return events


def is_end(event) -> bool:
    return isinstance(event, StreamMarker) and event.item == "end"


async def test_each_frame_carries_the_audio_it_shows():
    stream = await open_stream(audio_rate=24000, idle=False)
    speech = bursts(24000, 2.0)
    for begin in range(0, speech.size, 480):  # 20 ms packets, as a TTS service sends them
        await stream.push_audio(speech[begin : begin + 480].tobytes(), 24000, 1)
    stream.end_segment()
    stream.mark("end")
    events = await collect(stream, is_end)
    await stream.aclose()

    assert is_end(events[-1]) and all(isinstance(e, AvatarFrame) for e in events[:-1])
    frames = events[:-1]
    assert [f.index for f in frames] == list(range(len(frames))), "frames in order, none missing"
    assert {f.audio.shape for f in frames} == {(960, 1)}, "1/25 s of 24 kHz audio per frame"
    assert len(frames) == 50, "2 s of speech at 25 fps, its last frame completed"
    out = np.concatenate([f.audio[:, 0] for f in frames])
    assert np.array_equal(out[: speech.size], speech), "same-rate speech passes through unchanged"
    assert all(f.speaking for f in frames)
    shown = np.array([f.image.mean() for f in frames])
    heard = np.array([np.sqrt(np.mean((f.audio / 32768.0) ** 2)) for f in frames])
    assert np.corrcoef(shown, heard)[0, 1] > 0.97, "each image shows the loudness of its own audio"
    assert ((shown > 3) == (heard > 0.003)).mean() > 0.9


async def test_idle_frames_between_turns_at_the_engine_fps():
    stream = await open_stream(audio_rate=16000, idle=True)
    frames = []

    async def run():
        async for event in stream:
            frames.append(event)

    task = asyncio.create_task(run())
    await asyncio.sleep(1.0)
    await stream.aclose()
    await task
    assert frames and all(isinstance(f, AvatarFrame) and not f.speaking for f in frames)
    assert all(f.audio.shape == (640, 1) and not f.audio.any() for f in frames), "silence rides along"
    assert 12 <= len(frames) <= 30, f"{len(frames)} idle frames in 1 s (25 fps, paced by the consumer)"


async def test_markers_keep_their_place_after_the_speech_before_them():
    stream = await open_stream(audio_rate=16000, idle=True)
    stream.mark("before")  # nothing pending: comes out right away
    speech = bursts(16000, 0.5)
    await stream.push_audio(speech.tobytes(), 16000, 1)
    stream.mark("after-speech")
    stream.end_segment()
    stream.mark("end")
    events = await collect(stream, is_end)
    await stream.aclose()
    names = [e.item for e in events if isinstance(e, StreamMarker)]
    assert names == ["before", "after-speech", "end"]
    position = events.index(next(e for e in events if isinstance(e, StreamMarker) and e.item == "end"))
    frames_before = [e for e in events[:position] if isinstance(e, AvatarFrame)]
    assert frames_before[-1].speaking, "released right after the frame holding the last speech"
    assert sum(f.speaking for f in frames_before) == 13, "0.5 s of speech = 12.5 frames, last one completed"


async def test_interrupt_drops_the_speech_not_yet_out():
    engine = LoudnessEngine()
    stream = await open_stream(engine=engine, audio_rate=16000, idle=True, max_frames_ahead=5)
    await stream.push_audio(bursts(16000, 4.0).tobytes(), 16000, 1)
    stream.mark("dropped")
    stream.mark("kept", keep_on_interrupt=True)
    stream.end_segment()
    taken = await collect(stream, lambda e: isinstance(e, AvatarFrame) and e.speaking and e.index > 10)
    stream.interrupt()
    assert stream.stats.interrupts == 1
    after = await collect(stream, lambda e: isinstance(e, AvatarFrame) and e.index > taken[-1].index + 20)
    await stream.aclose()
    markers = [e.item for e in after if isinstance(e, StreamMarker)]
    assert markers == ["kept"], "interruptible markers go with the speech; kept ones come out at once"
    frames = [e for e in after if isinstance(e, AvatarFrame)]
    assert not any(f.speaking or f.audio.any() for f in frames), "no speech after the interrupt"
    assert frames[0].index > taken[-1].index, "the timeline goes on"
    assert not stream.pending()


async def test_other_rates_and_channels_are_resampled():
    stream = await open_stream(audio_rate=48000, idle=False)
    speech = bursts(16000, 1.0, channels=2)
    await stream.push_audio(speech, 16000, 2)
    stream.end_segment()
    stream.mark("end")
    events = await collect(stream, is_end)
    await stream.aclose()
    frames = [e for e in events if isinstance(e, AvatarFrame)]
    assert {f.audio.shape for f in frames} == {(1920, 1)}
    assert len(frames) == 25
    loud = [f for f in frames if np.abs(f.audio).max() > 1000]
    assert 8 <= len(loud) <= 14, "the bursts survive resampling (100 ms in every 300 ms)"


async def test_bad_audio_and_engine_errors_say_what_went_wrong():
    stream = await open_stream(engine=LoudnessEngine(fail_after=3), audio_rate=16000, idle=False)
    with pytest.raises(ValueError, match="unsupported audio"):
        await stream.push_audio(b"\0\0" * 100, 16000, 6)
    await stream.push_audio(bursts(16000, 1.0).tobytes(), 16000, 1)
    with pytest.raises(RuntimeError, match="the avatar engine stopped: engine broke"):
        await collect(stream, lambda e: False)
    with pytest.raises(RuntimeError, match="engine stopped"):
        await stream.push_audio(b"\0\0" * 100, 16000, 1)
    await stream.aclose()
