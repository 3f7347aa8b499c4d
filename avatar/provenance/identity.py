"""Signing identity for C2PA manifests: a private key plus its certificate chain, as PEM.

Where it comes from, first match wins:

1. explicit paths (``python -m avatar render --sign-key KEY.pem --sign-cert CHAIN.pem``);
2. the environment: ``TALKING_PORTRAIT_SIGN_KEY`` and ``TALKING_PORTRAIT_SIGN_CERT`` (paths);
3. a ``provenance`` mapping with ``sign_key`` / ``sign_cert`` paths (the config file's section);
4. a local identity created on first use under ``$XDG_CACHE_HOME/talking-portrait/c2pa/`` (default
   ``~/.cache/talking-portrait/c2pa/``): a self-signed ECDSA P-256 CA (``ca.pem``) and a leaf signing
   certificate it issued (``signer.pem`` = leaf + CA, ``signer.key``). c2pa-rs refuses self-signed *leaf*
   certificates, so the chain has two links; the leaf has the extensions it checks (digitalSignature key
   usage, the emailProtection extended key usage, subject and authority key identifiers, CA=false).

A local identity proves the file was not altered since *this machine* signed it; players that do not
know the local CA report the signer as untrusted. Use a certificate from a C2PA-trusted CA for that.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import ConfigError

KEY_ENV = "TALKING_PORTRAIT_SIGN_KEY"
CERT_ENV = "TALKING_PORTRAIT_SIGN_CERT"
LOCAL_CA = "ca.pem"
LOCAL_CHAIN = "signer.pem"
LOCAL_KEY = "signer.key"
LOCAL_VALID_DAYS = 3650


@dataclass(frozen=True)
class SigningIdentity:
    """PEM bytes for a signer: ``key_pem`` (PKCS#8 private key), ``chain_pem`` (leaf first, then issuers).

    ``source`` says where it came from (``"options"``, ``"environment"``, ``"config"``, ``"local"``);
    ``trust_anchor_pem`` is the local CA certificate for local identities, else ``None``.
    """

    key_pem: bytes
    chain_pem: bytes
    source: str
    trust_anchor_pem: bytes | None = None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/talking-portrait/c2pa`` (``~/.cache/...`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "talking-portrait" / "c2pa"


def local_trust_anchor(folder: Path | None = None) -> bytes | None:
    """The local CA certificate (PEM) if a local identity exists, else ``None``."""
    path = (folder or cache_dir()) / LOCAL_CA
    try:
        return path.read_bytes()
    except OSError:
        return None


def resolve_identity(
    key_path: str | Path | None = None,
    cert_path: str | Path | None = None,
    settings: Mapping[str, object] | None = None,
    folder: Path | None = None,
    announce: Callable[[str], None] | None = None,
) -> SigningIdentity:
    """The signing identity to use (see the module docstring for the order).

    ``settings`` is a ``provenance`` config mapping (``sign_key`` / ``sign_cert``; empty means unset).
    ``announce`` receives one line when a local identity is created (default: print to stderr).
    Raises ``ConfigError`` when only one of key/cert is given or a file cannot be read.
    """
    settings = settings or {}
    candidates = [
        ("options", key_path, cert_path),
        ("environment", os.environ.get(KEY_ENV), os.environ.get(CERT_ENV)),
        ("config", settings.get("sign_key"), settings.get("sign_cert")),
    ]
    for source, key, cert in candidates:
        if key or cert:
            if not (key and cert):
                raise ConfigError(f"signing key and certificate go together ({source}): give both or neither")
            return SigningIdentity(_read_pem(key, "key"), _read_pem(cert, "certificate"), source)
    return local_identity(folder, announce)


def local_identity(
    folder: Path | None = None, announce: Callable[[str], None] | None = None
) -> SigningIdentity:
    """Load the local identity, creating it (and announcing one line) on first use."""
    folder = folder or cache_dir()
    paths = [folder / LOCAL_KEY, folder / LOCAL_CHAIN, folder / LOCAL_CA]
    if not all(p.is_file() for p in paths):
        _create_local(folder)
        say = announce or (lambda line: print(line, file=sys.stderr))
        say(
            f"created a local self-signed C2PA signing identity in {folder} "
            "(players will call the signer untrusted; pass --sign-key/--sign-cert for a real one)"
        )
    key, chain, ca = (_read_pem(p, "local identity file") for p in paths)
    return SigningIdentity(key, chain, "local", trust_anchor_pem=ca)


def _read_pem(path: str | Path, what: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing {what} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"signing {what} {path} is not a PEM file")
    return data


def _create_local(folder: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "talking-portrait (local, self-signed)"),
        ])

    def usage(sign: bool, cert_sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
            encipher_only=False, decipher_only=False,
        )

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=LOCAL_VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"talking-portrait local CA {os.uname().nodename}")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    leaf = (
        x509.CertificateBuilder().subject_name(name("talking-portrait local signer")).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True, cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_id, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / LOCAL_KEY, key_pem, mode=0o600)
        _write(folder / LOCAL_CHAIN, leaf.public_bytes(pem) + ca.public_bytes(pem))
        _write(folder / LOCAL_CA, ca.public_bytes(pem))  # written last: its presence marks a complete set
    except OSError as exc:
        raise ConfigError(f"cannot create the local signing identity in {folder}: {exc.strerror}") from None


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
