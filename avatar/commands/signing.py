"""Shared by ``render`` and ``say``: the signing options and the step that signs the written MP4.

Not a subcommand (it is not in ``COMMAND_MODULES``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from avatar.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-manifest", action="store_true", help="do not embed a signed C2PA manifest")
    p.add_argument("--sign-key", help="PEM private key (ES256) for the C2PA manifest")
    p.add_argument("--sign-cert", help="PEM certificate chain (leaf first) matching --sign-key")
    p.add_argument("--config", help="config file whose provenance.sign_key/sign_cert are used "
                   "(default configs/default.yaml); env TALKING_PORTRAIT_SIGN_KEY/_CERT win over it")
    p.add_argument("--badge", action="store_true", help='draw a small visible "AI-generated" label')


def provenance_section(config_path: str | None) -> dict[str, str]:
    """``sign_key`` / ``sign_cert`` of the config file's ``provenance`` section (relative paths are taken
    from the project root, as the server does); empty values are left out."""
    path = Path(config_path) if config_path else DEFAULT_CONFIG
    if not path.is_file():
        if config_path:
            raise ConfigError(f"config file not found: {path}")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        raise ConfigError(f"cannot read config {path}") from None
    section = data.get("provenance") if isinstance(data, dict) else None
    found = {}
    for key in ("sign_key", "sign_cert"):
        value = (section or {}).get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and value.strip():
            p = Path(value).expanduser()
            found[key] = str(p if p.is_absolute() else PROJECT_ROOT / p)
    return found


def resolve(args: argparse.Namespace):
    """An explicitly configured ``SigningIdentity`` (options, environment, config), checked before
    rendering so a bad key fails fast; ``None`` when the local pair is to be used (created only once a
    file was rendered, see ``sign_output``) or with ``--no-manifest``."""
    if args.no_manifest:
        return None
    settings = provenance_section(args.config)
    from avatar.provenance.identity import CERT_ENV, KEY_ENV, resolve_identity

    from_env = os.environ.get(KEY_ENV) or os.environ.get(CERT_ENV)
    if not (args.sign_key or args.sign_cert or settings or from_env):
        return None
    return resolve_identity(args.sign_key, args.sign_cert, settings)


def sign_output(
    args: argparse.Namespace, identity, out: str, portrait: str, engine: str, session_id: int | None
) -> bool:
    """Embed the manifest into ``out`` (with ``identity``, else the local pair, created on first use);
    on failure print one notice line and keep the unsigned file."""
    if args.no_manifest:
        return False
    from avatar.errors import AvatarError

    try:
        from avatar.provenance.identity import resolve_identity
        from avatar.provenance.manifest import GenerationClaims, sha256_file, sign_file

        identity = identity or resolve_identity(None, None, {})

        claims = GenerationClaims(engine=engine, portrait_sha256=sha256_file(portrait), session_id=session_id)
        sign_file(out, claims, identity)
    except (AvatarError, ImportError) as exc:
        print(f"notice: {out} written WITHOUT a signed C2PA manifest: {exc}", file=sys.stderr)
        return False
    return True
