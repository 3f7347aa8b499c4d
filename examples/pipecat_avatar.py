"""A pipecat pipeline with the talking portrait, runnable without API keys, a browser or a network:

    text -> SpeakText (espeak-ng as a pipecat "TTS": TTSStartedFrame, TTSAudioRawFrame x N, TTSStoppedFrame)
         -> TalkingPortraitVideo (integrations/pipecat.py)
         -> Mp4Writer (stands in for an output transport: writes each image with the audio after it)

    python examples/pipecat_avatar.py --text "Hello! I am a talking portrait." --out hello.mp4
    python examples/pipecat_avatar.py --portrait face.jpg --voice es --text "Hola, ¿qué tal?" --out hola.mp4

In a real agent, replace SpeakText with your TTS service and Mp4Writer with ``transport.output()``
(docs/integrations.md shows the transport settings). Needs the ``[pipecat]`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from avatar.audio.io import float_to_pcm16  # noqa: E402
from avatar.engine import Frame as AvatarImage  # noqa: E402
from avatar.render import write_mp4  # noqa: E402
from avatar.tts import create_tts  # noqa: E402
from integrations.pipecat import TalkingPortraitVideo  # noqa: E402

TTS_RATE = 16000  # espeak-ng's speech, as avatar.tts returns it


class SpeakText(FrameProcessor):
    """A TTS stand-in: each TextFrame becomes 20 ms TTSAudioRawFrames (espeak-ng, run in a thread)."""

    def __init__(self, voice: str = "en") -> None:
        super().__init__()
        self._tts = create_tts("espeak")
        self._voice = voice

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TextFrame):
            await self.push_frame(frame, direction)
            return
        speech = float_to_pcm16(await asyncio.to_thread(self._tts.synthesize, frame.text, self._voice))
        await self.push_frame(TTSStartedFrame())
        step = TTS_RATE // 50
        for begin in range(0, speech.size, step):
            await self.push_frame(TTSAudioRawFrame(speech[begin : begin + step].tobytes(), TTS_RATE, 1))
        await self.push_frame(TTSStoppedFrame())


class Mp4Writer(FrameProcessor):
    """Collects each image and the audio pushed after it; writes an MP4 at the EndFrame."""

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__()
        self.path, self.fps = path, fps
        self.images: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.rate = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            width, height = frame.size
            self.images.append(np.frombuffer(frame.image, np.uint8).reshape(height, width, 3))
        elif isinstance(frame, OutputAudioRawFrame):
            self.rate = frame.sample_rate
            self.audio.append(np.frombuffer(frame.audio, np.int16))
        elif isinstance(frame, EndFrame):
            await asyncio.to_thread(self._write)
        await self.push_frame(frame, direction)

    def _write(self) -> None:
        from scipy.signal import resample_poly

        audio = np.concatenate(self.audio).astype(np.float32) / 32768.0
        audio_48k = resample_poly(audio, 48000, self.rate).astype(np.float32)
        frames = (AvatarImage(i, image) for i, image in enumerate(self.images))
        size = self.images[0].shape[0]
        write_mp4(self.path, frames, audio_48k, self.fps, size)
        print(f"wrote {self.path}: {len(self.images)} frames, {audio.size / self.rate:.1f} s of audio")


async def main(args: argparse.Namespace) -> None:
    from loguru import logger

    logger.remove()  # pipecat logs every frame at DEBUG
    logger.add(sys.stderr, level="WARNING")
    avatar = TalkingPortraitVideo(args.portrait)
    writer = Mp4Writer(args.out, fps=25.0)
    pipeline = Pipeline([SpeakText(args.voice), avatar, writer])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_out_sample_rate=24000),
                            cancel_on_idle_timeout=False)
    await worker.queue_frames([TextFrame(args.text), EndFrame()])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="pipecat + talking portrait -> MP4")
    parser.add_argument("--portrait", type=Path,
                        default=Path(__file__).resolve().parents[1] / "avatar/assets/astronaut.png")
    parser.add_argument("--text", default="Hello! I am a talking portrait inside a pipecat pipeline.")
    parser.add_argument("--voice", default="en")
    parser.add_argument("--out", type=Path, default=Path("pipecat_avatar.mp4"))
    asyncio.run(main(parser.parse_args()))
