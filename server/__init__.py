"""Streaming server: HTTP + WebSocket signalling + WebRTC media around an ``avatar`` engine.

Never imports torch (engines are created through ``avatar.engines.create_engine``).
"""
