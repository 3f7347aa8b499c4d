"""Overlay soak: the `/overlay` page in headless Chromium for a long time; frames, stalls, memory.

    python benchmarks/overlay_soak.py [--seconds 600] [--channel stage --say-every 20] [--json OUT]

Starts ``run_server.py`` on a free port, opens ``/overlay?bg=green`` in Debian's Chromium (Playwright),
and counts the frames the page presents with ``requestVideoFrameCallback``: received fps, gaps over 200 ms
(stalls) and the longest gap, per minute and overall, plus the server's RSS. With ``--channel`` the overlay
joins that channel and a controller socket makes it speak every ``--say-every`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SENTENCES = ["Hola, bienvenidos al directo.", "Hello everyone, thanks for watching.", "Bonjour à tous."]
VOICES = ["es", "en", "fr"]

COUNTER_JS = """
() => {
  const video = document.getElementById('avatar');
  window.soak = {frames: 0, stalls: 0, maxGap: 0, last: null};
  const tick = (now) => {
    const s = window.soak;
    if (s.last !== null) {
      const gap = now - s.last;
      if (gap > 200) s.stalls += 1;
      s.maxGap = Math.max(s.maxGap, gap);
    }
    s.last = now; s.frames += 1;
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def say(url: str, channel: str, key: str, text: str, voice: str) -> str:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "say", "channel": channel, "key": key, "text": text,
                                  "voice": voice}))
        return json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type", "?")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--channel", default="", help="overlay channel; enables --say-every")
    parser.add_argument("--say-every", type=float, default=20.0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print("error: /usr/bin/chromium is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    port = free_port()
    log = open("/tmp/overlay_soak_server.log", "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen([sys.executable, str(ROOT / "run_server.py"), "--port", str(port)],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        key = secrets.token_urlsafe(18)  # the channel's secret (docs/protocol.md, Channels)
        query = "?bg=green" + (f"&channel={args.channel}&key={key}" if args.channel else "")
        minutes: list[dict] = []
        replies: list[str] = []
        with sync_playwright() as p, ThreadPoolExecutor(1) as controller:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page()
            page.goto(base + "/overlay" + query)
            page.wait_for_function("document.body.dataset.state === 'live'", timeout=30000)
            page.evaluate(COUNTER_JS)
            started = time.monotonic()
            next_say, next_minute, said = started + 2.0, started + 60.0, 0
            previous = {"frames": 0, "stalls": 0}
            while (now := time.monotonic()) < started + args.seconds:
                if args.channel and now >= next_say:
                    k = said % len(SENTENCES)
                    request = say(f"ws://127.0.0.1:{port}/ws", args.channel, key, SENTENCES[k], VOICES[k])
                    # Playwright's sync API owns this thread's event loop: talk from another thread.
                    replies.append(controller.submit(asyncio.run, request).result())
                    said, next_say = said + 1, now + args.say_every
                if now >= next_minute:
                    s = page.evaluate("window.soak")
                    minutes.append({
                        "minute": len(minutes) + 1, "fps": (s["frames"] - previous["frames"]) / 60,
                        "stalls": s["stalls"] - previous["stalls"], "rss_mb": rss_mb(server.pid),
                    })
                    previous, next_minute = s, next_minute + 60.0
                page.wait_for_timeout(500)
            s = page.evaluate("window.soak")
            elapsed = time.monotonic() - started
            browser.close()
        results = {
            "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(elapsed, 1), "frames": s["frames"],
            "fps": round(s["frames"] / elapsed, 2), "stalls_over_200ms": s["stalls"],
            "max_gap_ms": round(s["maxGap"], 1), "says": len(replies),
            "say_replies": sorted(set(replies)), "per_minute": minutes,
        }
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    print(json.dumps({k: v for k, v in results.items() if k != "per_minute"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
