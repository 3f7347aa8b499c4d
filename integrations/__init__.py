"""The talking portrait inside voice-agent frameworks (docs/integrations.md).

* ``integrations.stream``: the shared core, framework-free: an agent's speech audio in (any rate), the
  portrait's frames out, each with the audio it shows; idle motion between turns; interrupt.
* ``integrations.pipecat``: a pipecat ``FrameProcessor`` (extra ``[pipecat]``).
* ``integrations.livekit``: a LiveKit Agents ``VideoGenerator`` for its ``AvatarRunner``
  (extra ``[livekit]``).

Importing this package imports neither framework; each module imports its own when imported.
"""
