"""Text to speech behind one small interface; espeak-ng (offline, 100+ languages) is the default."""

from avatar.tts.base import TextToSpeech, create_tts

__all__ = ["TextToSpeech", "create_tts"]
