"""Voice follows the text: Lingua tells the typed text's language among the pages' voices, over
``detect_language`` and in ``say`` with ``"voice": "auto"``; an explicit voice still wins."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect

from avatar.tts.language import VOICE_LANGUAGES, LanguageGuesser
from server.app import App
from tests.test_server_speak import SpeakClient

SENTENCES = {
    "es": "Hola, buenos días. Me llamo Ana y me encanta conversar contigo.",
    "en": "Good morning, my name is Ann and I love talking with you.",
    "de": "Guten Morgen, ich heiße Anna und unterhalte mich gern mit dir.",
    "fr": "Bonjour, je m'appelle Anne et j'adore discuter avec toi.",
    "it": "Buongiorno, mi chiamo Anna e mi piace molto parlare con te.",
    "pt": "Bom dia, o meu nome é Ana e adoro conversar contigo.",
    "nl": "Goedemorgen, ik heet Anna en ik praat graag met jou.",
    "pl": "Dzień dobry, nazywam się Anna i bardzo lubię z tobą rozmawiać.",
    "ru": "Доброе утро, меня зовут Анна, и я люблю с тобой разговаривать.",
    "zh": "早上好，我叫安娜，我很喜欢和你聊天。",
    "ja": "おはようございます。私はアンナです。あなたと話すのが大好きです。",
}


@pytest.fixture(scope="module")
def guesser() -> LanguageGuesser:
    return LanguageGuesser()


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_each_voice_language_is_told_from_one_sentence(guesser, code):
    found = guesser.guess(SENTENCES[code])
    assert found is not None and found.code == code, (code, found)
    assert code in VOICE_LANGUAGES


def test_no_guess_without_words(guesser):
    assert guesser.guess("  1234 !!! ") is None
    assert guesser.guess("") is None


async def test_detect_language_and_say_with_auto_voice(make_config, box_engine_factory):
    config = make_config(**{"engine.size": 128, "provenance.watermark": False})
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await ws.send(json.dumps({"type": "detect_language", "text": SENTENCES["de"]}))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "language" and reply["language"] == "de" and reply["confidence"] > 0.5
            await ws.send(json.dumps({"type": "detect_language", "text": 5}))
            assert "needs a 'text' string" in json.loads(await ws.recv())["message"]
            await client.connect(ws)
            say = {"type": "say", "text": SENTENCES["es"], "voice": "auto"}
            reply = await client.request(ws, say, "queued")
            assert reply["type"] == "queued" and reply["voice"] == "es" and reply["auto"] is True, reply
            reply = await client.request(ws, {**say, "voice": "fr"}, "queued")
            assert reply["voice"] == "fr" and "auto" not in reply, reply  # the visitor's choice wins
    finally:
        await client.close()
        await app.stop()
