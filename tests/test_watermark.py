"""Provenance mark: payload, error correction, embed/detect, real codec paths (VP8 as aiortc sends it,
H.264 MP4 through PyAV), rescale/PNG, no detections on unmarked images, and the ``detect`` CLI."""

from __future__ import annotations

import fractions
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import avatar.__main__ as cli
from avatar.provenance import Payload, Watermarker, detect, detect_file, detect_frames, detect_video, ecc
from avatar.provenance.detect import channel_statistics
from avatar.provenance.files import MediaError
from avatar.provenance.layout import CHANNELS
from avatar.provenance.payload import PAYLOAD_BITS

ASTRONAUT = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"
PAYLOAD = Payload(session_id=0xC0FFEE, minutes=12345)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def marker() -> Watermarker:
    return Watermarker()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / mse)


def drawn_scene(size: int = 512) -> np.ndarray:
    """A synthetic 'portrait': soft background gradient, a skin-toned face disc, eyes and a mouth."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.stack([60 + 120 * ys, 90 + 60 * xs, 140 + 40 * (1 - ys)], axis=2)
    image = np.ascontiguousarray(image.astype(np.uint8))
    c = size // 2
    cv2.ellipse(image, (c, c), (size // 5, size // 4), 0, 0, 360, (224, 172, 140), -1)
    for dx in (-size // 12, size // 12):
        cv2.circle(image, (c + dx, c - size // 16), size // 40, (40, 30, 30), -1)
    cv2.ellipse(image, (c, c + size // 10), (size // 14, size // 40), 0, 0, 360, (150, 60, 60), -1)
    return cv2.GaussianBlur(image, (0, 0), 1.0)


def talking(image: np.ndarray, count: int) -> list[np.ndarray]:
    """Frames where a patch in the lower middle stretches up and down like a speaking mouth."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    bump = np.exp(-(((ys - 0.6 * h) / (0.08 * h)) ** 2) - (((xs - 0.5 * w) / (0.12 * w)) ** 2))
    frames = []
    for i in range(count):
        opening = np.float32(4.0 * (1 - np.cos(2 * np.pi * i / 9)))
        frames.append(
            cv2.remap(image, xs, ys - opening * bump, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        )
    return frames


def vp8_as_aiortc_sends(frames: list[np.ndarray], bitrate: int = 500_000) -> list[np.ndarray]:
    """Encode with aiortc's own VP8 encoder (PyAV libvpx, aiortc's settings and default bitrate),
    packetize to RTP payloads, depacketize and decode with libvpx like a receiver."""
    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    encoder, decoder = Vp8Encoder(), Vp8Decoder()
    encoder.target_bitrate = bitrate
    out = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(vp8_depayload(p) for p in payloads)
        out.extend(f.to_ndarray(format="rgb24") for f in decoder.decode(JitterFrame(data, timestamp)))
    return out


def write_h264_mp4(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """PyAV libx264 at its defaults (crf 23), yuv420p, MP4."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def save_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


# --------------------------------------------------------------------------------------- payload
@pytest.mark.parametrize("session_id, minutes", [(0, 0), (0xFFFFFF, 0xFFFF), (0xC0FFEE, 12345), (1, 65535)])
def test_payload_round_trip(session_id: int, minutes: int) -> None:
    payload = Payload(session_id, minutes)
    bits = payload.to_bits()
    assert bits.shape == (PAYLOAD_BITS,) and set(np.unique(bits)) <= {0, 1}
    assert Payload.from_bits(bits) == payload


def test_payload_rejects_corruption_and_bad_fields() -> None:
    bits = PAYLOAD.to_bits()
    for position in (0, 10, 40, 63):  # marker, id, time, CRC
        corrupted = bits.copy()
        corrupted[position] ^= 1
        assert Payload.from_bits(corrupted) is None
    with pytest.raises(ValueError):
        Payload(1 << 24, 0)
    with pytest.raises(ValueError):
        Payload(0, -1)


def test_payload_timestamp_wraps_and_resolves() -> None:
    start = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
    payload = Payload.create(session_id=7, when=start)
    assert payload.datetime_near(start + timedelta(days=3)) == start
    later = start + timedelta(minutes=1 << 16)  # one wrap later: same field value
    assert Payload.create(session_id=7, when=later).minutes == payload.minutes
    assert payload.datetime_near(later + timedelta(hours=1)) == later
    ids = {Payload.create().session_id for _ in range(64)}
    assert len(ids) >= 60  # random 24-bit ids: one repeat among 64 comes once in ~8,000 runs, five never
    assert all(0 <= session_id < 1 << 24 for session_id in ids)


def test_error_correction_fixes_flipped_bits() -> None:
    rng = np.random.default_rng(3)
    message = rng.integers(0, 2, PAYLOAD_BITS).astype(np.uint8)
    coded = ecc.encode(message)
    assert coded.size == ecc.coded_length(PAYLOAD_BITS)
    soft = coded * 2.0 - 1.0 + rng.normal(0, 0.3, coded.size)
    flips = rng.choice(coded.size, size=coded.size // 12, replace=False)  # ~8% hard errors
    soft[flips] *= -1
    assert np.array_equal(ecc.decode(soft), message)


# ---------------------------------------------------------------------------------- embed/detect
def test_embed_keeps_shape_and_input_and_psnr(astronaut: np.ndarray, marker: Watermarker) -> None:
    for image in (astronaut, drawn_scene()):
        original = image.copy()
        marked = marker.embed(image, PAYLOAD)
        assert marked.shape == image.shape and marked.dtype == np.uint8
        assert np.array_equal(image, original)
        assert not np.array_equal(marked, image)
        assert psnr(image, marked) >= 40.0
        # luma only: the same change on R, G and B wherever nothing clipped
        delta = marked.astype(int) - image.astype(int)
        unclipped = (image > 10).all(axis=2) & (image < 245).all(axis=2)
        assert np.array_equal(delta[unclipped][:, 0], delta[unclipped][:, 1])


def test_round_trip_finds_payload(astronaut: np.ndarray, marker: Watermarker) -> None:
    result = detect(marker.embed(astronaut, PAYLOAD))
    assert result.found and result.payload == PAYLOAD
    assert result.confidence >= 0.99 and result.bit_accuracy >= 0.97
    assert result.sync_score > 8


def test_round_trip_other_sizes(marker: Watermarker) -> None:
    for h, w in ((256, 256), (360, 640), (720, 720)):
        image = cv2.resize(drawn_scene(), (w, h), interpolation=cv2.INTER_AREA)
        payload = Payload(h * 1000 + w, 99)
        result = detect(marker.embed(image, payload))
        assert result.found and result.payload == payload, (h, w)


def test_other_key_is_not_detected(astronaut: np.ndarray) -> None:
    marked = Watermarker(key=12345).embed(astronaut, PAYLOAD)
    assert not detect(marked).found
    assert detect(marked, key=12345).payload == PAYLOAD


def test_bad_frames_are_rejected(marker: Watermarker) -> None:
    with pytest.raises(ValueError):
        marker.embed(np.zeros((64, 64, 3), np.float32), PAYLOAD)
    with pytest.raises(ValueError):
        marker.embed(np.zeros((64, 64), np.uint8), PAYLOAD)
    with pytest.raises(ValueError):
        Watermarker(strength=0)


# --------------------------------------------------------------------------------- delivery paths
def test_survives_vp8_as_aiortc_sends_it(astronaut: np.ndarray, marker: Watermarker) -> None:
    received = vp8_as_aiortc_sends([marker.embed(f, PAYLOAD) for f in talking(astronaut, 30)])
    assert len(received) == 30
    later = received[10:]
    singles = [detect(f) for f in later]
    assert sum(d.found and d.payload == PAYLOAD for d in singles) >= 0.9 * len(later)
    assert not any(d.found and d.payload != PAYLOAD for d in singles)
    assert np.mean([d.bit_accuracy for d in singles]) >= 0.95
    vote = detect_frames(received)
    assert vote.found and vote.payload == PAYLOAD and vote.frames == 30


def test_survives_h264_mp4(tmp_path: Path, astronaut: np.ndarray, marker: Watermarker) -> None:
    frames = [marker.embed(f, PAYLOAD) for f in talking(drawn_scene(), 10) + talking(astronaut, 10)]
    path = write_h264_mp4(tmp_path / "marked.mp4", frames)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    singles = [detect(f) for f in decoded]
    assert all(d.found and d.payload == PAYLOAD for d in singles)
    assert np.mean([d.bit_accuracy for d in singles]) >= 0.95
    vote = detect_video(path)
    assert vote.found and vote.payload == PAYLOAD and vote.frames == 20


def test_survives_rescale_and_png(tmp_path: Path, astronaut: np.ndarray, marker: Watermarker) -> None:
    marked = marker.embed(astronaut, PAYLOAD)
    for interpolation in (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC):
        small = cv2.resize(marked, (256, 256), interpolation=interpolation)
        result = detect(small)
        assert result.found and result.payload == PAYLOAD, interpolation
    screenshot = detect_file(save_png(tmp_path / "shot.png", marked))
    assert screenshot.found and screenshot.payload == PAYLOAD and screenshot.bit_accuracy >= 0.97


# --------------------------------------------------------------------------------- false alarms
def unmarked_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float32)
    gradient = np.repeat(((xs + ys) / 1022 * 255)[..., None], 3, axis=2).astype(np.uint8)
    checker = np.repeat(((((xs // 16) + (ys // 16)) % 2) * 255)[..., None], 3, axis=2).astype(np.uint8)
    blurred = cv2.GaussianBlur(rng.normal(128, 50, (512, 512, 3)), (0, 0), 3.0).clip(0, 255).astype(np.uint8)
    return {
        "astronaut": cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB),
        "noise": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "flat": np.full((512, 512, 3), 128, np.uint8),
        "black": np.zeros((512, 512, 3), np.uint8),
        "gradient": gradient,
        "checker": checker,
        "blurred noise": blurred,
        "drawn": drawn_scene(),
        "small crop": drawn_scene()[100:180, 200:330].copy(),
    }


@pytest.mark.parametrize("name", list(unmarked_images()))
def test_no_detection_on_unmarked(name: str) -> None:
    result = detect(unmarked_images()[name])
    assert not result.found
    assert result.confidence < 0.5
    assert abs(result.sync_score) < 5


def test_sync_score_behaves_like_unit_noise_without_mark() -> None:
    rng = np.random.default_rng(5)
    scores = []
    for _ in range(24):
        sigma = float(rng.uniform(0.5, 6))
        image = cv2.GaussianBlur(rng.normal(128, 60, (256, 256, 3)), (0, 0), sigma).clip(0, 255)
        statistics = channel_statistics(image.astype(np.uint8))
        assert statistics.shape == (CHANNELS,)
        scores.append(detect(image.astype(np.uint8)).sync_score)
    assert abs(np.mean(scores)) < 1.0 and 0.4 < np.std(scores) < 1.8 and max(np.abs(scores)) < 4.5


# ------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    if "avatar.commands.detect" not in cli.COMMAND_MODULES:  # registered by default now
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "avatar.commands.detect"])

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["detect", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_marked_png(tmp_path: Path, astronaut: np.ndarray, marker: Watermarker, run_cli) -> None:
    code, out, _ = run_cli(str(save_png(tmp_path / "marked.png", marker.embed(astronaut, PAYLOAD))))
    assert code == 0
    assert "GENERATED" in out and "c0ffee" in out and "confidence: 1.00" in out


def test_cli_unmarked_png_and_json(tmp_path: Path, astronaut: np.ndarray, run_cli) -> None:
    path = save_png(tmp_path / "plain.png", astronaut)
    code, out, _ = run_cli(str(path))
    assert code == 0 and "no mark" in out and "GENERATED" not in out
    code, out, _ = run_cli("--json", str(path))
    assert code == 0 and '"generated": false' in out and '"payload": null' in out


def test_cli_bad_input(tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli(str(tmp_path / "missing.png"))
    assert code == 2 and err.startswith("error: file not found") and err.count("\n") == 1 and not out
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n" * 50)
    code, _, err = run_cli(str(text))
    assert code == 2 and "neither an image nor a video" in err and err.count("\n") == 1
    with pytest.raises(MediaError):
        detect_file(tmp_path)
