"""Shared fixtures: a tiny stand-in engine, a fake clock, server configs and a raw HTTP GET."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.engine import AudioWindow, Engine, EngineSession, Frame, PreparedAvatar
from avatar.errors import PortraitError

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "avatar" / "assets" / "astronaut.png"


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Renders sign their MP4s with a local key pair kept under $XDG_CACHE_HOME: keep the tests' own
    (subprocesses inherit the variable) out of the user's home."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


class BoxSession(EngineSession):
    """Draws a dark box whose height follows each frame's audio RMS, plus a dot that drifts every frame
    (idle motion). ``delay_s`` simulates a slow engine, ``fail_at`` raises on that window number."""

    def __init__(self, avatar: PreparedAvatar, delay_s: float = 0.0, fail_at: int | None = None) -> None:
        self.avatar = avatar
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.windows = 0
        self.closed = 0
        self.threads: set[str] = set()

    def process(self, window: AudioWindow) -> list[Frame]:
        self.threads.add(threading.current_thread().name)
        self.windows += 1
        if self.fail_at is not None and self.windows >= self.fail_at:
            raise RuntimeError("box engine exploded on purpose")
        if self.delay_s:
            time.sleep(self.delay_s)
        frames = []
        size = self.avatar.image.shape[0]
        for index in range(window.emit_from, window.first_frame + window.num_frames):
            lo, hi = window.frame_span(index)
            chunk = window.samples[max(0, lo) : max(0, hi)]
            rms = float(np.sqrt(np.mean(chunk**2))) if chunk.size else 0.0
            image = self.avatar.image.copy()
            half = int(min(1.0, rms * 6.0) * size * 0.15)
            c = size // 2
            image[int(size * 0.7) - half : int(size * 0.7) + half + 1, c - size // 8 : c + size // 8] = 0
            x = (index * 5) % (size - 8)
            image[4:12, x : x + 8] = 255
            frames.append(Frame(index=index, image=image, speaking=window.speech > 0.3, info={"rms": rms}))
        return frames

    def close(self) -> None:
        self.closed += 1


class BoxEngine(Engine):
    """Test double for the parametric engine (same constructor shape: fps, size, seed)."""

    name = "box"

    def __init__(self, fps: float = 25.0, size: int = 512, seed: int = 0, **session_options) -> None:
        super().__init__(fps=fps, size=size)
        self.session_options = session_options
        self.sessions: list[BoxSession] = []
        self.prepared: list[str] = []
        self.framings: list[str | None] = []
        """The ``framing`` each ``prepare`` call asked for (the box engine does not crop)."""

    def prepare(self, portrait, avatar_id: str | None = None, framing: str | None = None,
                size: int | None = None) -> PreparedAvatar:
        size = self.output_size(size)
        if isinstance(portrait, np.ndarray):
            rgb = portrait
        else:
            bgr = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
            if bgr is None:
                raise PortraitError(f"cannot read portrait {Path(portrait).name}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self.prepared.append(avatar_id or "")
        self.framings.append(None if framing is None else str(framing))
        image = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        return PreparedAvatar(avatar_id=avatar_id or "portrait", image=np.ascontiguousarray(image))

    def new_session(self, avatar: PreparedAvatar, seed: int = 0) -> BoxSession:
        session = BoxSession(avatar, **self.session_options)
        self.sessions.append(session)
        return session


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it instantly (and yields to the loop)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def box_engine_factory() -> type[BoxEngine]:
    return BoxEngine


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., object]:
    """``make_config(**{"section.key": value})`` -> a validated server Config on a free port whose
    static folder (tmp/static) holds index.html, app.js, style.css, logo.png, icon.svg and kiosk.html."""
    from server.config import load_config

    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<!doctype html><title>test page</title>")
    (static / "kiosk.html").write_text("<!doctype html><title>kiosk</title>")
    (static / "app.js").write_text("export const ok = 1;\n")
    (static / "style.css").write_text("body { margin: 0 }\n")
    (static / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    cv2.imwrite(str(static / "logo.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "secret.txt").write_text("outside the static folder")

    def build(**overrides):
        values = {
            "server.port": 0,
            "server.static_dir": str(static),
            "avatar.default": str(ASTRONAUT),
            "avatar.dir": str(tmp_path / "avatars"),
            "server.shutdown_timeout_s": 3.0,
            **overrides,
        }
        return load_config(flags=values)

    return build


@pytest.fixture
def http_get() -> Callable:
    """``await http_get(port, raw_path)`` -> (status, headers dict lower-cased, body bytes). The path is
    sent byte for byte (no client-side normalisation), so traversal attempts reach the server."""

    async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return status, headers, body

    return get
