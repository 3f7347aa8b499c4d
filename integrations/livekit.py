"""The talking portrait as a LiveKit Agents ``VideoGenerator``, for its avatar worker (``AvatarRunner``).

The agent worker sends its TTS audio to the avatar worker (``DataStreamAudioOutput`` ->
``DataStreamAudioReceiver``); ``AvatarRunner`` pushes it here with ``push_audio`` and publishes what this
yields through LiveKit's ``AVSynchronizer``: for each video frame (1/fps s) an ``rtc.VideoFrame`` (RGBA),
followed, while a speech segment plays, by that frame's ``rtc.AudioFrame`` (the speech, resampled to
``AvatarOptions.audio_sample_rate``); after the segment's last frame, ``AudioSegmentEnd`` (the runner then
tells the agent playback finished). Between segments: idle frames (blinks, breathing), video only.
``clear_buffer`` (the user interrupted) drops the speech not yet out; the face eases back to idle.

Deployment (a LiveKit server and an agent worker): docs/integrations.md, examples/livekit_avatar_worker.py.
Requires ``livekit-agents`` (``pip install 'talking-portrait[livekit]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator

from avatar.engine import Engine, PreparedAvatar
from integrations.stream import AvatarStream, StreamMarker, prepare_avatar


class TalkingPortraitVideoGenerator(VideoGenerator):
    """Animates one prepared portrait with the audio ``AvatarRunner`` pushes (see the module docstring).

    Build it with ``await TalkingPortraitVideoGenerator.create(portrait, ...)`` (prepares the portrait in a
    thread and starts the stream) and pass ``generator.options`` to ``AvatarRunner``; ``aclose`` it at the
    end.
    """

    def __init__(self, stream: AvatarStream) -> None:
        self.stream = stream
        size = stream.engine.size
        self.options = AvatarOptions(
            video_width=size, video_height=size, video_fps=stream.fps,
            audio_sample_rate=stream.audio_rate, audio_channels=stream.audio_channels,
        )

    @classmethod
    async def create(
        cls,
        portrait: str | Path | np.ndarray | None = None,
        *,
        engine: Engine | str = "parametric",
        engine_options: dict[str, Any] | None = None,
        avatar: PreparedAvatar | None = None,
        audio_sample_rate: int = 24000,
        audio_channels: int = 1,
        seed: int = 0,
        watermark: bool = True,
    ) -> TalkingPortraitVideoGenerator:
        """Prepare ``portrait`` (path or RGB uint8 array) with ``engine`` (an ``Engine`` or a registered name
        created with ``engine_options``), or use the already prepared ``avatar``; start the stream."""
        if portrait is None and avatar is None:
            raise ValueError("a portrait (path or image) or a prepared avatar is needed")

        if avatar is not None:
            if not isinstance(engine, Engine):
                raise ValueError("a prepared avatar needs the Engine instance that prepared it")
            ready_engine, prepared = engine, avatar
        else:
            ready_engine, prepared = await asyncio.to_thread(prepare_avatar, portrait, engine, engine_options)
        stream = AvatarStream(ready_engine, prepared, audio_rate=audio_sample_rate,
                              audio_channels=audio_channels, seed=seed, watermark=watermark)
        await stream.start()
        return cls(stream)

    @property
    def fps(self) -> float:
        return self.stream.fps

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Speech from the agent, or the end of a segment."""
        if isinstance(frame, AudioSegmentEnd):
            self.stream.end_segment()
            self.stream.mark(frame)
            return
        await self.stream.push_audio(bytes(frame.data), frame.sample_rate, frame.num_channels)

    def clear_buffer(self) -> None:
        """Stop the speech now: what was pushed and not yet out is dropped (no ``AudioSegmentEnd`` for it)."""
        self.stream.interrupt()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        async for event in self.stream:
            if isinstance(event, StreamMarker):
                yield event.item
                continue
            height, width = event.image.shape[:2]
            rgba = np.empty((height, width, 4), np.uint8)
            rgba[..., :3] = event.image
            rgba[..., 3] = 255
            yield rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes())
            if event.speaking or self.stream.pending():  # idle frames go without audio
                samples = event.audio.shape[0]
                yield rtc.AudioFrame(event.audio.tobytes(), event.audio_rate, event.audio.shape[1], samples)


__all__ = ["TalkingPortraitVideoGenerator"]
