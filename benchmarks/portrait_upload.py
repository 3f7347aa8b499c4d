"""Time from dropping a 12-megapixel photo to the first animated frame of it.

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/portrait_upload.py \\
        --portrait /work/shared/media/portraits/photo_woman.png [--runs 3] [--client browser|python]

Makes 4000x3000 JPEGs from ``--portrait`` (centre-cropped to 4:3, upscaled; each run's crop is shifted
by a few pixels so no run hits the engine's cache of prepared portraits) in a temporary folder and starts
``run_server.py --set avatar.allow_upload=true`` on a free port; the command's CPU affinity is inherited
by the server and Chromium.

``browser`` (default): headless Chromium at 1280x800 on /kiosk, already live with the default avatar;
a real ``drop`` event carrying the File on the face; "Animate this portrait" pressed as soon as the
preview shows; then the first video frame of the new session that differs from that session's first
frame (the still prepared portrait): the first animated frame.
``python``: the same path without a browser: upload over /ws, offer (aiortc) with the returned id, and
the first received frame that differs from the first one.
Prints each run's phases and the server's decode / faces / prepare milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.screenshot import CHROMIUM, free_port, wait_healthy  # noqa: E402

ANIMATED_DIFF = 0.5
"""Mean absolute difference (grey levels, 96x96 thumbnail) from the first frame that counts as motion."""

DROP_AND_TIME_JS = """
async ({ b64, name, threshold }) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const drop = new DataTransfer();
  drop.items.add(new File([bytes], name, { type: "image/jpeg" }));
  const video = document.getElementById("avatar");
  const oldStream = video.srcObject;
  const context = new OffscreenCanvas(96, 96).getContext("2d", { willReadFrequently: true });
  const grab = () => {
    context.drawImage(video, 0, 0, 96, 96);
    return context.getImageData(0, 0, 96, 96).data;
  };
  const steps = (window.uploadSteps = []);
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (x) {
    steps.push([typeof x === "string" ? x.slice(9, 24) : `${x.byteLength} bytes`, performance.now()]);
    return send.call(this, x);
  };
  const t0 = performance.now();
  const stage = document.getElementById("stage");
  for (const type of ["dragenter", "drop"]) {
    stage.dispatchEvent(new DragEvent(type, { dataTransfer: drop, bubbles: true, cancelable: true }));
  }
  const actions = document.getElementById("preview-actions");
  const message = document.getElementById("message");
  const deadline = t0 + 60000;
  while (actions.hidden) {
    if (message.dataset.kind === "error" && !message.hidden) return { error: message.textContent };
    if (performance.now() > deadline) return { error: "no preview within 60 s" };
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const tPreview = performance.now();
  document.getElementById("use-portrait").click();
  return await new Promise((resolve) => {
    let first = null;
    let tFirst = null;
    const onFrame = () => {
      if (performance.now() > deadline) return resolve({ error: "no animated frame within 60 s" });
      if (video.srcObject && video.srcObject !== oldStream && video.readyState >= 2) {
        const pixels = grab();
        if (first === null) {
          first = pixels;
          tFirst = performance.now();
        } else {
          let diff = 0;
          for (let i = 0; i < pixels.length; i += 4) diff += Math.abs(pixels[i + 1] - first[i + 1]);
          if (diff / (pixels.length / 4) > threshold) {
            const t = window.portraitTimings;
            return resolve({
              preview: tPreview - t0, firstFrame: tFirst - t0, animated: performance.now() - t0,
              answered: t.answered - t.file, server: t.server,
              steps: steps.map(([what, at]) => [what, Math.round(at - t0)]),
            });
          }
        }
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}
"""


def twelve_megapixels(portrait: Path, out: Path, shift: int = 0, grain: float = 0.0) -> Path:
    """A 4000x3000 JPEG (quality 92) of ``portrait``; ``shift`` moves the crop by that many pixels;
    ``grain`` adds Gaussian sensor-like noise of that many grey levels (camera photos are 3-6 MB, an
    upscaled smooth portrait far less)."""
    image = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read {portrait}")
    image = image[shift:, shift:]
    h, w = image.shape[:2]
    if w * 3 > h * 4:  # wider than 4:3: cut the sides
        cut = (w - h * 4 // 3) // 2
        image = image[:, cut:w - cut]
    else:  # taller: keep more of the top, where the face is
        cut = (h - w * 3 // 4) // 3
        image = image[cut:cut + w * 3 // 4]
    big = cv2.resize(image, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    if grain > 0:
        noise = np.random.default_rng(shift).normal(0.0, grain, big.shape).astype(np.float32)
        big = np.clip(big.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    cv2.imwrite(str(out), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


def run_browser(url: str, photos: list[bytes]) -> list[dict]:
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
        for run, photo in enumerate(photos):
            page = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme="dark")
            page.goto(url + "/kiosk")
            page.wait_for_function("() => document.body.dataset.state === 'live'", timeout=60_000)
            page.wait_for_timeout(1000)
            result = page.evaluate(DROP_AND_TIME_JS, {"b64": base64.b64encode(photo).decode(),
                                                      "name": "photo_12mp.jpg", "threshold": ANIMATED_DIFF})
            if "error" in result:
                raise SystemExit(f"run {run}: {result['error']}")
            results.append(result)
            print(f"run {run}: preview {result['preview'] / 1000:.2f} s, first frame "
                  f"{result['firstFrame'] / 1000:.2f} s, first animated frame "
                  f"{result['animated'] / 1000:.2f} s (answer {result['answered'] / 1000:.2f} s; "
                  f"server ms {result['server']})")
            print("  socket sends (ms after the drop):", result["steps"])
            page.close()
        browser.close()
    return results


async def one_python_run(port: int, photo: bytes) -> dict:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws"
    t0 = time.perf_counter()
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "upload", "name": "photo_12mp.jpg", "bytes": len(photo)}))
        chunk = json.loads(await ws.recv())["max_chunk_bytes"]
        for start in range(0, len(photo), chunk):
            await ws.send(photo[start:start + chunk])
            reply = json.loads(await ws.recv())
        if reply["type"] != "portrait":
            raise SystemExit(f"upload refused: {reply}")
    t_preview = time.perf_counter()
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    seen: dict[str, float] = {}
    done = asyncio.get_running_loop().create_future()

    async def read(track) -> None:
        first = None
        while not done.done():
            frame = await track.recv()
            green = frame.to_ndarray(format="rgb24")[:, :, 1]
            small = cv2.resize(green, (96, 96), interpolation=cv2.INTER_AREA)
            if first is None:
                first, seen["first"] = small.astype(np.float32), time.perf_counter()
            elif np.abs(small - first).mean() > ANIMATED_DIFF:
                seen["animated"] = time.perf_counter()
                done.set_result(None)

    tasks = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(read(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with connect(url) as ws:
        offer = {"type": "offer", "sdp": pc.localDescription.sdp, "avatar": reply["avatar"]}
        await ws.send(json.dumps(offer))
        answer = json.loads(await ws.recv())
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await asyncio.wait_for(done, 60)
    await pc.close()
    for task in tasks:
        task.cancel()
    return {"preview": 1000 * (t_preview - t0), "firstFrame": 1000 * (seen["first"] - t0),
            "animated": 1000 * (seen["animated"] - t0), "server": reply["ms"]}


def run_python(port: int, photos: list[bytes]) -> list[dict]:
    results = []
    for run, photo in enumerate(photos):
        result = asyncio.run(one_python_run(port, photo))
        results.append(result)
        print(f"run {run}: preview {result['preview'] / 1000:.2f} s, first frame "
              f"{result['firstFrame'] / 1000:.2f} s, first animated frame {result['animated'] / 1000:.2f} s "
              f"(server ms {result['server']})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--portrait", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--client", choices=["browser", "python"], default="browser")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--grain", type=float, default=0.0, help="noise in grey levels (default none)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = [twelve_megapixels(options.portrait, Path(tmp) / f"photo_{run}.jpg", 2 * run,
                                    options.grain).read_bytes() for run in range(options.runs)]
        print(f"photos: 4000x3000 JPEG, {len(photos[0]) / 1e6:.2f} MB, from {options.portrait.name}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(options.server_log or Path(tmp) / "server.log", "wb") as log:
            server = subprocess.Popen([sys.executable, str(ROOT / "run_server.py"), "--port", str(port),
                                       "--set", "avatar.allow_upload=true"], cwd=ROOT, stdout=log, stderr=log)
            try:
                wait_healthy(url, server)
                if options.client == "browser":
                    results = run_browser(url, photos)
                else:
                    results = run_python(port, photos)
            finally:
                server.terminate()
                server.wait(timeout=15)
    for key in ("preview", "firstFrame", "animated"):
        values = [r[key] / 1000 for r in results]
        print(f"{key}: median {statistics.median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)")


if __name__ == "__main__":
    main()
