"""Audio decoding, voice activity, ring buffering and windowing (numpy only, no torch)."""
