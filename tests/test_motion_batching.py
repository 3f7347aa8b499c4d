"""Concurrent sessions' motion frames sampled as one batch (``avatar.motion.batching.DenoiseBatcher``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import avatar.motion.batching as batching
from avatar.engine import SAMPLE_RATE, AudioWindow
from avatar.motion.batching import DenoiseBatcher
from avatar.motion.learned import LearnedMotionGenerator, MotionModel, load_motion_model
from avatar.motion.sampler import denoise


def _requests(model: MotionModel, count: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    n, dim, steps = model.net.context_frames, model.net.motion_dim, model.settings.steps
    return [
        (
            rng.normal(-4.0, 1.0, (1, 48, 40)).astype(np.float32),
            np.repeat(model.start[None, None], n, axis=1).astype(np.float32)
            + rng.normal(0.0, 0.3, (1, n, dim)).astype(np.float32),
            rng.standard_normal((1, steps, dim)).astype(np.float32),
        )
        for _ in range(count)
    ]


def _first_batch_held(monkeypatch, batcher: DenoiseBatcher, requests: list,
                      later=denoise) -> tuple[list, list]:
    """Each request from its own thread; the first batch (the first request alone) is held until the
    others are queued behind it; later batches run ``later``. Returns (batch sizes, results or errors)."""
    started, release = threading.Event(), threading.Event()
    sizes: list[int] = []

    def held_first(net, mel, context, noise, settings):
        sizes.append(len(mel))
        if len(sizes) == 1:
            started.set()
            assert release.wait(10)
            return denoise(net, mel, context, noise, settings)
        return later(net, mel, context, noise, settings)

    monkeypatch.setattr(batching, "denoise", held_first)
    results: list = [None] * len(requests)

    def ask(i: int) -> None:
        try:
            results[i] = batcher(*requests[i])
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    while len(batcher._queue) < len(requests) - 1:
        threading.Event().wait(0.005)
    release.set()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    monkeypatch.setattr(batching, "denoise", denoise)
    return sizes, results


def test_requests_that_wait_for_a_running_batch_run_as_the_next_batch(monkeypatch):
    model = load_motion_model()
    batcher = DenoiseBatcher(model.net, model.settings)
    requests = _requests(model, 4)
    sizes, results = _first_batch_held(monkeypatch, batcher, requests)
    assert sizes == [1, 3]
    assert (batcher.calls, batcher.frames) == (2, 4)
    for request, result in zip(requests, results, strict=True):  # each got its own rows
        alone = denoise(model.net, *request, model.settings)
        np.testing.assert_allclose(result, alone, atol=1e-4)


def test_an_error_reaches_every_waiting_session_and_the_batcher_goes_on(monkeypatch):
    model = load_motion_model()
    batcher = DenoiseBatcher(model.net, model.settings)
    requests = _requests(model, 3)

    def failing(*_):
        raise FloatingPointError("bad frame")

    sizes, results = _first_batch_held(monkeypatch, batcher, requests, later=failing)
    assert sizes == [1, 2]
    assert isinstance(results[0], np.ndarray)
    assert [type(r) for r in results[1:]] == [FloatingPointError, FloatingPointError]
    assert batcher(*requests[1]).shape == (1, model.net.motion_dim)  # not stuck after the error


def _speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = 0.5 * (1 + np.sin(2 * np.pi * (2.0 + seed) * t))
    return (0.3 * envelope * np.sin(2 * np.pi * 160 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def _session_frames(seed: int, frames: int, barrier: threading.Barrier | None) -> list[np.ndarray]:
    generator = LearnedMotionGenerator(seed=seed)
    audio = _speech(frames / 25 + 0.2, seed)
    spf = SAMPLE_RATE // 25
    out = []
    for f in range(frames):
        if barrier is not None:
            barrier.wait(10)  # the sessions ask for their frames at the same moment
        start = max(0, f * spf - 3200)
        window = AudioWindow(audio[start : (f + 1) * spf + 1280], start, f, 1, 25.0, f)
        out.extend(np.concatenate([m.expression.ravel(), [m.blink, m.head_pitch, m.head_yaw, m.head_roll]])
                   for m in generator.process(window))
    return out


@pytest.mark.slow
def test_concurrent_sessions_get_the_motion_they_would_get_alone():
    frames, seeds = 12, (0, 1, 2)
    alone = [_session_frames(seed, frames, None) for seed in seeds]
    batcher = load_motion_model().batcher(load_motion_model().settings)
    made = batcher.frames
    barrier = threading.Barrier(len(seeds))
    together: list = [None] * len(seeds)

    def run(i: int) -> None:
        together[i] = _session_frames(seeds[i], frames, barrier)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(seeds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert batcher.frames - made == frames * len(seeds)  # whether they shared calls depends on timing
    for mine, reference in zip(together, alone, strict=True):
        np.testing.assert_allclose(np.stack(mine), np.stack(reference), atol=1e-4)
