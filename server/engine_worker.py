"""One engine thread per session: a bounded window queue in, frames handed back to the event loop.

The thread owns the ``EngineSession``: it calls ``process`` for each window and ``close`` when it
stops, so engine methods are never called concurrently and never on the event loop. Exceptions are
caught and reported once through ``on_error`` (on the loop); the thread then stops.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable

from avatar.engine import AudioWindow, EngineSession, Frame

log = logging.getLogger("server.engine_worker")
_STOP = object()

FramesCallback = Callable[[list[Frame], float], None]
"""Called on the loop with the frames of one window and the engine seconds it took."""
ErrorCallback = Callable[[BaseException], None]


class EngineWorker:
    """Runs ``session.process`` on windows in a daemon thread; ``submit`` never blocks."""

    def __init__(
        self,
        session: EngineSession,
        loop: asyncio.AbstractEventLoop,
        on_frames: FramesCallback,
        on_error: ErrorCallback,
        max_windows: int = 3,
        name: str = "engine-worker",
    ) -> None:
        self.session = session
        self._loop = loop
        self._on_frames = on_frames
        self._on_error = on_error
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, max_windows))
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False
        self._started = False
        self._session_closed = False
        self._interrupt = threading.Event()
        self.windows_dropped = 0
        self.interrupts = 0  # engine interrupt() calls made by the thread

    @property
    def depth(self) -> int:
        """Windows waiting for the engine."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def submit(self, window: AudioWindow) -> None:
        """Queue a window; when the queue is full the oldest waiting window is dropped (counted)."""
        if self._stopping:
            return
        while True:
            try:
                self._queue.put_nowait(window)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.windows_dropped += 1
                except queue.Empty:
                    pass

    def interrupt(self) -> int:
        """Drop the windows waiting (not counted as dropped) and have the thread call the engine
        session's ``interrupt()`` before the next window. Non-blocking; returns the windows dropped."""
        if self._stopping:
            return 0
        self._interrupt.set()
        dropped = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return dropped
            if item is _STOP:  # stop() raced us: put it back and give up
                self._queue.put_nowait(item)
                return dropped
            dropped += 1

    def stop(self) -> None:
        """Ask the thread to finish after its current window (non-blocking, idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        while True:
            try:
                self._queue.put_nowait(_STOP)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def join(self, timeout: float | None = None) -> bool:
        """Stop and wait for the thread; True when it has ended (or never started). Blocking."""
        self.stop()
        if not self._started:
            self._close_session()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if self._interrupt.is_set():
                    self._interrupt.clear()
                    self.session.interrupt()
                    self.interrupts += 1
                started = time.perf_counter()
                frames = self.session.process(item)  # type: ignore[arg-type]
                if not isinstance(frames, list) or not all(isinstance(f, Frame) for f in frames):
                    raise TypeError("engine returned something other than a list of Frame")
                self._post(self._on_frames, frames, time.perf_counter() - started)
        except BaseException as exc:  # reported to the session, which ends itself
            self._stopping = True
            self._post(self._on_error, exc)
        finally:
            self._close_session()

    def _close_session(self) -> None:
        if self._session_closed:
            return
        self._session_closed = True
        try:
            self.session.close()
        except Exception:
            log.exception("engine session close failed")

    def _post(self, callback: Callable, *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass
