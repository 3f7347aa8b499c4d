"""Several sessions' motion frames sampled in one batched call (``DenoiseBatcher``).

A frame's sampling is a few matrix-vector products whose cost is mostly reading the nets' weights (3.4 M
values), so frames of B sessions sampled together cost little more than one: on one core of the 2-core
development VM, 1.81 ms for one frame, 2.11 ms for 2, 2.73 ms for 3 and 3.15 ms for 6 (0.53 ms a frame).
Live sessions run in their own engine threads. One batch runs at a time: requests that arrive while one
runs wait, and then run together as the next batch, in the thread of the oldest of them. There is no
thread of its own: a lone session always runs batches of one, with no waiting.

A frame's values depend only on its own rows (its audio, motion frames and noise), so batching changes a
session's motion only in the last bits of float32 rounding (BLAS may sum in another order for another
batch size).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from avatar.motion.network import MotionNets
from avatar.motion.sampler import SamplerSettings, denoise

MAX_BATCH = 16
"""Most frames in one call (beyond this the call's cost grows with the batch)."""


@dataclass
class _Request:
    mel: np.ndarray
    context: np.ndarray
    noise: np.ndarray
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when the result (or error) is in, or when this request's thread is to run the next batch."""
    result: np.ndarray | None = None
    error: BaseException | None = None


class DenoiseBatcher:
    """``denoise`` with ``net`` and ``settings`` for requests from any thread, batched when concurrent.

    One batch runs at a time. Its runner is the thread of the oldest waiting request: it runs one batch
    (its own request and up to ``max_batch - 1`` queued after it), hands back each row, and wakes the
    thread of the next queued request to run the next batch; so no session waits for more than the
    batch in progress and its own, and none serves the others for long. The queue holds at most one
    request per calling thread (each waits for its own answer), so it is bounded by the sessions."""

    def __init__(self, net: MotionNets, settings: SamplerSettings, max_batch: int = MAX_BATCH) -> None:
        self.net, self.settings, self.max_batch = net, settings, max(1, int(max_batch))
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._running = False
        self.calls = 0
        """Batched calls made so far (``frames / calls`` is the mean batch size)."""
        self.frames = 0

    def __call__(self, mel: np.ndarray, context: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Normalised motion (B, D) for log-mel (B, 48, 40), motion frames (B, n, D) and noise (B, steps, D),
        as ``denoise`` gives (B is 1 for a live session's frame)."""
        request = _Request(mel, context, noise)
        with self._lock:
            self._queue.append(request)
            lead = not self._running
            self._running = True
        if not lead:
            request.wake.wait()
        if request.result is None and request.error is None:  # this thread runs the next batch
            self._run_batch()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _run_batch(self) -> None:
        """Run the oldest queued requests as one batch, then pass the turn to the next queued one."""
        with self._lock:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            out = denoise(
                self.net,
                np.concatenate([r.mel for r in batch]),
                np.concatenate([r.context for r in batch]),
                np.concatenate([r.noise for r in batch]),
                self.settings,
            )
            start = 0
            for r in batch:
                r.result = out[start : start + len(r.mel)]
                start += len(r.mel)
            self.calls += 1
            self.frames += len(batch)
        except BaseException as exc:  # each waiting session gets the error, none hangs
            for r in batch:
                r.error = exc
        finally:
            with self._lock:
                following = self._queue[0] if self._queue else None
                self._running = following is not None
            for r in batch:
                r.wake.set()
            if following is not None:
                following.wake.set()
