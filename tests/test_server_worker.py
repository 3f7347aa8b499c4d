"""Engine worker thread: frames come back on the loop, errors are reported once, stop/join frees it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from avatar.engine import AudioWindow, PreparedAvatar
from server.engine_worker import EngineWorker
from tests.conftest import BoxSession

AVATAR = PreparedAvatar("t", np.zeros((64, 64, 3), np.uint8))


def _window(k: int) -> AudioWindow:
    return AudioWindow(samples=np.zeros(4800, np.float32), start_sample=k * 1280 - 3200, first_frame=2 * k,
                       num_frames=2, fps=25, emit_from=2 * k)


async def _until(predicate, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_frames_arrive_on_the_loop_in_order_and_engine_runs_off_loop():
    loop = asyncio.get_running_loop()
    session = BoxSession(AVATAR)
    received, loop_threads = [], set()

    def on_frames(frames, seconds):
        loop_threads.add(threading.current_thread().name)
        received.extend(f.index for f in frames)

    worker = EngineWorker(session, loop, on_frames, lambda exc: None, max_windows=8)
    worker.start()
    for k in range(5):
        worker.submit(_window(k))
    await _until(lambda: len(received) == 10)
    assert received == list(range(10))
    assert loop_threads == {threading.current_thread().name}
    assert threading.current_thread().name not in session.threads
    assert await asyncio.to_thread(worker.join, 5)
    assert not worker.alive and session.closed == 1
    assert worker.join(1) and session.closed == 1  # idempotent


async def test_full_queue_drops_oldest_window():
    loop = asyncio.get_running_loop()
    session = BoxSession(AVATAR, delay_s=0.2)
    received = []
    worker = EngineWorker(session, loop, lambda frames, s: received.extend(frames), lambda exc: None,
                          max_windows=2)
    worker.start()
    for k in range(6):
        worker.submit(_window(k))
    assert worker.depth <= 2
    assert worker.windows_dropped >= 3
    await asyncio.to_thread(worker.join, 5)
    assert not worker.alive


async def test_engine_error_is_reported_once_and_thread_ends():
    loop = asyncio.get_running_loop()
    session = BoxSession(AVATAR, fail_at=2)
    errors = []
    worker = EngineWorker(session, loop, lambda frames, s: None, errors.append, max_windows=8)
    worker.start()
    for k in range(4):
        worker.submit(_window(k))
    await _until(lambda: errors)
    await _until(lambda: not worker.alive)
    assert len(errors) == 1 and "exploded" in str(errors[0])
    assert session.closed == 1
    worker.submit(_window(9))  # ignored after the failure, no exception
    assert worker.join(1)


async def test_join_without_start_closes_engine_session():
    session = BoxSession(AVATAR)
    worker = EngineWorker(session, asyncio.get_running_loop(), lambda *a: None, lambda e: None)
    assert worker.join(0.1) and session.closed == 1
