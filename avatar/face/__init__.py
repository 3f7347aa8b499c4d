"""The face rig shared by every engine: portrait preparation (MediaPipe mesh, framing), the warp mesh,
the mesh-warp renderer with its painted mouth, and ``FaceMotion``, the per-frame parameters it renders."""
