"""Broadcast fan-out: a session's stream published once into a Janus VideoRoom room (docs/deploy.md)."""
