"""Process-level behaviour: SIGTERM shuts a live server down gracefully; server/ never needs torch."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]

# Runs the real entry point's serve loop with the box test double (no model needed).
SERVE_WITH_BOX = """
import asyncio, sys
sys.path.insert(0, {root!r})
from tests.conftest import BoxEngine
from server.config import load_config
from server.main import serve_until_signal, setup_logging
setup_logging("info")
config = load_config(flags={{"server.port": {port}, "engine.size": 128, "server.shutdown_timeout_s": 3.0}})
sys.exit(asyncio.run(serve_until_signal(config, BoxEngine(size=128))))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def spawn_server(script: str) -> tuple[subprocess.Popen, object, int]:
    """Run ``script`` (formatted with ``root`` and a free ``port``) in a subprocess and open ``/ws``.
    Returns the process, the connected socket and the port; the caller kills the process."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", script.format(root=str(ROOT), port=port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for _ in range(200):
        try:
            return process, await connect(f"ws://127.0.0.1:{port}/ws"), port
        except OSError:
            assert process.poll() is None, process.stdout.read()
            await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError("server did not come up")


@pytest.mark.slow
async def test_sigterm_closes_sessions_and_exits_zero():
    process, ws, _ = await spawn_server(SERVE_WITH_BOX)
    client = RTCPeerConnection()
    try:
        client.addTransceiver("video", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        await ws.send(json.dumps({"type": "offer", "sdp": client.localDescription.sdp}))
        assert json.loads(await ws.recv())["type"] == "answer"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        messages = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=10)))
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert any(m["type"] == "ended" and m["reason"] == "server shutting down" for m in messages)
        code = await asyncio.to_thread(process.wait, 15)
        assert code == 0
        assert time.monotonic() - started < 10
        log = process.stdout.read()
        assert "server stopped" in log and "Traceback" not in log
    finally:
        await client.close()
        if process.poll() is None:
            process.kill()
            process.wait()


def test_server_with_parametric_engine_does_not_import_torch():
    code = (
        "import sys\n"
        "import server.app, server.main\n"
        "from avatar.engines import create_engine\n"
        "from avatar.errors import ConfigError\n"
        "try:\n"
        "    create_engine('parametric', fps=25, size=512, seed=0)\n"
        "except ConfigError as exc:\n"
        "    print('unavailable:', exc); sys.exit(3)\n"
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    if result.returncode == 3:
        pytest.skip(f"parametric engine not importable: {result.stdout.strip()}")
    imported = result.stdout.strip()
    assert result.returncode == 0, f"server + parametric engine imported {imported} {result.stderr[-300:]}"
