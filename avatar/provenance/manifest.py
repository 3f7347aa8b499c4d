"""Signed provenance record (a C2PA manifest) on rendered MP4s, and its verification.

Signing, after the MP4 is written::

    from avatar.provenance.manifest import GenerationClaims, sign_file, sha256_file
    from avatar.provenance.identity import resolve_identity

    claims = GenerationClaims(engine="parametric", portrait_sha256=sha256_file(portrait), session_id=0x12ab34)
    sign_file("clip.mp4", claims, resolve_identity())          # rewrites clip.mp4 with the manifest

The manifest holds a ``c2pa.actions`` assertion (``c2pa.created``, digitalSourceType
``trainedAlgorithmicMedia``, softwareAgent = this project and engine) and an
``org.talking-portrait.generation`` assertion (engine, portrait SHA-256, the watermark's session id as
6 hex digits). The signature covers those and a hash of the whole file (``c2pa.hash.bmff``), so changing
any byte of the media data makes verification fail.

Checking::

    result = verify_file("clip.mp4", trust_anchors=[ca_pem])   # .status: trusted|valid|invalid|absent
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from avatar.errors import AvatarError
from avatar.provenance.identity import SigningIdentity

GENERATOR = "talking-portrait"
GENERATION_LABEL = "org.talking-portrait.generation"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MP4_MIME = "video/mp4"
UNTRUSTED_CODE = "signingCredential.untrusted"
STATUSES = ("trusted", "valid", "invalid", "absent")


class ManifestError(AvatarError):
    """Signing failed, or the file to verify is missing or not a media file C2PA can read."""


@dataclass(frozen=True)
class GenerationClaims:
    """What the manifest asserts about a rendered file."""

    engine: str
    """Engine name, e.g. ``"parametric"``."""
    portrait_sha256: str
    """SHA-256 of the portrait file's bytes, 64 lowercase hex digits."""
    session_id: int | None = None
    """The invisible watermark's 24-bit session id (``None`` when the frames are not watermarked)."""


@dataclass
class Verification:
    """Outcome of ``verify_file``.

    ``status``: ``"trusted"`` (signature and hashes check out and the signer chains to a trust anchor),
    ``"valid"`` (they check out, the signer is not in the trust list), ``"invalid"`` (a signature or
    hash fails: the file was altered after signing) or ``"absent"`` (no manifest).
    ``claims``: ``(name, value)`` pairs read from the active manifest, in display order.
    ``failures``: C2PA failure codes other than ``signingCredential.untrusted``.
    """

    status: str
    claims: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("trusted", "valid")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(GENERATOR)
    except PackageNotFoundError:
        return "0.1.0"


def manifest_definition(claims: GenerationClaims, title: str) -> dict:
    """The C2PA manifest definition (JSON-ready) for a file named ``title``."""
    agent = {"name": f"{GENERATOR} {claims.engine} engine", "version": project_version()}
    generation: dict[str, object] = {"engine": claims.engine, "portrait_sha256": claims.portrait_sha256}
    if claims.session_id is not None:
        generation["watermark_session_id"] = f"{claims.session_id:06x}"
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": project_version()}],
        "title": title,
        "format": MP4_MIME,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [{
                        "action": "c2pa.created",
                        "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                        "softwareAgent": agent,
                    }]
                },
            },
            {"label": GENERATION_LABEL, "data": generation},
        ],
    }


def sign_file(path: str | Path, claims: GenerationClaims, identity: SigningIdentity) -> None:
    """Embed a signed manifest into the MP4 at ``path`` (rewritten in place via a temporary file)."""
    import c2pa

    path = Path(path)
    tmp = path.with_name(f".{path.name}.c2pa-tmp")
    try:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.chain_pem, identity.key_pem, None)
        signer = c2pa.Signer.from_info(info)
        builder = c2pa.Builder(manifest_definition(claims, path.name))
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            builder.sign(signer, MP4_MIME, src, dst)
        os.replace(tmp, path)
    except c2pa.C2paError as exc:
        raise ManifestError(f"cannot sign {path} ({identity.source} identity): {_one_line(exc)}") from None
    except OSError as exc:
        raise ManifestError(f"cannot sign {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def verify_file(path: str | Path, trust_anchors: list[bytes] | None = None) -> Verification:
    """Check the C2PA manifest of ``path`` against its content; ``trust_anchors`` are CA PEMs.

    Raises ``ManifestError`` when the file is missing or is not a format C2PA reads.
    """
    import c2pa

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    mime = _mime_for(path, data)
    anchors = b"".join(trust_anchors or []).decode("ascii", "replace")
    settings = {"verify": {"verify_trust": True}}
    if anchors:
        settings["trust"] = {"user_anchors": anchors}
    try:
        context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
        with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
            state = (reader.get_validation_state() or "").lower()
            results = reader.get_validation_results() or {}
            manifest = reader.get_active_manifest() or {}
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "ManifestNotFound" in str(exc):
            return Verification("absent")
        raise ManifestError(f"cannot read a C2PA manifest from {path}: {_one_line(exc)}") from None
    failures = [e.get("code", "?") for e in results.get("activeManifest", {}).get("failure", [])]
    failures += [e.get("code", "?") for e in results.get("ingredientDeltas", []) if isinstance(e, dict)]
    real_failures = [code for code in failures if code != UNTRUSTED_CODE]
    if state == "trusted" and not real_failures:
        status = "trusted"
    elif state in ("valid", "trusted") and not real_failures:
        status = "valid"
    else:
        status = "invalid"
    return Verification(status, describe(manifest), real_failures)


def describe(manifest: dict) -> list[tuple[str, str]]:
    """``(name, value)`` pairs worth showing from an active manifest (reader JSON form)."""
    claims: list[tuple[str, str]] = []
    for info in manifest.get("claim_generator_info", []):
        claims.append(("generator", f"{info.get('name', '?')} {info.get('version', '')}".strip()))
    for assertion in manifest.get("assertions", []):
        label, data = assertion.get("label", ""), assertion.get("data", {})
        if label.startswith("c2pa.actions"):
            for action in data.get("actions", []):
                source = str(action.get("digitalSourceType", "")).rsplit("/", 1)[-1]
                agent = action.get("softwareAgent", {})
                agent = agent.get("name", "") if isinstance(agent, dict) else str(agent)
                text = action.get("action", "?") + (f", digitalSourceType {source}" if source else "")
                claims.append(("action", text + (f", by {agent}" if agent else "")))
        elif label == GENERATION_LABEL:
            claims.extend((str(k), json.dumps(v) if not isinstance(v, str) else v) for k, v in data.items())
    signature = manifest.get("signature_info", {})
    if signature:
        who = signature.get("common_name") or "?"
        issuer, alg = signature.get("issuer", "?"), signature.get("alg", "?")
        claims.append(("signed by", f"{who} (issuer {issuer}, {alg})"))
        if signature.get("time"):
            claims.append(("signed at", str(signature["time"])))
    return claims


def _mime_for(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("mp4", "m4v", "mov", "m4a"):
        return {"mov": "video/quicktime", "m4a": "audio/mp4"}.get(suffix, MP4_MIME)
    if data[4:8] == b"ftyp":
        return MP4_MIME
    if suffix in ("png", "jpg", "jpeg", "webp", "wav", "mp3", "avif", "heic", "tif", "tiff", "gif"):
        return suffix
    raise ManifestError(f"{path}: not an MP4 (or another format with C2PA support)")


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or exc.__class__.__name__
