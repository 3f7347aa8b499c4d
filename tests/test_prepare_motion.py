"""prepare-motion on synthetic clips whose motion is known: a portrait rendered with a commanded head yaw and
jaw pattern, a clip without a face, a silent clip and a broken file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from avatar.audio.io import float_to_pcm16
from avatar.motion import prepare
from avatar.motion.prepare import DropReason, cut_frames, prepare_motion
from tests.media import ASTRONAUT, vowel_bursts, write_wav

FPS = 25
FRAMES = 50
SIZE = 256
ROOT = Path(__file__).resolve().parents[1]


def _commanded() -> tuple[np.ndarray, np.ndarray]:
    """Head yaw (radians) and jaw_open per frame: a 1.6 s yaw sine and 0.8 s mouth cycles."""
    t = np.arange(FRAMES) / FPS
    return 0.2 * np.sin(2 * np.pi * t / 1.6), 0.8 * np.clip(np.sin(2 * np.pi * t / 0.8), 0.0, None)


def write_clip(path: Path, frames: list[np.ndarray], audio: np.ndarray | None, fps: int = FPS) -> Path:
    """H.264 MP4 of RGB uint8 frames, with 16 kHz mono AAC ``audio`` when given."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames[0].shape[1], frames[0].shape[0]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            pcm = float_to_pcm16(audio).reshape(1, -1)
            for start in range(0, pcm.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(pcm[:, start:start + 1024], format="s16", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder with talking.mp4 (known motion, voiced bursts), noface.mp4 (flat grey, voiced),
    silent.mp4 (the talking frames with a silent track) and broken.mp4 (not a video); plus, outside it,
    mute.mp4 (talking frames, no sound track) and mute.wav (its speech)."""
    from avatar.face.motion_types import FaceMotion
    from avatar.face.portrait import prepare_portrait
    from avatar.face.renderer import PortraitRenderer

    folder = tmp_path_factory.mktemp("clips")
    extra = tmp_path_factory.mktemp("extra")
    renderer = PortraitRenderer(prepare_portrait(ASTRONAUT, size=SIZE))
    yaw, jaw = _commanded()
    frames = [renderer.render(FaceMotion(jaw_open=float(j), head_yaw=float(y)))
              for y, j in zip(yaw, jaw, strict=True)]
    speech = vowel_bursts(FRAMES / FPS, 16000, lead_silence_s=0.1)
    grey = [np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)] * FRAMES
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 10)
    return {
        "folder": folder,
        "talking": write_clip(folder / "talking.mp4", frames, speech),
        "noface": write_clip(folder / "noface.mp4", grey, speech),
        "silent": write_clip(folder / "silent.mp4", frames, np.zeros_like(speech)),
        "mute": write_clip(extra / "mute.mp4", frames, None),
        "mute_wav": write_wav(extra / "mute.wav", speech),
    }


@pytest.fixture(scope="module")
def prepared(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    return out, prepare_motion([clips["folder"]], out)


def _clip(report: dict, stem: str) -> dict:
    return next(c for c in report["clips"] if c["stem"] == stem)


def test_recovers_commanded_yaw_and_mouth(prepared: tuple[Path, dict]) -> None:
    out, report = prepared
    assert _clip(report, "talking")["status"] == "kept"
    with np.load(out / "motion" / "talking.npz") as motion:
        data = {k: motion[k] for k in motion.files}
    yaw, jaw = _commanded()
    index = np.round(data["times"] * FPS).astype(int)
    keep = data["keep"]
    assert keep.mean() > 0.9 and index.max() < FRAMES
    recovered = data["pose"][keep, 1]
    assert np.corrcoef(recovered, yaw[index[keep]])[0, 1] > 0.9
    assert np.polyfit(yaw[index[keep]], recovered, 1)[0] > 0.2  # same sign, turned by a similar angle
    assert np.corrcoef(data["mouth_opening"][keep], jaw[index[keep]])[0, 1] > 0.8
    frames = data["times"].size
    assert data["expression"].shape == (frames, 478, 3) and data["expression"].dtype == np.float32
    assert data["rest"].shape == (478, 3) and data["gaze"].shape == (frames, 2)
    assert data["eye_openness"].shape == data["mouth_width"].shape == (frames,)
    assert data["mel_power"].dtype == np.float32 and data["mel_power"].shape[1] == 40
    assert abs(data["mel_power"].shape[0] - FRAMES / FPS * 100) <= 10  # 100 Hz
    assert float(data["fps"]) == pytest.approx(FPS)
    assert "speaker_id" not in data  # no manifest


def test_drops_no_face_silence_and_broken_clips(prepared: tuple[Path, dict]) -> None:
    out, report = prepared
    assert _clip(report, "noface")["reason"] == DropReason.NO_FACE
    assert _clip(report, "noface")["dropped_frames"]["no_face"] == FRAMES
    assert _clip(report, "silent")["reason"] == DropReason.SILENCE
    broken = _clip(report, "broken")
    assert broken["reason"] == DropReason.DECODE_ERROR and "broken.mp4" in broken["message"]
    summary = report["summary"]
    assert summary["kept_clips"] == 1 and summary["dropped_clips"] == 3
    assert summary["clips_dropped"] == {"no_face": 1, "silence": 1, "decode_error": 1}
    assert sorted(p.name for p in (out / "motion").iterdir()) == ["talking.npz"]
    assert json.loads((out / "report.json").read_text())["summary"] == summary
    text = (out / "report.md").read_text()
    assert "## Per split" in text and "silence" in text and "no_face" in text


def test_captures_are_cached(prepared: tuple[Path, dict], clips: dict[str, Path], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = prepared
    shutil.copytree(out / "captures", tmp_path / "captures")
    calls = []
    real = prepare.capture_clip
    monkeypatch.setattr(prepare, "capture_clip", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = prepare_motion([clips["talking"]], tmp_path)
    assert calls == [] and _clip(report, "talking")["capture"] == "cached"
    assert _clip(report, "talking")["status"] == "kept"
    report = prepare_motion([clips["talking"]], tmp_path, force=True)
    assert len(calls) == 1 and _clip(report, "talking")["capture"] == "captured"


def test_truncated_cache_is_captured_again(prepared: tuple[Path, dict], clips: dict[str, Path],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = prepared
    shutil.copytree(out / "captures", tmp_path / "captures")
    prepare_motion([clips["talking"]], tmp_path / "short", max_seconds=1.0)  # short capture, own folder
    shutil.copy(tmp_path / "short" / "captures" / "talking.npz", tmp_path / "captures" / "talking.npz")
    calls = []
    real = prepare.capture_clip
    monkeypatch.setattr(prepare, "capture_clip", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = prepare_motion([clips["talking"]], tmp_path, max_seconds=0.8)  # the short one covers 0.8 s
    assert calls == [] and _clip(report, "talking")["frames"] == 20
    report = prepare_motion([clips["talking"]], tmp_path)  # but not the whole clip
    assert len(calls) == 1 and _clip(report, "talking")["frames"] == FRAMES


def test_manifest_labels_audio_file_and_splits(clips: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "data"
    (folder / "clips").mkdir(parents=True)
    shutil.copy(clips["mute"], folder / "clips" / "mute.mp4")
    shutil.copy(clips["mute_wav"], folder / "clips" / "mute.wav")
    shutil.copy(clips["noface"], folder / "clips" / "held_out.mp4")
    (folder / "manifest.tsv").write_text(
        "file\taudio_file\tsplit\tspeaker_id\tlanguage\tfps\n"
        "clips/mute.mp4\tclips/mute.wav\ttrain\tastro\ten\t25\n"
        "clips/held_out.mp4\t\teval-only\tother\ten\t25\n")
    report = prepare_motion([folder], tmp_path / "out")
    assert [c["stem"] for c in report["clips"]] == ["mute"]
    assert report["clips"][0]["status"] == "kept" and report["clips"][0]["speaker_id"] == "astro"
    assert any("eval-only" in note for note in report["notes"])
    assert report["summary"]["by_split"]["train"]["kept_clips"] == 1
    assert report["summary"]["by_speaker"]["astro"]["kept_minutes"] > 0.02
    with np.load(tmp_path / "out" / "motion" / "mute.npz") as motion:
        assert str(motion["speaker_id"]) == "astro" and str(motion["split"]) == "train"
        assert str(motion["language"]) == "en"
    with pytest.raises(prepare.ConfigError, match="splits in the manifest"):
        prepare_motion([folder], tmp_path / "out2", splits=("test",))


def test_cli_prepares_and_summarises(prepared: tuple[Path, dict], clips: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from avatar.__main__ import main

    out, _ = prepared
    (tmp_path / "captures").mkdir()
    shutil.copy(out / "captures" / "talking.npz", tmp_path / "captures")
    code = main(["prepare-motion", "--videos", str(clips["talking"]), "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0 and len(err) == 1 and err[0].startswith("prepare-motion: 1/1 clips kept")
    assert (tmp_path / "motion" / "talking.npz").is_file()


def test_cli_missing_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "avatar", "prepare-motion", "--videos", str(tmp_path / "missing"),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: not found: {tmp_path / 'missing'}"]
    assert not (tmp_path / "out").exists()


def test_cut_is_a_jump_in_steady_footage_not_shake() -> None:
    rng = np.random.default_rng(0)
    frames = 60
    base = rng.normal(size=(478, 3)) * 50 + 200
    steady = base + rng.normal(scale=0.5, size=(frames, 478, 3))
    steady[30:, :, 0] += 40  # the face jumps 0.4 face heights (100 px) between frames 29 and 30
    scale, valid = np.full(frames, 100.0), np.ones(frames, dtype=bool)
    near, cuts = cut_frames(steady, scale, valid)
    assert cuts == 1 and np.flatnonzero(near).tolist() == [27, 28, 29, 30, 31, 32]
    shaky = base + np.cumsum(rng.choice([-1.0, 1.0], size=(frames, 1, 1)) * 27, axis=0)  # 0.27 each frame
    assert cut_frames(shaky, scale, valid)[1] == 0
    zoom = steady[:40].copy()
    scale2 = np.where(np.arange(40) < 20, 100.0, 130.0)  # the face grows by 30 %
    assert cut_frames(zoom, scale2, np.ones(40, dtype=bool))[1] == 2  # the zoom and the jump at 30
