"""TURN with coturn: ``server.ice_servers`` reaches the server's peer connections and the pages, and a
client that may only use relayed candidates gets its media through the TURN server.

The relay test starts Debian's ``turnserver`` (coturn) on loopback with one static user, runs the
in-process server with that TURN server in ``server.ice_servers`` and an aiortc client whose ICE
transport policy is ``relay`` (it gathers no host candidates). It passes when frames arrive, the
client's offer carried relay candidates only, and turnserver's own accounting shows an allocation
carried the media (tens of kilobytes for 40 small frames; ICE and TURN upkeep alone are under 2 KB).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect

from tests.conftest import ROOT
from tests.test_server_speak import _start_app

TURNSERVER = shutil.which("turnserver")
CHROMIUM = Path("/usr/bin/chromium")
needs_coturn = pytest.mark.skipif(TURNSERVER is None,
                                  reason="turnserver is not installed (apt-get install coturn)")
USER, PASSWORD, REALM = "portrait", "relay-only-test-secret", "talking-portrait"


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def turn(tmp_path: Path):
    """A coturn on 127.0.0.1 with long-term credentials for one user; yields (url, log path)."""
    port = _free_port()
    log = tmp_path / "turn.log"
    process = subprocess.Popen(
        [TURNSERVER, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
         "--min-port=49152", "--max-port=65535", "-a", f"--user={USER}:{PASSWORD}", f"--realm={REALM}",
         "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", f"--log-file={log}", "--simple-log",
         "--no-stdout-log", "-v", f"--pidfile={tmp_path / 'turn.pid'}", f"--db={tmp_path / 'turn.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "UDP listener opened" not in _read(log):
        if process.poll() is not None:
            pytest.fail(f"turnserver exited with code {process.returncode}: {_read(log)[-500:]}")
        time.sleep(0.05)
    yield f"turn:127.0.0.1:{port}", log
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


async def _relay_only_session(app, turn_url: str) -> tuple[int, str, RTCPeerConnection]:
    """An aiortc client restricted to relayed candidates: (video frames received in ~2 s, its offer SDP)."""
    ice = RTCIceServer(urls=turn_url, username=USER, credential=PASSWORD)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[ice], iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    frames = [0]

    async def count(track) -> None:
        try:
            while True:
                await track.recv()
                frames[0] += track.kind == "video"
        except MediaStreamError:
            return

    tasks: list[asyncio.Task] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(count(track))))
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
        await ws.send(json.dumps({"type": "offer", "sdp": offer, "mode": "speak"}))
        while (reply := json.loads(await asyncio.wait_for(ws.recv(), 20)))["type"] not in ("answer", "error"):
            pass
        assert reply["type"] == "answer", reply
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        deadline = time.monotonic() + 15
        while frames[0] < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    await pc.close()
    for task in tasks:
        task.cancel()
    return frames[0], offer, pc


@needs_coturn
async def test_media_reaches_a_relay_only_client_through_coturn(turn, make_config, box_engine_factory):
    turn_url, log = turn
    ice = [{"urls": turn_url, "username": USER, "credential": PASSWORD}]
    app = await _start_app(make_config, box_engine_factory, **{"server.ice_servers": ice})
    try:
        frames, offer, _ = await _relay_only_session(app, turn_url)
    finally:
        await app.stop()
    candidates = re.findall(r"^a=candidate:.* typ (\w+)", offer, re.MULTILINE)
    assert candidates and set(candidates) == {"relay"}, f"the client offered {candidates}"
    assert frames >= 40, f"only {frames} video frames came through the relay"
    # coturn's accounting of each allocation, logged when it closes: bytes received and sent
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = _read(log)
        if text.count(": usage: ") >= text.count(": new, realm=") > 0:
            break
        await asyncio.sleep(0.1)
    usage = [(int(rb), int(sb)) for rb, sb in re.findall(
        r": usage: realm=<talking-portrait>, username=<portrait>, rp=\d+, rb=(\d+), sp=\d+, sb=(\d+)", text)]
    assert usage, "turnserver logged no allocation for the user"
    # ICE checks and TURN refreshes alone are under 2 KB per allocation; 40 video frames are far more
    assert max(rb + sb for rb, sb in usage) > 20_000, f"too little went through the relay: {usage}"


@needs_coturn
async def test_a_relay_only_client_with_a_wrong_password_has_no_candidate(turn, make_config,
                                                                         box_engine_factory):
    """The control: the relay-only client gathers nothing else (no host candidate to fall back on)."""
    turn_url, _ = turn
    app = await _start_app(make_config, box_engine_factory)
    pc = RTCPeerConnection(RTCConfiguration(
        iceServers=[RTCIceServer(urls=turn_url, username=USER, credential="wrong")],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert "a=candidate" not in pc.localDescription.sdp
    finally:
        await pc.close()
        await app.stop()


BROWSER_RELAY_JS = """
async () => {
  const { AvatarSession, fetchIceServers } = await import("/signalling.js");
  const fetched = await fetchIceServers();
  const session = new AvatarSession({ mode: "speak", iceTransportPolicy: "relay", handlers: {} });
  await session.start();
  const pc = session.pc;
  const deadline = Date.now() + 15000;
  let decoded = 0, pair = null, local = null;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded || 0;
      if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (pair) local = stats.get(pair.localCandidateId);
    if (decoded >= 25 && local) break;
  }
  const offered = pc.localDescription.sdp.split("\\r\\n").filter((l) => l.startsWith("a=candidate"));
  session.stop();
  return { fetched, decoded, localType: local?.candidateType ?? null,
           offeredTypes: offered.map((l) => l.split(" typ ")[1].split(" ")[0]) };
}
"""


@pytest.mark.browser
@needs_coturn
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
async def test_the_page_gets_the_turn_server_and_chromium_relays_through_it(turn, make_config,
                                                                             box_engine_factory):
    from playwright.async_api import async_playwright

    turn_url, _ = turn
    ice = [{"urls": turn_url, "username": USER, "credential": PASSWORD}]
    app = await _start_app(make_config, box_engine_factory,
                           **{"server.ice_servers": ice, "server.static_dir": str(ROOT / "static"),
                              "server.max_sessions": 2})
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{app.port}/")  # a page that does not connect by itself
            result = await page.evaluate(BROWSER_RELAY_JS)
            await browser.close()
    finally:
        await app.stop()
    assert result["fetched"] == ice  # GET /ice-servers handed the page server.ice_servers
    assert set(result["offeredTypes"]) == {"relay"}, result
    assert result["localType"] == "relay" and result["decoded"] >= 25, result


async def test_ice_servers_reach_the_pages_behind_the_token(make_config, box_engine_factory, http_get):
    ice = [{"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]
    app = await _start_app(make_config, box_engine_factory,
                           **{"server.ice_servers": ice, "server.auth_token": "t0ken-for-the-test"})
    try:
        status, headers, body = await http_get(app.port, "/ice-servers?token=t0ken-for-the-test")
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"iceServers": ice}
        status, _, _ = await http_get(app.port, "/ice-servers")
        assert status == 401
    finally:
        await app.stop()
