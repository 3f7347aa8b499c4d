"""Errors whose message is one line a user can act on (shown as is, never with a traceback)."""


class AvatarError(Exception):
    """Base class: ``str(error)`` is a complete one-line explanation for the user."""


class PortraitError(AvatarError):
    """The portrait cannot be used: missing, not an image, no face, face too small."""


class AudioError(AvatarError):
    """The audio cannot be used: missing, undecodable, empty."""


class ConfigError(AvatarError):
    """A configuration value or checkpoint does not fit."""
