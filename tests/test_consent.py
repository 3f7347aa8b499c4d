"""Consent and disclosure: portrait sidecars, avatar.require_consent, and the /avatars fields."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from server.app import App
from server.avatars import AvatarRegistry
from server.config import load_config
from server.consent import SidecarError, SidecarReader, parse_sidecar
from tests.media import ASTRONAUT

ADDED = "2026-11-25T09:00:00+00:00"


def test_parse_sidecar_reads_all_fields():
    text = json.dumps({"added": ADDED, "by": "alice", "consent": True, "note": "signed form"})
    record = parse_sidecar(text)
    assert (record.added, record.by, record.consent, record.note, record.present) == (
        ADDED, "alice", True, "signed form", True)
    empty = parse_sidecar("{}")
    assert empty.present and not empty.consent and empty.added is None


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"consent": "yes"}', '{"added": "yesterday"}',
                                  '{"by": 42}', '{"added": 20261125}'])
def test_parse_sidecar_rejects_malformed_values(text):
    with pytest.raises(SidecarError):
        parse_sidecar(text)


def test_bad_sidecar_reads_as_no_record_with_one_log_line(tmp_path, caplog):
    portrait = tmp_path / "bob.png"
    shutil.copy(ASTRONAUT, portrait)
    (tmp_path / "bob.json").write_text('{"consent": "maybe"}')
    reader = SidecarReader()
    with caplog.at_level(logging.WARNING, logger="server.avatars"):
        first, second = reader.read(portrait), reader.read(portrait)
    assert not first.present and not second.consent
    assert sum("bob.json" in r.getMessage() for r in caplog.records) == 1


def _folder(tmp_path):
    folder = tmp_path / "avatars"
    folder.mkdir()
    for stem in ("alice", "bob", "carol"):
        shutil.copy(ASTRONAUT, folder / f"{stem}.png")
    (folder / "alice.json").write_text(json.dumps({"added": ADDED, "by": "ops", "consent": True}))
    (folder / "bob.json").write_text(json.dumps({"added": ADDED, "by": "ops", "consent": False}))
    return folder  # carol has no sidecar


def test_require_consent_skips_portraits_without_consent(tmp_path, box_engine_factory, caplog):
    folder = _folder(tmp_path)
    lenient = AvatarRegistry(box_engine_factory(), ASTRONAUT, folder)
    assert [e["id"] for e in lenient.public_list()] == ["astronaut", "alice", "bob", "carol"]
    strict = AvatarRegistry(box_engine_factory(), ASTRONAUT, folder, require_consent=True)
    with caplog.at_level(logging.WARNING, logger="server.avatars"):
        ids = [e["id"] for e in strict.public_list()]
        strict.public_list()
    assert ids == ["astronaut", "alice"]
    skipped = [r.getMessage() for r in caplog.records if "no consent" in r.getMessage()]
    assert len(skipped) == 2
    assert any("bob.png" in m for m in skipped) and any("carol.png" in m for m in skipped)
    (folder / "carol.json").write_text(json.dumps({"consent": True}))
    assert [e["id"] for e in strict.public_list()] == ["astronaut", "alice", "carol"]


def test_config_switches_validate():
    config = load_config(flags={"avatar.require_consent": True, "provenance.badge": True})
    assert config.avatar.require_consent and config.provenance.badge
    assert load_config().avatar.require_consent is False and load_config().provenance.badge is False


async def test_avatars_route_exposes_added_and_by(tmp_path, make_config, box_engine_factory, http_get):
    config = make_config()
    folder = config.path(config.avatar.dir)
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "alice.png")
    (folder / "alice.json").write_text(json.dumps({"added": ADDED, "by": "ops team", "consent": True,
                                                   "note": "internal"}))
    app = App(config, box_engine_factory())
    await app.start(host="127.0.0.1", port=0)
    try:
        status, _, body = await http_get(app.port, "/avatars")
    finally:
        await app.stop()
    listed = {a["id"]: a for a in json.loads(body)}
    assert status == 200
    assert listed["alice"]["added"] == ADDED and listed["alice"]["by"] == "ops team"
    assert listed["astronaut"]["added"] is None and listed["astronaut"]["by"] is None
    assert "note" not in listed["alice"] and "consent" not in listed["alice"]
