"""Many sessions: isolation between concurrent sessions, the busy limit, and graceful degradation."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from server.app import App
from server.degrade import LoadShedder
from tests.test_server_stream import Client

SIZE = 128
BOX_ROWS = slice(int(SIZE * 0.7) - 6, int(SIZE * 0.7) + 7)  # where BoxSession draws its "mouth"
BOX_COLS = slice(SIZE // 2 - SIZE // 10, SIZE // 2 + SIZE // 10)


def tone(seconds: float, freq: float = 220.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


async def wait_until(predicate, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return predicate()


def mouth_darkness(images: list[np.ndarray], still: np.ndarray) -> np.ndarray:
    """Per frame: how much darker the box region is than in the still portrait (grey levels)."""
    reference = still[BOX_ROWS, BOX_COLS].astype(float).mean()
    return np.array([reference - image[BOX_ROWS, BOX_COLS].astype(float).mean() for image in images])


async def test_concurrent_sessions_are_isolated_and_the_next_one_is_busy(make_config, box_engine_factory):
    config = make_config(**{"engine.size": SIZE, "server.max_sessions": 2, "provenance.watermark": False})
    app = App(config, box_engine_factory(size=SIZE))
    await app.start(host="127.0.0.1", port=0)
    loud, quiet = Client(tone(4.0)), Client(np.zeros(16000 * 4, np.float32))
    third = Client(None)
    url = f"ws://127.0.0.1:{app.port}/ws"
    try:
        async with connect(url) as ws_loud, connect(url) as ws_quiet, connect(url) as ws_third:
            answers = await asyncio.gather(loud.connect(ws_loud), quiet.connect(ws_quiet))
            ids = [a["session"] for a in answers]
            await third.pc.setLocalDescription(await third.pc.createOffer())
            await ws_third.send(json.dumps({"type": "offer", "sdp": third.pc.localDescription.sdp}))
            busy = json.loads(await ws_third.recv())
            assert busy == {"type": "error", "message": "server busy: 2 sessions running, try later"}
            assert await wait_until(lambda: len(loud.video) >= 60 and len(quiet.video) >= 60, 20)
            sessions = {s.id: s for s in app.sessions}
            loud_session, quiet_session = sessions[ids[0]], sessions[ids[1]]
            assert min(loud_session.audio.received_samples, quiet_session.audio.received_samples) > 16000
            quiet_ring = quiet_session.audio.ring
            loud_ring = loud_session.audio.ring
            quiet_audio = quiet_ring.read(max(0, quiet_ring.end - quiet_ring.capacity), quiet_ring.end)
            loud_audio = loud_ring.read(max(0, loud_ring.end - loud_ring.capacity), loud_ring.end)
            assert np.abs(loud_audio).max() > 0.2  # the tone arrived where it was sent ...
            assert np.abs(quiet_audio).max() < 0.01  # ... and nowhere else
        still = (await app.avatars.get(None)).image
        loud_dark = mouth_darkness([image for _, image in loud.video], still)
        quiet_dark = mouth_darkness([image for _, image in quiet.video], still)
        # A closed box is one black row (~12 grey levels over the 13 measured rows); any audio with
        # rms >= 0.006 opens it to 3+ rows (>= ~35).
        assert loud_dark.max() > 100  # the loud session's box opened
        assert quiet_dark.max() < 20, quiet_dark.max()  # the silent one never moved its mouth
    finally:
        for client in (loud, quiet, third):
            await client.close()
        await app.stop()


def test_load_shedder_degrades_when_behind_and_recovers_with_hysteresis():
    shedder = LoadShedder(busy_high=0.9, busy_low=0.6, recover_after_s=3.0, grace_s=2.0)
    assert [shedder.admit() for _ in range(4)] == [True] * 4
    shedder.update(1.0, engine_busy_s=0.95, windows_dropped_total=3)  # warming up: no degrading yet
    shedder.update(1.0, engine_busy_s=0.2, windows_dropped_total=3)
    assert not shedder.degraded
    shedder.update(1.0, engine_busy_s=0.5, windows_dropped_total=3)
    assert not shedder.degraded
    shedder.update(1.0, engine_busy_s=0.5, windows_dropped_total=5)  # windows were dropped
    assert shedder.degraded and shedder.degradations == 1
    assert [shedder.admit() for _ in range(6)] == [True, False, True, False, True, False]
    assert shedder.skipped == 3
    for _ in range(5):  # busy 0.45 at half rate means 0.9 at full rate: stay degraded
        shedder.update(1.0, engine_busy_s=0.45, windows_dropped_total=5)
    assert shedder.degraded
    shedder.update(1.0, engine_busy_s=0.2, windows_dropped_total=5)
    shedder.update(1.0, engine_busy_s=0.2, windows_dropped_total=5)
    assert shedder.degraded  # not yet: 2 of 3 healthy seconds
    shedder.update(1.0, engine_busy_s=0.2, windows_dropped_total=5)
    assert not shedder.degraded and all(shedder.admit() for _ in range(4))
    shedder.update(1.0, engine_busy_s=0.95, windows_dropped_total=5)  # busy alone also degrades
    assert shedder.degraded and shedder.degradations == 2
    for _ in range(5):  # the second recovery waits twice as long (6 s): no flapping on the edge
        shedder.update(1.0, engine_busy_s=0.2, windows_dropped_total=5)
    assert shedder.degraded
    shedder.update(1.0, engine_busy_s=0.2, windows_dropped_total=5)
    assert not shedder.degraded
    off = LoadShedder(enabled=False)
    off.update(1.0, engine_busy_s=5.0, windows_dropped_total=100)
    assert not off.degraded


@pytest.mark.parametrize("degrade", [True, False])
async def test_a_slow_engine_degrades_instead_of_freezing(make_config, box_engine_factory, degrade):
    """Box engine needing 120 ms per 80 ms window: with ``server.degrade`` the session renders every
    other window (no windows dropped from the queue after the switch), without it windows pile up and drop."""
    config = make_config(**{
        "engine.size": SIZE, "provenance.watermark": False, "server.degrade": degrade,
        "window.frames_per_window": 2, "window.hop": 2,
    })
    app = App(config, box_engine_factory(size=SIZE, delay_s=0.12))
    await app.start(host="127.0.0.1", port=0)
    client = Client(tone(6.0))
    stats: list[dict] = []
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await client.connect(ws)
            while len(stats) < 5:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "stats":
                    stats.append(message)
        last = stats[-1]
        assert last["degraded"] is degrade
        if degrade:
            assert last["windows_skipped"] > 0
            dropped_after = last["windows_dropped"] - stats[2]["windows_dropped"]
            assert dropped_after == 0, stats  # at half the work the engine keeps up
        else:
            assert last["windows_skipped"] == 0 and last["windows_dropped"] > stats[1]["windows_dropped"]
        images = [image for _, image in client.video[-25:]]
        assert len(client.video) > 50  # never froze: frames kept coming and kept changing
        assert max(np.abs(a.astype(int) - images[0]).mean() for a in images[1:]) > 0.1
    finally:
        await client.close()
        await app.stop()


def test_frame_buffer_drains_a_lasting_backlog():
    """After a hiccup leaves frames waiting, steady production would keep that extra latency forever;
    the buffer skips one frame per ``drain_every`` ticks until at most one frame waits."""
    from avatar.engine import Frame
    from server.video_track import FrameBuffer

    image = np.zeros((4, 4, 3), np.uint8)
    buffer = FrameBuffer(capacity=8, max_backlog=5, drain_every=10)
    index = 0
    for _ in range(4):  # the backlog a stall left behind
        buffer.push(Frame(index=index, image=image))
        index += 1
    waiting = []
    for _ in range(100):  # then one frame produced per tick, one taken per tick
        buffer.push(Frame(index=index, image=image))
        index += 1
        taken = buffer.take()
        assert taken is not None
        waiting.append(len(buffer))
    assert waiting[0] == 4 and waiting[-1] == 0  # the excess latency is gone ...
    assert buffer.drained == 4 and buffer.skipped == 4  # ... one frame at a time
    steady = FrameBuffer(capacity=8, max_backlog=5, drain_every=10)
    for tick in range(100):  # no backlog: nothing is ever skipped
        steady.push(Frame(index=tick, image=image))
        steady.take()
    assert steady.skipped == 0
