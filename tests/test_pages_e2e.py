"""End-to-end in headless Chromium: the kiosk page speaks typed Spanish text, the overlay page connects
by itself with no controls. Uses the real server (``run_server.py``, parametric engine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures_media import mouth_box
from tests.test_browser_e2e import (
    CHROMIUM,
    SAMPLE_FRAMES_JS,
    SAMPLE_INTERVAL_MS,
    SNAPSHOT_JS,
    VIDEO_PLAYING_JS,
    ServerProcess,
    _decode_png,
    _far_corner_box,
    _motion,
    _start_server,
    _wait_sessions,
    browser_speaking,
    sync_api,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]

SPANISH = "Hola, buenos días. Me llamo Ana, soy un retrato que habla y me encanta conversar contigo."


@pytest.fixture(scope="module")
def pages_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = _start_server(tmp_path_factory.mktemp("pages-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pages_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with browser_speaking(tmp_path_factory.mktemp("pages-audio")) as browser:
        yield browser


@pytest.fixture
def page(pages_browser) -> Iterator[object]:
    context = pages_browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.script_errors = errors
    yield page
    context.close()


def _wait_playing(page, server: ServerProcess) -> None:
    try:
        page.wait_for_function(VIDEO_PLAYING_JS, timeout=30_000)
    except sync_api.TimeoutError:
        pytest.fail(f"video never played (state {page.evaluate('document.body.dataset.state')!r}):\n"
                    f"{server.log_tail()}")


def _sample(page, boxes: list, seconds: float) -> list[dict]:
    return page.evaluate(SAMPLE_FRAMES_JS, {"boxes": [list(b) for b in boxes],
                                            "samples": int(seconds * 1000 / SAMPLE_INTERVAL_MS),
                                            "intervalMs": SAMPLE_INTERVAL_MS})


def test_kiosk_speaks_typed_spanish_and_stops_on_interrupt(page, pages_server: ServerProcess) -> None:
    page.goto(pages_server.url + "/kiosk")
    _wait_playing(page, pages_server)
    page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=10_000)
    frame = _decode_png(page.evaluate(SNAPSHOT_JS))
    mouth = mouth_box(frame)
    assert mouth is not None, "MediaPipe finds no face in the kiosk video"
    boxes = [mouth, _far_corner_box(mouth, frame.shape[0])]
    idle = _motion(_sample(page, boxes, 2.0), 0)

    page.fill("#text", SPANISH)
    page.select_option("#voice-select", "es")
    page.click("#speak")
    page.wait_for_selector("#speaking:not([hidden])", timeout=20_000)
    speaking = _sample(page, boxes, 3.0)
    mouth_motion, corner_motion = _motion(speaking, 0), _motion(speaking, 1)
    assert mouth_motion > 1.5, f"the mouth barely moves while speaking ({mouth_motion:.2f} grey levels)"
    assert mouth_motion > 2 * idle, f"speaking mouth change {mouth_motion:.2f} vs idle {idle:.2f}"
    assert mouth_motion > 4 * corner_motion

    page.click("#interrupt")
    page.wait_for_selector("#speaking", state="hidden", timeout=5_000)
    assert page.is_hidden("#message") or "error" != page.get_attribute("#message", "data-kind")

    page.fill("#text", "")
    page.click("#speak")
    assert "Type something" in page.inner_text("#message")
    assert page.script_errors == []


def test_overlay_connects_and_plays_without_controls(page, pages_server: ServerProcess) -> None:
    page.goto(pages_server.url + "/overlay?bg=green")
    _wait_playing(page, pages_server)
    page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=10_000)
    controls = page.evaluate("document.querySelectorAll('button, input, select, textarea, a').length")
    assert controls == 0
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(0, 255, 0)"
    start = page.evaluate("document.getElementById('avatar').currentTime")
    page.wait_for_timeout(1500)
    assert page.evaluate("document.getElementById('avatar').currentTime") > start + 0.8
    assert _wait_sessions(pages_server, 1) == 1
    page.goto(pages_server.url + "/overlay?bg=%23123456&avatar=no_such_avatar!")
    page.wait_for_timeout(500)
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(18, 52, 86)"
    _wait_playing(page, pages_server)  # an invalid avatar id falls back to the default avatar
    page.goto(pages_server.url + "/overlay?bg=green&size=256")  # a cheaper picture, asked for in the URL
    page.wait_for_function("() => { const v = document.getElementById('avatar');"
                           " return v && v.videoWidth === 256 && v.currentTime > 0.3; }", timeout=30_000)
    assert page.script_errors == []


def test_main_page_offers_smaller_pictures(page, pages_server: ServerProcess) -> None:
    page.goto(pages_server.url + "/")
    page.wait_for_selector("#size-row:not([hidden])", timeout=10_000)
    options = page.eval_on_selector_all("#size-select option", "els => els.map((e) => e.value)")
    assert options == ["512", "384", "256"]
    assert page.input_value("#size-select") == "512"  # the server's engine.size unless asked otherwise
    page.select_option("#size-select", "256")
    page.click("#start")
    page.wait_for_function("() => { const v = document.getElementById('avatar');"
                           " return v && v.videoWidth === 256 && v.currentTime > 0.3; }", timeout=30_000)
    assert page.is_disabled("#size-select")  # not while live
    page.click("#start")
    page.wait_for_function("() => document.body.dataset.state === 'idle'", timeout=10_000)
    assert page.script_errors == []
