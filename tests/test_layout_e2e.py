"""The pages in headless Chromium at 1920x1080, 1280x800 and a 390x844 phone: no overflow, the face large
and visible, every control reachable and at least 44 px, labelled for screen readers; the kiosk's
activity states, attract mode, voice-from-text and the portrait upload with its preview.

Screenshots go to the test's temporary folder; with ``SCREENSHOTS_DIR=docs/screenshots`` they are also
written there, shrunk to small palette PNGs (that is how the docs' screenshots are made)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from PIL import Image

from tests.media import ASTRONAUT
from tests.test_browser_e2e import (
    CHROMIUM,
    VIDEO_PLAYING_JS,
    ServerProcess,
    browser_speaking,
    sync_api,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed"),
]

SIZES = [(1920, 1080), (1280, 800), (390, 844)]
MIN_TARGET_PX = 44
KIOSK_FACE_SHARE = 0.6
"""The kiosk's video is at least this share of the viewport's smaller side."""

LAYOUT_JS = """
() => {
  const root = document.documentElement;
  const rect = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const name = (el) =>
    (el.getAttribute("aria-label") || el.labels?.[0]?.textContent || el.textContent || "").trim();
  const video = document.getElementById("avatar");
  return {
    viewport: [innerWidth, innerHeight],
    scroll: [root.scrollWidth, root.scrollHeight],
    video: rect(video),
    videoShown: shown(video) && getComputedStyle(video).opacity !== "0",
    controls: [...document.querySelectorAll("button, select, textarea, input:not([type=file])")]
      .filter(shown).map((el) => ({ id: el.id, rect: rect(el), name: name(el) })),
  };
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("layout-server") / "server.log",
                            ("--set", "avatar.allow_upload=true"))
    process.wait_healthy()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with browser_speaking(tmp_path_factory.mktemp("layout-audio")) as launched:
        yield launched


def open_page(browser, server: ServerProcess, path: str, size: tuple[int, int]):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, color_scheme="dark")
    page = context.new_page()
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    page.goto(server.url + path)
    return context, page


def wait_live(page, server: ServerProcess) -> None:
    try:
        page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=30_000)
        page.wait_for_function(VIDEO_PLAYING_JS, timeout=30_000)
    except sync_api.TimeoutError:
        state = page.evaluate("document.body.dataset.state")
        pytest.fail(f"never live (state {state!r}):\n{server.log_tail()}")


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    png = page.screenshot()
    (tmp_path / f"{name}.png").write_bytes(png)
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        image = Image.open(io.BytesIO(png)).convert("RGB")
        image.thumbnail((960, 960))
        image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        Path(folder).mkdir(parents=True, exist_ok=True)
        image.save(Path(folder) / f"{name}.png", optimize=True)
    return tmp_path / f"{name}.png"


def assert_within(rect, viewport, what: str) -> None:
    left, top, right, bottom = rect
    assert left >= -0.5 and top >= -0.5 and right <= viewport[0] + 0.5 and bottom <= viewport[1] + 0.5, (
        f"{what} {rect} is outside the {viewport[0]}x{viewport[1]} viewport")


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_kiosk_fills_the_screen_with_the_face_and_reachable_controls(browser, server, size, tmp_path):
    context, page = open_page(browser, server, "/kiosk", size)
    try:
        wait_live(page, server)
        page.wait_for_selector("#upload:not([hidden])")
        layout = page.evaluate(LAYOUT_JS)
        viewport = layout["viewport"]
        assert layout["scroll"] == viewport, f"the kiosk overflows: {layout['scroll']} in {viewport}"
        left, top, right, bottom = layout["video"]
        assert layout["videoShown"]
        assert_within(layout["video"], viewport, "the video")
        side = min(right - left, bottom - top)
        assert side >= KIOSK_FACE_SHARE * min(viewport), f"the face is {side:.0f} px in {viewport}"
        ids = {control["id"] for control in layout["controls"]}
        assert {"text", "voice-select", "speak", "mic", "interrupt", "choose"} <= ids, ids
        for control in layout["controls"]:
            assert_within(control["rect"], viewport, f"#{control['id']}")
            if control["id"] in ("speak", "mic", "interrupt", "choose", "voice-select"):
                width = control["rect"][2] - control["rect"][0]
                height = control["rect"][3] - control["rect"][1]
                assert min(width, height) >= MIN_TARGET_PX, f"#{control['id']} is {width:.0f}x{height:.0f}"
            assert control["name"], f"#{control['id']} has no accessible name"
        assert page.get_attribute("#state", "role") == "status"
        assert page.get_attribute("#state", "aria-live") == "polite"
        assert page.inner_text("#state").lower() == "ready"
        save_screenshot(page, tmp_path, f"kiosk_{size[0]}x{size[1]}")
        assert page.script_errors == []
    finally:
        context.close()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_index_keeps_its_stats_without_sideways_overflow(browser, server, size, tmp_path):
    context, page = open_page(browser, server, "/", size)
    try:
        page.click("#start")
        wait_live(page, server)
        page.wait_for_timeout(1500)  # a stats event or two
        layout = page.evaluate(LAYOUT_JS)
        viewport = layout["viewport"]
        assert layout["scroll"][0] <= viewport[0], f"the page overflows sideways: {layout['scroll']}"
        if size[0] >= 1000:  # wide screens: video, controls and stats on one screen
            assert layout["scroll"][1] <= viewport[1], f"the page scrolls: {layout['scroll']} in {viewport}"
        assert_within(layout["video"], viewport, "the video")
        start = next(c for c in layout["controls"] if c["id"] == "start")
        assert_within(start["rect"], viewport, "Start")
        assert page.inner_text("#stat-server-fps") != "–"
        save_screenshot(page, tmp_path, f"index_{size[0]}x{size[1]}")
        assert page.script_errors == []
    finally:
        context.close()


def test_kiosk_states_attract_mode_and_voice_from_text(browser, server, tmp_path):
    context, page = open_page(browser, server, "/kiosk?attract=1", (1280, 800))
    try:
        wait_live(page, server)
        page.wait_for_selector("#attract:not([hidden])", timeout=5_000)
        assert page.evaluate("document.body.dataset.attract") == "true"
        save_screenshot(page, tmp_path, "kiosk_attract_1280x800")
        page.focus("#text")
        page.keyboard.type("Hola, buenos días. Me llamo Ana y me encanta conversar contigo.")
        assert page.is_hidden("#attract")
        page.wait_for_function("() => document.getElementById('detected').textContent.includes('Español')",
                               timeout=5_000)
        page.click("#speak")
        page.wait_for_function("() => document.body.dataset.activity === 'speaking'"
                               " && document.getElementById('state').textContent === 'Speaking'"
                               " && !document.getElementById('speaking').hidden", timeout=20_000)
        page.select_option("#voice-select", "de")
        assert "Deutsch (your choice)" in page.inner_text("#detected")
        page.click("#interrupt")
        page.wait_for_function("() => document.body.dataset.activity === 'ready'", timeout=10_000)
        assert page.script_errors == []
    finally:
        context.close()


def test_kiosk_upload_shows_the_framing_then_streams_it(browser, server, tmp_path):
    portrait = tmp_path / "me.jpg"
    rgb = cv2.resize(cv2.imread(str(ASTRONAUT)), (900, 900), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(portrait), cv2.flip(rgb, 1))  # mirrored: another picture than the default avatar
    (tmp_path / "fake.jpg").write_bytes(b"MZ" + bytes(2000))
    context, page = open_page(browser, server, "/kiosk", (1280, 800))
    try:
        wait_live(page, server)
        page.set_input_files("#file", str(tmp_path / "fake.jpg"))
        page.wait_for_function("() => document.getElementById('message').dataset.kind === 'error'")
        assert "a program" in page.inner_text("#message")
        wait_live(page, server)  # back to the default portrait
        page.set_input_files("#file", str(portrait))
        page.wait_for_selector("#preview-actions:not([hidden])", timeout=30_000)
        assert page.is_visible("#preview")
        save_screenshot(page, tmp_path, "kiosk_preview_1280x800")
        page.click("#use-portrait")
        page.wait_for_function("() => window.portraitTimings.playing > 0", timeout=30_000)
        wait_live(page, server)
        assert page.is_hidden("#preview")
        assert page.script_errors == []
    finally:
        context.close()


def test_overlay_screenshot(browser, server, tmp_path):
    context, page = open_page(browser, server, "/overlay?bg=green", (1280, 800))
    try:
        wait_live(page, server)
        save_screenshot(page, tmp_path, "overlay_1280x800")
    finally:
        context.close()


def test_index_upload_adds_your_portrait_to_the_picker(browser, server, tmp_path):
    portrait = tmp_path / "me.png"
    image = cv2.resize(cv2.imread(str(ASTRONAUT)), (700, 700), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(portrait), image)
    context, page = open_page(browser, server, "/", (1280, 800))
    try:
        page.wait_for_selector("#upload:not([hidden])")
        page.set_input_files("#file", str(portrait))
        page.wait_for_selector("#preview:not([hidden])", timeout=30_000)
        chosen = page.evaluate("document.getElementById('avatar-select').value")
        assert chosen.startswith("upload-")
        assert page.inner_text("#avatar-select option[data-upload]") == "Your portrait"
        page.click("#start")
        wait_live(page, server)
        assert page.is_hidden("#preview")
        assert page.script_errors == []
    finally:
        context.close()
