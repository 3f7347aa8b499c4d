"""Parsing and validation of /ws client messages; server message shapes."""

from __future__ import annotations

import json

import pytest

from server import signalling
from server.signalling import ListAvatars, Offer, Ping, SignallingError, parse_message

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


def test_good_messages():
    assert parse_message('{"type": "ping"}') == Ping()
    assert parse_message('{"type": "list_avatars"}') == ListAvatars()
    offer = parse_message(json.dumps({"type": "offer", "sdp": SDP, "avatar": "mona_lisa-2"}))
    assert offer == Offer(sdp=SDP, avatar="mona_lisa-2")
    assert parse_message(json.dumps({"type": "offer", "sdp": SDP})).avatar is None
    assert parse_message(json.dumps({"type": "offer", "sdp": SDP, "avatar": ""})).avatar is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\x00\x01", "binary"),
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"offer"', "JSON object"),
        ("{}", "no 'type'"),
        ('{"type": 3}', "no 'type'"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"type": "offer"}', "needs an 'sdp'"),
        ('{"type": "offer", "sdp": 42}', "needs an 'sdp'"),
        ('{"type": "offer", "sdp": "hello"}', "not a session description"),
        (json.dumps({"type": "offer", "sdp": SDP.replace("m=video", "m=audio")}), "no video m-line"),
        (json.dumps({"type": "offer", "sdp": SDP, "avatar": "../etc/passwd"}), "invalid avatar id"),
        (json.dumps({"type": "offer", "sdp": SDP, "avatar": 7}), "invalid avatar id"),
        (json.dumps({"type": "offer", "sdp": SDP, "avatar": "a" * 65}), "invalid avatar id"),
        (json.dumps({"type": "offer", "sdp": SDP + "a=x\r\n" * 40000}), "too large"),
        ("[" * 100000 + "]" * 100000, "not valid JSON"),
        ('{"type": "x", "n": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
)
def test_bad_messages_give_one_line_reasons(raw, fragment):
    with pytest.raises(SignallingError) as info:
        parse_message(raw)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_server_messages_are_json_objects_with_a_type():
    assert json.loads(signalling.answer("v=0", "abc")) == {"type": "answer", "sdp": "v=0", "session": "abc"}
    error = json.loads(signalling.error("line one\nline two " + "x" * 1000))
    assert error["type"] == "error" and "\n" not in error["message"] and len(error["message"]) <= 300
    assert json.loads(signalling.pong()) == {"type": "pong"}
    assert json.loads(signalling.avatars([{"id": "a", "name": "A"}]))["avatars"][0]["id"] == "a"
    assert json.loads(signalling.stats({"fps": 25.0}))["type"] == "stats"
