"""Deliver one say / audio / interrupt to one session (its own socket's) or to every session on a channel.

Order of work, cheapest first, so that nothing a client sends is synthesized or decoded before it has
passed every check that needs no decoding:

1. each target session's mode (say/audio need speak mode);
2. the message itself, once: the text (length, voice) or the pushed audio's size from its base64
   length (and for ``pcm16`` its rate and duration) - ``check_pushed_audio``;
3. each target's speech-queue room and per-session rate limit (``Speaker.admit``, which counts it);
4. the work, **once** for all admitted targets: text to speech (a worker thread, after the reply) or
   the audio decoding (a worker thread, before the reply; a clip that does not decode is refunded to
   every target's rate limit and refused);
5. the samples are queued on each admitted target (``Speaker.speak``).

``deliver`` returns the sessions that took the request with their reply fields, and the refusals of the
others; when none took it the first refusal is raised (``SignallingError``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from avatar.engine import SAMPLE_RATE
from avatar.errors import AvatarError
from server.signalling import AUTO_VOICE, Interrupt, PushAudio, Say, SignallingError
from server.speech_input import check_pushed_audio, decode_pushed_audio, resolve_voice

if TYPE_CHECKING:
    from server.session import Session
    from server.speaker import TtsProvider

SpeechMessage = Say | PushAudio | Interrupt
Accepted = list[tuple["Session", dict[str, Any]]]


async def deliver(
    sessions: list[Session], message: SpeechMessage, tts: TtsProvider
) -> tuple[Accepted, list[str]]:
    """Hand ``message`` to ``sessions``: (the sessions that took it with their reply fields, the others'
    refusals). Raises ``SignallingError`` when none took it (or the message itself is bad)."""
    if isinstance(message, Interrupt):
        accepted = [(session, _interrupt(session)) for session in sessions if not session.closed]
        if not accepted:
            raise SignallingError("start a session first: send an offer")
        return accepted, []
    what = "say" if isinstance(message, Say) else "audio"
    errors: list[str] = []
    speaking = _keep(sessions, lambda s: s.speaker.check_mode(what), errors)
    settings = speaking[0].config.speech
    if isinstance(message, Say):
        text = _clean_text(message.text, settings.max_text_chars)
        engine = await tts.get()
        asked = message.voice
        if asked.lower() == AUTO_VOICE:  # the voice follows the text's language (English when unsure)
            asked = (await tts.detect_language(text))["language"] or "en"
        voice = resolve_voice(asked, await asyncio.to_thread(engine.voices))
    else:
        check_pushed_audio(message.format, message.data, message.sample_rate, settings.max_audio_seconds,
                           settings.max_audio_bytes)
    stamps: dict[Session, float] = {}
    admitted = _keep(speaking, lambda s: stamps.__setitem__(s, s.speaker.admit()), errors)
    if isinstance(message, Say):
        job = asyncio.ensure_future(asyncio.to_thread(engine.synthesize, text, voice))
        fields: dict[str, Any] = {"request": "say", "voice": voice}
        if message.voice.lower() == AUTO_VOICE:
            fields["auto"] = True  # the voice was picked from the text's language
    else:
        try:
            samples = await asyncio.to_thread(
                decode_pushed_audio, message.format, message.data, message.sample_rate,
                settings.max_audio_seconds, settings.max_audio_bytes)
        except AvatarError:
            for session in admitted:
                session.speaker.refund(stamps[session])
            raise
        job = asyncio.get_running_loop().create_future()
        job.set_result(samples)
        fields = {"request": "audio", "seconds": round(samples.size / SAMPLE_RATE, 3)}
    accepted: Accepted = []
    for session in admitted:
        if session.closed:
            continue  # closed while the audio was decoded
        session.speaker.speak(job, what)
        accepted.append((session, dict(fields)))
    if not accepted:
        raise SignallingError(errors[0] if errors else "the session ended")
    return accepted, errors


def _keep(sessions: list[Session], check, errors: list[str]) -> list[Session]:
    """The sessions ``check`` does not refuse; refusals go to ``errors``; none left -> the first raised."""
    kept = []
    for session in sessions:
        try:
            check(session)
        except AvatarError as exc:
            errors.append(str(exc))
            continue
        kept.append(session)
    if not kept:
        raise SignallingError(errors[0] if errors else "start a session first: send an offer")
    return kept


def _clean_text(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if not text:
        raise SignallingError("nothing to say: the text is empty")
    if len(text) > limit:
        raise SignallingError(f"text too long: {len(text)} characters (at most {limit})")
    return text


def _interrupt(session: Session) -> dict[str, Any]:
    record = session.speaker.interrupt()
    return {"dropped_s": round((record["dropped_samples"] + record["muted"]) / SAMPLE_RATE, 2)}
