"""The talking portrait as a LiveKit avatar worker: joins a room, receives the agent's speech over a data
stream, publishes the portrait's video and that speech in sync (LiveKit's ``AvatarRunner``).

    LIVEKIT_URL=wss://... LIVEKIT_TOKEN=... python examples/livekit_avatar_worker.py [--portrait face.jpg]

The token is for this worker's own identity (the agent uses it as ``destination_identity`` of its
``DataStreamAudioOutput``) with room join and publish grants; docs/integrations.md shows the agent side
and how the agent launches this worker. Needs the ``[livekit]`` extra and a LiveKit server (none runs in
this project's tests: tests/test_integration_livekit.py checks the generator against LiveKit's own
AV synchronizer instead).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioReceiver  # noqa: E402

from integrations.livekit import TalkingPortraitVideoGenerator  # noqa: E402

log = logging.getLogger("talking-portrait.livekit")


async def run(url: str, token: str, portrait: Path) -> None:
    generator = await TalkingPortraitVideoGenerator.create(portrait)  # prepares the portrait first
    room = rtc.Room()
    stopped = asyncio.Event()

    @room.on("participant_disconnected")
    def _on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            log.info("agent %s left, stopping", participant.identity)
            stopped.set()

    room.on("disconnected", lambda *_: stopped.set())
    await room.connect(url, token)
    frame_ms = round(1000 / generator.fps)  # one received audio frame per video frame
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room, frame_size_ms=frame_ms),
                          video_gen=generator, options=generator.options)
    tasks: list[asyncio.Task] = []
    try:
        await runner.start()
        tasks = [asyncio.create_task(runner.wait_for_complete()), asyncio.create_task(stopped.wait())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await runner.aclose()
        await generator.aclose()
        await room.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description="talking-portrait LiveKit avatar worker")
    parser.add_argument("--url", default=os.environ.get("LIVEKIT_URL"), help="default: $LIVEKIT_URL")
    parser.add_argument("--token", default=os.environ.get("LIVEKIT_TOKEN"), help="default: $LIVEKIT_TOKEN")
    parser.add_argument("--portrait", type=Path,
                        default=Path(__file__).resolve().parents[1] / "avatar/assets/astronaut.png")
    args = parser.parse_args()
    if not args.url or not args.token:
        parser.error("give --url and --token (or set LIVEKIT_URL and LIVEKIT_TOKEN)")
    logging.basicConfig(level=logging.INFO)
    asyncio.run(run(args.url, args.token, args.portrait))


if __name__ == "__main__":
    main()
