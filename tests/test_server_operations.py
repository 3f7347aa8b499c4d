"""Operations: /metrics in Prometheus text format, token and origin checks on /ws, structured logs,
and a time-boxed SIGTERM shutdown even when an engine thread is stuck."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.app import App
from server.logs import JsonFormatter, SessionLog, TextFormatter
from server.metrics import Counter, Histogram, Registry
from tests.test_hostile_input import RealClient, ask

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = re.compile(r"^([a-z_]+)(\{le=\"([^\"]+)\"\})? (\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """``name`` or ``name{le}`` -> value; asserts every line is a comment or a valid sample."""
    values = {}
    for line in text.strip().splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        key = match.group(1) + (f"[{match.group(3)}]" if match.group(2) else "")
        values[key] = float(match.group(4))
    return values


def test_histogram_and_counter_exposition_format():
    registry = Registry()
    hist = registry.add(Histogram("x_seconds", "Some time.", [0.1, 0.5]))
    counter = registry.add(Counter("y_total", "Some things.", source=lambda: 2))
    for value in (0.05, 0.1, 0.3, 7.0):
        hist.observe(value)
    counter.inc(3)
    with pytest.raises(ValueError):
        counter.inc(-1)
    text = registry.render()
    assert "# TYPE x_seconds histogram\n" in text and "# TYPE y_total counter\n" in text
    values = parse_metrics(text)
    assert values["x_seconds_bucket[0.1]"] == 2  # le is inclusive
    assert values["x_seconds_bucket[0.5]"] == 3
    assert values["x_seconds_bucket[+Inf]"] == 4 == values["x_seconds_count"]
    assert values["x_seconds_sum"] == pytest.approx(7.45)
    assert values["y_total"] == 5
    with pytest.raises(ValueError):
        registry.add(Counter("y_total", "again"))


async def test_metrics_follow_a_live_session(make_config, box_engine_factory, http_get):
    config = make_config(**{"engine.size": 128, "provenance.watermark": False})
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    client = RealClient()
    try:
        status, headers, body = await http_get(app.port, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        idle = parse_metrics(body.decode())
        assert idle["avatar_sessions"] == 0 and idle["avatar_frames_sent_total"] == 0
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            assert (await client.start(ws))["type"] == "answer"
            assert await client.wait_frames(30)
            live = parse_metrics((await http_get(app.port, "/metrics"))[2].decode())
            assert live["avatar_sessions"] == 1 and live["avatar_connections"] == 1
            assert live["avatar_sessions_started_total"] == 1
            assert live["avatar_frames_sent_total"] >= 30
            assert live["avatar_engine_seconds_count"] > 0
            assert live["avatar_server_latency_seconds_count"] > 0
            buckets = [v for k, v in live.items() if k.startswith("avatar_engine_seconds_bucket")]
            assert buckets == sorted(buckets) and buckets[-1] == live["avatar_engine_seconds_count"]
            assert {"avatar_queue_depth", "avatar_frame_buffer", "avatar_frames_repeated_total",
                    "avatar_frames_dropped_total", "avatar_windows_dropped_total"} <= set(live)
            assert live["avatar_frames_fresh_total"] > 0
            assert live["avatar_frames_sent_total"] == (  # each sent frame is one of the three
                live["avatar_frames_fresh_total"] + live["avatar_frames_repeated_total"]
                + live["avatar_frames_still_total"])
            assert live["avatar_first_frame_seconds_count"] == 1
            assert live["avatar_first_animated_frame_seconds_count"] == 1
            assert 0 < live["avatar_first_animated_frame_seconds_sum"] < 10
        for _ in range(100):
            ended = parse_metrics((await http_get(app.port, "/metrics"))[2].decode())
            if ended["avatar_sessions"] == 0:
                break
            await asyncio.sleep(0.05)
        assert ended["avatar_sessions"] == 0 and ended["avatar_connections"] == 0
        assert ended["avatar_frames_sent_total"] >= live["avatar_frames_sent_total"]  # never goes down
    finally:
        await client.close()
        await app.stop()


async def test_token_and_origin_guard_the_socket(make_config, box_engine_factory, http_get):
    config = make_config(**{"server.auth_token": "s3cret", "server.allowed_origins": ["https://good.example"]})
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    base = f"ws://127.0.0.1:{app.port}/ws"
    try:
        for url, kwargs, status in [
            (base, {}, 401),
            (base + "?token=wrong", {}, 401),
            (base + "?token=", {}, 401),
            (base, {"additional_headers": {"Authorization": "Bearer nope"}}, 401),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, **kwargs)
            assert refused.value.response.status_code == status, (url, kwargs)
        # a refused origin is told why (a browser hides HTTP refusals from the page), then closed with 1008
        async with connect(base + "?token=s3cret", origin="https://evil.example") as ws:
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and "not in server.allowed_origins" in reply["message"]
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
        for url, kwargs in [
            (base + "?token=s3cret", {}),
            (base + "?avatar=x&token=s3cret", {"origin": "https://good.example"}),
            (base, {"additional_headers": {"Authorization": "Bearer s3cret"}}),
        ]:
            async with connect(url, **kwargs) as ws:
                assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
        assert (await http_get(app.port, "/health"))[0] == 200  # health stays open for probes
        assert (await http_get(app.port, "/metrics"))[0] == 401
        status, _, body = await http_get(app.port, "/metrics?token=s3cret")
        assert status == 200 and parse_metrics(body.decode())["avatar_connections_refused_total"] == 5
    finally:
        await app.stop()


def test_logs_are_one_line_with_session_fields():
    record_text, record_json = io.StringIO(), io.StringIO()
    logger = logging.getLogger("test.ops.logs")
    logger.propagate = False
    for stream, formatter in ((record_text, TextFormatter()), (record_json, JsonFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        session_log = SessionLog(logger, "ab12cd34")
        session_log.info("started avatar=%s", "astronaut")
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            session_log.exception("engine failed")
    finally:
        logger.handlers.clear()
    text_lines = record_text.getvalue().splitlines()
    assert len(text_lines) == 2 and "session=ab12cd34 started avatar=astronaut" in text_lines[0]
    assert "session=ab12cd34 engine failed" in text_lines[1] and "RuntimeError" in text_lines[1]
    entries = [json.loads(line) for line in record_json.getvalue().splitlines()]
    assert len(entries) == 2
    assert entries[0]["session"] == "ab12cd34" and entries[0]["level"] == "info"
    assert entries[0]["msg"] == "session=ab12cd34 started avatar=astronaut"
    assert "RuntimeError" in entries[1]["exc"]


STUCK_SERVER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from tests.conftest import BoxEngine
from server.config import load_config
from server.main import serve_until_signal
from server.logs import setup_logging
setup_logging("info", "json")
config = load_config(flags={{"server.port": {port}, "engine.size": 128, "server.shutdown_timeout_s": 2.0}})
sys.exit(asyncio.run(serve_until_signal(config, BoxEngine(size=128, delay_s=30.0))))
"""


@pytest.mark.slow
async def test_sigterm_shutdown_is_time_boxed_with_a_stuck_engine():
    from tests.test_server_shutdown import spawn_server

    process, ws, port = await spawn_server(STUCK_SERVER)
    client = RealClient()
    try:
        assert (await client.start(ws))["type"] == "answer"
        assert await client.wait_frames(25)  # still portraits: the engine is stuck in its first window
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), timeout=10)
        with pytest.raises((OSError, InvalidStatus)):  # no longer accepting
            await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=3)
        code = await asyncio.to_thread(process.wait, 15)
        elapsed = time.monotonic() - started
        assert code == 0 and elapsed < 2.0 + 3.0, f"exit {code} after {elapsed:.1f} s"
        lines = process.stdout.read().strip().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        assert any(e["msg"] == "server stopped" for e in entries)
        assert any(e.get("session") and "abandoned" in e["msg"] for e in entries)
        assert "Traceback" not in "\n".join(lines)
    finally:
        await client.close()
        if process.poll() is None:
            process.kill()
            process.wait()
