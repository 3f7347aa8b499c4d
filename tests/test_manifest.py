"""Signed C2PA manifest on rendered MP4s: written, verified, tampering caught, absence reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.errors import ConfigError
from avatar.provenance import detect_file
from avatar.provenance.badge import draw_badge
from avatar.provenance.identity import LOCAL_CA, LOCAL_CHAIN, LOCAL_KEY, local_identity, resolve_identity
from avatar.provenance.manifest import (
    GenerationClaims,
    ManifestError,
    sha256_file,
    sign_file,
    verify_file,
)
from tests.media import ASTRONAUT, vowel_bursts, write_wav

ROOT = Path(__file__).resolve().parents[1]
CREATED_LINE = "created a local self-signed C2PA signing identity"


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_CACHE_HOME", "TALKING_PORTRAIT_"))}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "avatar", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """One signed and one unsigned render at 256 px (the first creates the local identity; the watermark
    needs at least 256 px to survive H.264)."""
    tmp = tmp_path_factory.mktemp("manifest")
    home = tmp / "home"
    wav = write_wav(tmp / "speech.wav", vowel_bursts(1.2))
    signed, plain = tmp / "signed.mp4", tmp / "plain.mp4"
    common = ["--portrait", str(ASTRONAUT), "--audio", str(wav), "--size", "256", "--quiet"]
    first = run_cli(home, "render", *common, "--out", str(signed))
    second = run_cli(home, "render", *common, "--out", str(plain), "--no-manifest")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    return {"home": home, "signed": signed, "plain": plain, "first": first, "second": second, "tmp": tmp}


@pytest.fixture
def cache_home(monkeypatch, renders):
    """This process uses the renders' HOME, so the local CA is the one that signed them."""
    monkeypatch.setenv("HOME", str(renders["home"]))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for name in ("TALKING_PORTRAIT_SIGN_KEY", "TALKING_PORTRAIT_SIGN_CERT"):
        monkeypatch.delenv(name, raising=False)
    return renders["home"] / ".cache" / "talking-portrait" / "c2pa"


def test_rendered_mp4_carries_a_verifiable_manifest(renders, cache_home):
    assert renders["first"].stderr.count(CREATED_LINE) == 1
    result = run_cli(renders["home"], "verify", str(renders["signed"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "manifest VALID, signer trusted" in result.stdout
    claims = dict(verify_file(renders["signed"], [(cache_home / LOCAL_CA).read_bytes()]).claims)
    assert claims["engine"] == "parametric"
    assert claims["portrait_sha256"] == sha256_file(ASTRONAUT)
    assert "c2pa.created" in claims["action"] and "trainedAlgorithmicMedia" in claims["action"]
    mark = detect_file(renders["signed"])
    assert mark.found and mark.payload is not None
    assert claims["watermark_session_id"] == f"{mark.payload.session_id:06x}"


def test_signer_unknown_without_the_local_ca_is_valid_not_trusted(renders):
    assert verify_file(renders["signed"], trust_anchors=[]).status == "valid"


def test_tampered_mdat_fails_verification(renders, cache_home, tmp_path):
    data = bytearray(renders["signed"].read_bytes())
    mdat = data.find(b"mdat")
    assert mdat > 0
    size = int.from_bytes(data[mdat - 4 : mdat], "big")
    middle = mdat + size // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(data)
    result = run_cli(renders["home"], "verify", str(tampered))
    assert result.returncode == 1
    assert "INVALID" in result.stdout
    assert verify_file(tampered, [(cache_home / LOCAL_CA).read_bytes()]).failures


def test_absent_manifest_and_bad_input(renders, tmp_path):
    assert CREATED_LINE not in renders["second"].stderr
    result = run_cli(renders["home"], "verify", str(renders["plain"]))
    assert result.returncode == 1 and "no C2PA manifest" in result.stdout
    junk = tmp_path / "junk.txt"
    junk.write_text("not a video")
    for path in (junk, tmp_path / "missing.mp4"):
        bad = run_cli(renders["home"], "verify", str(path))
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_local_identity_is_created_once_and_reused(cache_home, tmp_path):
    before = {name: (cache_home / name).read_bytes() for name in (LOCAL_KEY, LOCAL_CHAIN, LOCAL_CA)}
    lines: list[str] = []
    identity = resolve_identity(announce=lines.append)
    assert lines == [] and identity.source == "local"
    assert identity.key_pem == before[LOCAL_KEY] and identity.chain_pem == before[LOCAL_CHAIN]
    fresh_dir = tmp_path / "fresh"
    local_identity(fresh_dir, announce=lines.append)
    local_identity(fresh_dir, announce=lines.append)
    assert len(lines) == 1 and (fresh_dir / LOCAL_KEY).stat().st_mode & 0o077 == 0


def test_explicit_key_and_cert_sign_and_mismatch_is_refused(renders, cache_home, tmp_path, monkeypatch):
    other = tmp_path / "other"
    local_identity(other, announce=lambda _line: None)
    key, chain = other / LOCAL_KEY, other / LOCAL_CHAIN
    identity = resolve_identity(key, chain)
    assert identity.source == "options" and identity.trust_anchor_pem is None
    clip = tmp_path / "clip.mp4"
    shutil.copy(renders["plain"], clip)
    sign_file(clip, GenerationClaims("parametric", "0" * 64, session_id=0xABCDEF), identity)
    anchor = (other / LOCAL_CA).read_bytes()
    assert verify_file(clip, [anchor]).status == "trusted"
    assert dict(verify_file(clip, [anchor]).claims)["watermark_session_id"] == "abcdef"
    monkeypatch.setenv("TALKING_PORTRAIT_SIGN_KEY", str(key))
    monkeypatch.setenv("TALKING_PORTRAIT_SIGN_CERT", str(chain))
    assert resolve_identity().source == "environment"
    with pytest.raises(ConfigError):
        resolve_identity(key_path=key)  # a key without its certificate
    wrong = resolve_identity(cache_home / LOCAL_KEY, chain)  # key of one pair, chain of the other
    with pytest.raises(ManifestError):
        sign_file(clip, GenerationClaims("parametric", "0" * 64), wrong)


def test_badge_marks_only_the_bottom_left_corner():
    image = np.full((128, 128, 3), 200, np.uint8)
    out = draw_badge(image.copy())
    changed = np.argwhere((out != 200).any(axis=2))
    assert len(changed) > 100
    assert changed[:, 0].min() > 128 * 0.7 and changed[:, 1].min() < 10 and changed[:, 1].max() < 128 * 0.9
