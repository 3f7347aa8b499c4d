"""Make the avatar on a channel speak (a controller without a session of its own; docs/protocol.md).

    python -m server.say_to_channel --url ws://127.0.0.1:8080/ws --channel stage --key KEY --text "Hola"
    python -m server.say_to_channel --channel stage --key KEY --wav hello.wav --wait
    python -m server.say_to_channel --channel stage --key KEY --interrupt

``KEY`` is the secret the overlay was opened with (``/overlay?channel=stage&key=KEY``) or the server's
``auth_token``.

Prints the server's reply (and with ``--wait`` the speaking events until ``speaking_finished``) as
JSON lines; exit status 0 when the request was taken, 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException


def build_request(args: argparse.Namespace) -> dict:
    """The say / audio / interrupt message for the chosen action."""
    target = {"channel": args.channel, "key": args.key}
    if args.interrupt:
        return {"type": "interrupt", **target}
    if args.wav is not None:
        data = base64.b64encode(Path(args.wav).read_bytes()).decode()
        return {"type": "audio", "format": "wav", "data": data, **target}
    return {"type": "say", "text": args.text, "voice": args.voice, **target}


async def send_request(url: str, request: dict, token: str = "", wait: bool = False,
                       timeout_s: float = 60.0) -> list[dict]:
    """Send one request; returns the reply, then with ``wait`` the events up to ``speaking_finished``.
    Raises ``RuntimeError`` with a one-line reason on refusal or connection trouble."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with asyncio.timeout(timeout_s), connect(url, additional_headers=headers,
                                                       max_size=None) as ws:
            await ws.send(json.dumps(request))
            reply = json.loads(await ws.recv())
            if reply.get("type") == "error":
                raise RuntimeError(reply.get("message", "refused"))
            messages = [reply]
            while wait and request["type"] != "interrupt":
                event = json.loads(await ws.recv())
                messages.append(event)
                if event.get("type") == "speaking_finished":
                    break
            return messages
    except TimeoutError:
        raise RuntimeError(f"no answer within {timeout_s:g} s") from None
    except InvalidStatus as exc:
        raise RuntimeError(f"the server refused the socket: HTTP {exc.response.status_code}") from None
    except (OSError, WebSocketException) as exc:
        raise RuntimeError(f"cannot talk to {url}: {exc}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server.say_to_channel",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="the server's /ws address")
    parser.add_argument("--channel", required=True, help="the channel the overlay was opened with")
    parser.add_argument("--key", required=True,
                        help="the channel's secret key (the overlay's key=...) or the server's auth_token")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--text", help="text to speak")
    action.add_argument("--wav", help="a PCM WAV file to speak (at most 30 s)")
    action.add_argument("--interrupt", action="store_true", help="stop the avatar speaking")
    parser.add_argument("--voice", default="en", help="language code for --text (en, es, de, fr, ...)")
    parser.add_argument("--token", default="", help="server.auth_token, if the server has one")
    parser.add_argument("--wait", action="store_true", help="wait until the avatar finished speaking")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        messages = asyncio.run(send_request(args.url, build_request(args), args.token, args.wait,
                                            args.timeout))
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for message in messages:
        print(json.dumps(message))
    return 0


if __name__ == "__main__":
    sys.exit(main())
