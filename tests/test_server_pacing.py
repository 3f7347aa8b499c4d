"""Clock-paced video track against a fake clock: pts, spacing, repeats, stills, drift, resync; the
frame buffer's bounds; and the echo audio track's framing."""

from __future__ import annotations

import numpy as np
import pytest
from av import VideoFrame

from avatar.audio.windowing import AudioRing
from avatar.engine import Frame
from server.echo_audio import EchoAudioTrack
from server.pacing import Pacer
from server.video_track import FrameBuffer, PacedVideoTrack, video_frame

STILL = np.full((64, 64, 3), 7, np.uint8)


def _frame(index: int) -> Frame:
    return Frame(index=index, image=np.full((64, 64, 3), index % 250, np.uint8))


async def test_pts_spacing_and_no_drift_over_1000_ticks(fake_clock):
    t0 = fake_clock.now()
    track = PacedVideoTrack(FrameBuffer(), STILL, fps=25, clock=fake_clock)
    last_pts = -1
    for k in range(1000):
        frame = await track.recv()
        assert frame.pts == k * 3600 and frame.pts > last_pts
        assert frame.time_base.denominator == 90000
        last_pts = frame.pts
        # released exactly at t0 + k / fps, so no error accumulates
        assert fake_clock.now() == pytest.approx(t0 + k / 25, abs=1e-9)
    assert track.pacer.resyncs == 0 and track.sent == 1000


async def test_still_image_first_then_frames_then_repeats(fake_clock):
    buffer = FrameBuffer()
    track = PacedVideoTrack(buffer, STILL, fps=25, clock=fake_clock)
    first = (await track.recv()).to_ndarray(format="rgb24")
    assert (first == 7).all() and track.stills == 1
    buffer.push(_frame(1))
    buffer.push(_frame(2))
    got = [(await track.recv()).to_ndarray(format="rgb24")[0, 0, 0] for _ in range(2)]
    assert got == [1, 2] and track.shown_index == 2
    late = [(await track.recv()).to_ndarray(format="rgb24")[0, 0, 0] for _ in range(3)]
    assert late == [2, 2, 2] and track.repeated == 3  # engine late: the last frame is repeated
    buffer.push(_frame(3))
    assert (await track.recv()).to_ndarray(format="rgb24")[0, 0, 0] == 3
    # fresh = new engine pictures; every sent frame is fresh, repeated or the still portrait
    assert (track.fresh, track.repeated, track.stills, track.sent) == (3, 3, 1, 7)
    assert track.first_fresh_tick == 1 and track.first_fresh_at > track.first_sent_at


async def test_sent_frames_wrap_the_engine_picture_without_copying(fake_clock):
    buffer = FrameBuffer()
    track = PacedVideoTrack(buffer, STILL, fps=25, clock=fake_clock)
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    buffer.push(Frame(index=0, image=picture))
    sent = await track.recv()
    wrapped = sent.to_ndarray(format="rgb24")
    assert np.shares_memory(wrapped, picture) and np.array_equal(wrapped, picture)
    # the encoder's conversion reads the same pixels as from a copied frame
    copied = VideoFrame.from_ndarray(picture.copy(), format="rgb24")
    assert np.array_equal(sent.reformat(format="yuv420p").to_ndarray(),
                          copied.reformat(format="yuv420p").to_ndarray())
    # a repeat is a new frame object over the same picture (two frames are never one object)
    repeat = await track.recv()
    assert repeat is not sent and repeat.pts > sent.pts and track.repeated == 1
    assert np.array_equal(repeat.to_ndarray(format="rgb24"), picture)
    # a strided picture (not one block of memory) is sent right too
    strided = np.ascontiguousarray(np.repeat(picture, 2, axis=1))[:, ::2]
    assert np.array_equal(video_frame(strided).to_ndarray(format="rgb24"), picture)


async def test_late_consumer_resyncs_instead_of_bursting(fake_clock):
    pacer = Pacer(fake_clock, 0.04)
    for _ in range(5):
        await pacer.next_tick()
    fake_clock.advance(1.0)  # the loop stalled for a second (25 ticks)
    released_without_wait = 0
    ticks = []
    for _ in range(10):
        before = len(fake_clock.sleeps)
        ticks.append(await pacer.next_tick())
        released_without_wait += len(fake_clock.sleeps) == before
    assert pacer.resyncs == 1
    assert released_without_wait <= 3  # at most the late tick plus a frame or two of catch-up
    # the missed ticks are skipped, not renumbered: tick k stays due at t0 + k * period (pts on the clock)
    assert ticks[0] >= 28 and pacer.skipped == ticks[0] - 5
    assert abs(pacer.due(ticks[-1]) - fake_clock.now()) < 1e-9
    # after the resync, ticks are spaced one period apart again
    times = []
    for _ in range(5):
        await pacer.next_tick()
        times.append(fake_clock.now())
    assert np.allclose(np.diff(times), 0.04)


async def test_small_lateness_catches_up_without_resync(fake_clock):
    pacer = Pacer(fake_clock, 0.04)
    await pacer.next_tick()
    fake_clock.advance(0.06)  # 1.5 frames late
    await pacer.next_tick()
    await pacer.next_tick()
    assert pacer.resyncs == 0


def test_frame_buffer_drops_oldest_and_skips_backlog():
    buffer = FrameBuffer(capacity=4, max_backlog=3)
    for i in range(6):
        buffer.push(_frame(i))
    assert len(buffer) == 4 and buffer.dropped == 2  # frames 0 and 1 pushed out
    taken = buffer.take()
    assert taken.index == 5 and buffer.skipped == 3 and len(buffer) == 0  # backlog 4 > 3: newest
    for i in range(6, 9):
        buffer.push(_frame(i))
    assert [buffer.take().index for _ in range(3)] == [6, 7, 8]  # backlog of 3 is played in order
    assert buffer.take() is None


async def test_echo_audio_follows_the_video_frame_on_screen(fake_clock):
    ring = AudioRing(10)
    ring.write(np.arange(16000 * 3, dtype=np.float32) % 1000 / 2000.0)
    video = PacedVideoTrack(FrameBuffer(), STILL, fps=25, clock=fake_clock)
    echo = EchoAudioTrack(ring, video, clock=fake_clock)
    silent = await echo.recv()
    assert silent.sample_rate == 48000 and silent.samples == 960 and silent.pts == 0
    assert not silent.to_ndarray().any()  # nothing on screen yet: silence
    video.shown_index, video.shown_at = 25, fake_clock.now()  # frame 25 (t = 1.0 s) is on screen
    assert echo.target_sample() == 16000
    pts = []
    for _ in range(5):
        frame = await echo.recv()
        pts.append(frame.pts)
        assert frame.samples == 960
    assert pts == [960 * k for k in range(1, 6)]
    assert 16000 < echo._cursor <= 16000 + 6 * 320
