"""The talking portrait as a pipecat processor: the agent's TTS audio in, the portrait's video out in sync.

Put ``TalkingPortraitVideo`` between the TTS service and the output transport::

    Pipeline([transport.input(), stt, context_aggregator.user(), llm, tts,
              TalkingPortraitVideo("face.jpg"), transport.output(), context_aggregator.assistant()])

It takes the output audio frames (``TTSAudioRawFrame`` and every other ``OutputAudioRawFrame``) and, for each
video frame (1/fps seconds; 25 fps with the default parametric engine), pushes an ``OutputImageRawFrame``
(RGB, ``sync_with_audio=True``) followed by that frame's audio, passed through unchanged in content and
type. The output transport then shows each image when it starts playing its audio, so the lips stay on
the voice. Between turns it keeps pushing idle frames (blinks, breathing) with silent ``OutputAudioRawFrame``
audio at the engine's fps. On an ``InterruptionFrame`` the speech not yet out is dropped and the face eases
back to idle. Frames that follow the audio downstream (``TTSStoppedFrame``, text frames) are held until the
video of the audio before them is out, so they keep their place. Configure the transport with
``video_out_enabled=True``, ``video_out_is_live=False``, ``video_out_framerate`` = the engine's fps and the
portrait's size (``video_out_width``/``height``, 512 by default).

The engine runs in a worker thread (``integrations.stream``); the event loop never waits for it.
Requires ``pipecat-ai`` (``pip install 'talking-portrait[pipecat]'``, see docs/integrations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from avatar.engine import Engine, PreparedAvatar
from integrations.stream import AvatarFrame, AvatarStream, StreamMarker, StreamStats, prepare_avatar

try:  # pipecat >= 0.0.85 (1.x); StartInterruptionFrame before
    from pipecat.frames.frames import InterruptionFrame
except ImportError:  # pragma: no cover - older pipecat
    from pipecat.frames.frames import StartInterruptionFrame as InterruptionFrame

METADATA_KEY = "talking_portrait"
"""Key of the dict each pushed image carries in ``frame.metadata``: ``index``, ``speaking``."""


class TalkingPortraitVideo(FrameProcessor):
    """Animates one portrait with the speech that passes through it (see the module docstring).

    ``portrait``: an image path or RGB uint8 array, prepared once in ``setup`` (in a thread); or pass an
    already prepared ``avatar`` together with its ``engine``. ``engine``: an ``avatar.engine.Engine`` or a
    registered name (``parametric``, ``emo``) created with ``engine_options``. ``audio_rate``: the sample
    rate of the audio pushed on (default: the pipeline's output rate); other input rates are resampled.
    ``idle``: keep animating between turns. ``watermark``: the invisible provenance mark on every frame.
    """

    def __init__(
        self,
        portrait: str | Path | np.ndarray | None = None,
        *,
        engine: Engine | str = "parametric",
        engine_options: dict[str, Any] | None = None,
        avatar: PreparedAvatar | None = None,
        seed: int = 0,
        idle: bool = True,
        audio_rate: int | None = None,
        watermark: bool = True,
        sync_with_audio: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if portrait is None and avatar is None:
            raise ValueError("TalkingPortraitVideo needs a portrait (path or image) or a prepared avatar")
        if avatar is not None and not isinstance(engine, Engine):
            raise ValueError("a prepared avatar needs the Engine instance that prepared it")
        self._portrait = portrait
        self._engine_spec = engine
        self._engine_options = dict(engine_options or {})
        self._engine: Engine | None = engine if isinstance(engine, Engine) else None
        self._owns_engine = self._engine is None
        self._avatar = avatar
        self._seed, self._idle, self._watermark = seed, idle, watermark
        self._audio_rate = audio_rate
        self._sync_with_audio = sync_with_audio
        self._stream: AvatarStream | None = None
        self._stats: StreamStats | None = None
        self._emitter: asyncio.Task | None = None
        self._speech_type: type[OutputAudioRawFrame] = TTSAudioRawFrame
        self._context_id: str | None = None

    @property
    def stream(self) -> AvatarStream | None:
        """The running stream, None before the StartFrame and after the end."""
        return self._stream

    @property
    def stats(self) -> StreamStats | None:
        """Counters of the current (or last) stream."""
        return self._stats

    @property
    def fps(self) -> float | None:
        return self._engine.fps if self._engine else None

    async def setup(self, setup: Any) -> None:
        await super().setup(setup)
        if self._audio_rate is None:
            self._audio_rate = int(getattr(setup, "audio_out_sample_rate", None) or 24000)
        if self._avatar is None:
            self._engine, self._avatar = await asyncio.to_thread(
                prepare_avatar, self._portrait, self._engine or self._engine_spec, self._engine_options
            )

    async def cleanup(self) -> None:
        await self._stop()
        if self._owns_engine and self._engine is not None:
            self._engine.close()
        await super().cleanup()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        stream = self._stream
        downstream = direction == FrameDirection.DOWNSTREAM
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start()
        elif isinstance(frame, InterruptionFrame):
            if stream is not None:
                stream.interrupt()  # before passing it on: no speech frame leaves after it
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._finish()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        elif stream is None or not downstream or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, OutputAudioRawFrame):
            self._speech_type = type(frame)
            self._context_id = getattr(frame, "context_id", None)
            await stream.push_audio(frame.audio, frame.sample_rate, frame.num_channels)
        else:
            if isinstance(frame, TTSStoppedFrame):
                stream.end_segment()
            stream.mark(frame, keep_on_interrupt=not getattr(frame, "interruptible", True))

    # -- internals --

    async def _start(self) -> None:
        if self._stream is not None:
            return
        assert self._engine is not None and self._avatar is not None
        self._stream = AvatarStream(self._engine, self._avatar, audio_rate=self._audio_rate or 24000,
                                    seed=self._seed, idle=self._idle, watermark=self._watermark)
        self._stats = self._stream.stats
        await self._stream.start()
        self._emitter = self.create_task(self._emit(self._stream), "talking-portrait-emitter")

    async def _finish(self) -> None:
        """End of the pipeline: the speech already pushed still comes out, then the stream stops."""
        if self._stream is not None:
            self._stream.end_segment()
            try:
                await self._stream.drain()
            except RuntimeError as exc:  # the engine failed: still end the pipeline
                await self.push_error(error_msg=f"talking portrait: {exc}")
        await self._stop()

    async def _stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()
        if self._emitter is not None:  # it ends by itself once the closed stream is drained
            emitter, self._emitter = self._emitter, None
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(emitter), 2.0)
            if not emitter.done():
                await self.cancel_task(emitter)

    async def _emit(self, stream: AvatarStream) -> None:
        try:
            async for event in stream:
                if isinstance(event, StreamMarker):
                    await self.push_frame(event.item)
                else:
                    await self._push_avatar_frame(event)
        except RuntimeError as exc:  # the engine failed; the audio frames get the same error
            await self.push_error(error_msg=f"talking portrait: {exc}")

    async def _push_avatar_frame(self, frame: AvatarFrame) -> None:
        height, width = frame.image.shape[:2]
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(width, height), format="RGB")
        image.sync_with_audio = self._sync_with_audio
        image.metadata[METADATA_KEY] = {"index": frame.index, "speaking": frame.speaking}
        audio_type = self._speech_type if frame.speaking else OutputAudioRawFrame
        audio = audio_type(audio=frame.audio.tobytes(), sample_rate=frame.audio_rate,
                           num_channels=frame.audio.shape[1])
        if frame.speaking and hasattr(audio, "context_id"):
            audio.context_id = self._context_id
        await self.push_frame(image)
        await self.push_frame(audio)


__all__ = ["METADATA_KEY", "TalkingPortraitVideo"]
