"""MediaPipe's legacy face mesh (478 landmarks; the model ships inside the ``mediapipe`` wheel), created
without the C++ log lines and protobuf warnings MediaPipe prints on start-up."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

_quiet_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (native libraries log there directly)."""
    with _quiet_lock:
        try:
            sys.stderr.flush()
            saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        except OSError:
            yield
            return
        os.dup2(null, 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


def import_mediapipe() -> Any:
    """``import mediapipe`` without its start-up log lines; import it through here, not directly.

    MediaPipe 0.10.14 declares protobuf<5, but the agent frameworks (pipecat, LiveKit; see
    docs/integrations.md) need protobuf>=5, so with them installed protobuf is 6.x. Of what MediaPipe
    uses, only ``SymbolDatabase.GetPrototype`` is gone in 6.x; it is given back here as protobuf's own
    ``message_factory.GetMessageClass``. Tested with protobuf 4.25.9 and 6.33.6 (5.29 fails to parse
    MediaPipe's graphs)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype")
    from google.protobuf import message_factory, symbol_database

    if not hasattr(symbol_database.SymbolDatabase, "GetPrototype"):
        symbol_database.SymbolDatabase.GetPrototype = (  # type: ignore[attr-defined]
            lambda _self, descriptor: message_factory.GetMessageClass(descriptor)
        )
    with _quiet_native_stderr():
        import mediapipe as mp
    return mp


def create_face_mesh(static_image_mode: bool = True, max_num_faces: int = 1, **options: Any) -> Any:
    """A ready ``mp.solutions.face_mesh.FaceMesh`` (refined: 478 landmarks incl. irises), warmed up once
    so its first-inference log lines are swallowed too. Not thread-safe: one per thread."""
    options.setdefault("refine_landmarks", True)
    mp = import_mediapipe()
    with _quiet_native_stderr():
        mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_image_mode, max_num_faces=max_num_faces, **options
        )
        mesh.process(np.zeros((64, 64, 3), dtype=np.uint8))
    return mesh
