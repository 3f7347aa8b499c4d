"""Streaming server: HTTP + WebSocket signalling + WebRTC media around an ``avatar`` engine.

Never imports torch (engines are created through ``avatar.engines.create_engine``).

Importing it limits numpy's BLAS and OpenMP to one thread per call (unless the environment already
says otherwise), before numpy loads: each session renders in its own thread, and a multi-threaded
BLAS under the learned motion's small matrix products made sessions fight for the cores (two sessions
on two cores: 13 fresh fps each and 38 ms per frame with the defaults, 24.8 and 21 ms with one
thread; docs/operations.md, Capacity). The diffusion engine sets its own torch thread count.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
