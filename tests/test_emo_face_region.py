"""Where the EMO engine's generated region sits in the portrait, and how it is pasted back."""

from __future__ import annotations

import numpy as np
import pytest

from avatar.emo.face_region import composite, crop_face, face_region


def test_region_around_the_face_and_shifted_to_the_mouth():
    box = (200, 150, 300, 290)  # longer side 140 (height)
    face = face_region(512, box, 64, 1.9, 0.1)
    assert face.side == round(1.9 * 140)
    assert face.x0 + face.side / 2 == pytest.approx(250, abs=1) and face.y0 + face.side / 2 == pytest.approx(
        220, abs=1
    )
    mouth = face_region(512, box, 64, 0.56, 0.25, shift=0.28)
    assert mouth.side == round(0.56 * 140)
    assert mouth.x0 + mouth.side / 2 == pytest.approx(250, abs=1)
    assert mouth.y0 + mouth.side / 2 == pytest.approx(220 + 0.28 * 140, abs=1)
    # the face-locator mask marks the part of the face box inside the crop
    assert mouth.face_mask[0].all() and mouth.face_mask.mean() > 0.5


def test_region_stays_inside_the_image_and_blends_smoothly():
    region = face_region(256, (180, 190, 250, 250), 32, 0.56, 0.25, shift=0.28)
    assert region.x0 >= 0 and region.y0 >= 0
    assert region.x0 + region.side <= 256 and region.y0 + region.side <= 256
    image = np.full((256, 256, 3), 100, np.uint8)
    out = composite(image, np.full((32, 32, 3), 200, np.uint8), region)
    centre = out[region.y0 + region.side // 2, region.x0 + region.side // 2]
    assert tuple(centre) == (200, 200, 200)
    assert np.array_equal(out[: region.y0], image[: region.y0])  # untouched outside the window
    crop = crop_face(out, region)
    assert crop.shape == (32, 32, 3)
