"""``python -m avatar verify FILE``: check the signed C2PA manifest of a rendered file.

Prints the verdict and then the manifest's claims, one line each. Verdicts: ``trusted`` (signature and
content hashes check out, signer chains to a trust anchor: the local CA or ``--trust`` PEMs),
``valid`` (they check out, the signer is unknown), ``invalid`` (the file changed after signing or the
signature is broken), ``absent`` (no manifest). Exit status 0 trusted/valid, 1 invalid/absent, 2 bad input.
"""

from __future__ import annotations

import argparse
import json

VERDICTS = {
    "trusted": "manifest VALID, signer trusted",
    "valid": "manifest VALID (signer not in the trust list)",
    "invalid": "manifest INVALID: the file was altered after signing, or the signature is broken",
    "absent": "no C2PA manifest",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="check the signed C2PA provenance manifest of a file")
    p.add_argument("file", help="file to check (MP4 from render/say, or another C2PA-capable format)")
    p.add_argument("--trust", action="append", default=[], metavar="PEM",
                   help="extra trusted CA certificate(s) (repeatable); the local CA is always trusted")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from avatar.errors import ConfigError
    from avatar.provenance.identity import local_trust_anchor
    from avatar.provenance.manifest import verify_file

    anchors = []
    for path in args.trust:
        try:
            anchors.append(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read --trust {path}: {exc.strerror}") from None
    local = local_trust_anchor()
    if local:
        anchors.append(local)
    result = verify_file(args.file, anchors)
    if args.json:
        print(json.dumps({"file": args.file, "status": result.status, "failures": result.failures,
                          "claims": [{"name": k, "value": v} for k, v in result.claims]}))
    else:
        print(f"{args.file}: {VERDICTS[result.status]}")
        for code in result.failures:
            print(f"  failure: {code}")
        for name, value in result.claims:
            print(f"  {name}: {value}")
    return 0 if result.ok else 1
