"""Screenshot of the page while live: headless Chromium, fake microphone playing speech, real server.

    python benchmarks/screenshot.py                      # starts run_server.py on a free port
    python benchmarks/screenshot.py --url http://127.0.0.1:8080 --out docs/screenshot.png

Writes a PNG (default ``docs/screenshot.png``) after the video has been live for ``--live-seconds``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures_media import speech_wav_48k  # noqa: E402 - the project's own speech generator

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"run_server.py exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if json.loads(response.read()).get("status") == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"no healthy server at {url} after {timeout_s:.0f} s")


def take_screenshot(url: str, wav: Path, out: Path, width: int, height: int, scheme: str,
                    live_seconds: float) -> None:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--disable-background-networking", "--disable-gpu",
            "--disable-component-update", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme,
                                device_scale_factor=1)
        page.goto(url + "/")
        page.click("#start")
        page.wait_for_function(
            "() => { const v = document.getElementById('avatar');"
            " return !v.paused && v.videoWidth > 0 && v.currentTime > 0.5; }",
            timeout=30_000,
        )
        page.wait_for_timeout(live_seconds * 1000)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        state = page.get_attribute("#state", "data-state")
        stats = {k: page.inner_text(f"#stat-{k}") for k in ("fps", "latency", "frames", "server-fps")}
        page.click("#start")
        browser.close()
    print(f"wrote {out} (state {state}, {stats})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running server (default: start run_server.py on a free port)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--audio", type=Path, help="48 kHz WAV for the fake microphone (default: generated)")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--color-scheme", choices=["dark", "light"], default="dark")
    parser.add_argument("--live-seconds", type=float, default=5.0, help="time live before the shot")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wav = options.audio or speech_wav_48k(Path(tmp) / "speech48k.wav")
        process = None
        url = options.url
        if url is None:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            process = subprocess.Popen([sys.executable, str(ROOT / "run_server.py"), "--port", str(port)],
                                       cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(url.rstrip("/"), process)
            take_screenshot(url.rstrip("/"), wav, options.out, options.width, options.height,
                            options.color_scheme, options.live_seconds)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=15)


if __name__ == "__main__":
    main()
