"""Offline render: ``python -m avatar render`` writes H.264 + AAC whose duration matches the audio."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from avatar.audio.io import load_audio
from avatar.errors import AudioError
from avatar.provenance import detect_file
from tests.media import ASTRONAUT, vowel_bursts, write_wav

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "avatar", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_load_audio_resamples_stereo_44k(tmp_path):
    audio = vowel_bursts(1.5, rate=44100)
    path = write_wav(tmp_path / "stereo.wav", audio, rate=44100, channels=2)
    out = load_audio(path)
    assert out.dtype == np.float32
    assert abs(len(out) - 1.5 * 16000) <= 32
    assert 0.3 < np.abs(out).max() <= 1.0


@pytest.mark.parametrize("content", [b"", b"this is not audio at all" * 40])
def test_load_audio_rejects_corrupt_files(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError):
        load_audio(path)


def test_render_writes_mp4_matching_audio_duration(tmp_path):
    audio = vowel_bursts(2.3, rate=22050)
    wav = write_wav(tmp_path / "speech.wav", audio, rate=22050, channels=2)
    out = tmp_path / "out.mp4"
    result = run_cli("render", "--portrait", str(ASTRONAUT), "--audio", str(wav), "--out", str(out),
                     "--size", "256", "--quiet")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        audio_stream = container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert audio_stream.codec_context.name == "aac"
        assert (video.width, video.height) == (256, 256)
        frames = sum(1 for _ in container.decode(video=0))
    assert abs(frames / 25.0 - 2.3) <= 0.1
    assert detect_file(out).found, "rendered files carry the provenance watermark"


@pytest.mark.parametrize(
    ("portrait", "audio", "message"),
    [
        ("missing.png", "speech.wav", "portrait"),
        (str(ASTRONAUT), "missing.wav", "audio file not found"),
        (str(ASTRONAUT), "garbage.wav", "cannot decode audio"),
        (str(ASTRONAUT), "empty.wav", "audio"),
        ("garbage.wav", "speech.wav", "not a readable image"),
    ],
)
def test_render_bad_input_gives_one_line_error(tmp_path, portrait, audio, message):
    write_wav(tmp_path / "speech.wav", vowel_bursts(1.0))
    (tmp_path / "garbage.wav").write_bytes(b"\x00\x01garbage" * 100)
    (tmp_path / "empty.wav").write_bytes(b"")
    portrait_path = portrait if Path(portrait).is_absolute() else str(tmp_path / portrait)
    result = run_cli("render", "--portrait", portrait_path, "--audio", str(tmp_path / audio),
                     "--out", str(tmp_path / "out.mp4"), "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_render_is_deterministic_with_seed():
    from avatar.engines import create_engine
    from avatar.render import render_frames

    engine = create_engine("parametric", fps=25, size=128)
    avatar = engine.prepare(ASTRONAUT)
    audio = vowel_bursts(1.2)
    first = [f.image for f in render_frames(engine, avatar, audio, seed=3, watermark=False)]
    second = [f.image for f in render_frames(engine, avatar, audio, seed=3, watermark=False)]
    other = [f.image for f in render_frames(engine, avatar, audio, seed=4, watermark=False)]
    assert len(first) == 30
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
