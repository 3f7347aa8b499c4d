"""Uploaded image files judged by their container structure BEFORE any pixel is decoded, then decoded.

``inspect_image`` walks the PNG chunks, JPEG segments or WebP RIFF chunks (headers only, no
decompression) and refuses with ``UploadError`` (one line, saying what is wrong): an unknown or
unsupported type (GIF, HEIC, SVG, PDF, ZIP ...), a file name whose extension disagrees with the content,
too many pixels (decompression bombs are judged by their header), too much metadata (huge EXIF/XMP/ICC
or text chunks), markup hidden in metadata or data after the end of the image (polyglots), animation
(APNG, animated WebP) and truncated or malformed structure.

``decode_image`` then decodes the checked bytes with Pillow into uint8 RGB (h, w, 3), at most
``max_side`` pixels on the longer side (JPEGs are decoded at a reduced DCT scale, which is much faster
than decoding 12 megapixels and shrinking), with the EXIF orientation applied and alpha composited on
white. It is meant to run in a worker thread.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from avatar.errors import AvatarError

MAX_METADATA_BYTES = 256 * 1024
"""EXIF + XMP + ICC + comments + text chunks together (a phone photo carries 10-80 KB)."""
MIN_SIDE = 64
"""Smaller images cannot hold a usable face."""
MAX_SIDE = 20000
MAX_ASPECT = 8.0
MARKUP = re.compile(rb"<\s*(script|html|body|iframe)\b|<\?php", re.IGNORECASE)
"""Markup that makes an image a polyglot (an HTML/PHP payload a browser or server might run)."""


class UploadError(AvatarError):
    """An uploaded portrait was refused; the one-line text goes back to the visitor."""


class ImageType(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


EXTENSIONS: dict[str, ImageType] = {
    ".png": ImageType.PNG, ".jpg": ImageType.JPEG, ".jpeg": ImageType.JPEG, ".webp": ImageType.WEBP,
}
MIME_TYPES: dict[str, ImageType] = {
    "image/png": ImageType.PNG, "image/jpeg": ImageType.JPEG, "image/jpg": ImageType.JPEG,
    "image/webp": ImageType.WEBP,
}
OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "a GIF (GIFs are often animated)"), (b"BM", "a BMP image"), (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\x7fELF", "a program"), (b"MZ", "a program"), (b"<", "text or markup (SVG/HTML)"),
)


@dataclass(frozen=True)
class ImageInfo:
    """What the container says, without decoding: type, pixel size (w, h) and metadata bytes."""

    kind: ImageType
    width: int
    height: int
    metadata_bytes: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def extension_type(name: str) -> ImageType:
    """The image type a file name promises; anything but .png/.jpg/.jpeg/.webp is refused."""
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot >= 0 else ""
    if suffix not in EXTENSIONS:
        raise UploadError("upload a .png, .jpg or .webp photo" + (f" (not {suffix[:10]})" if suffix else ""))
    return EXTENSIONS[suffix]


def sniff_type(data: bytes) -> ImageType:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageType.PNG
    if data.startswith(b"\xff\xd8\xff"):
        return ImageType.JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageType.WEBP
    if len(data) >= 12 and data[4:8] == b"ftyp":
        raise UploadError("this is a HEIC/AVIF or video file; export the photo as JPEG or PNG")
    for signature, what in OTHER_SIGNATURES:
        if data.lstrip()[: len(signature)] == signature:
            raise UploadError(f"this file is {what}, not a PNG, JPEG or WebP photo")
    raise UploadError("this file is not a PNG, JPEG or WebP image")


def inspect_image(data: bytes, name: str, mime: str | None, max_pixels: int) -> ImageInfo:
    """Check an uploaded file's structure; returns its ``ImageInfo`` or raises ``UploadError``."""
    named = extension_type(name)
    kind = sniff_type(data)
    if kind != named:
        raise UploadError(f"the file is named .{name.rsplit('.', 1)[-1].lower()[:10]} but holds a "
                          f"{kind.value.upper()} image; rename it or export it again")
    if mime and mime in MIME_TYPES and MIME_TYPES[mime] != kind:
        raise UploadError(f"the browser calls this file {mime[:40]} but it holds a "
                          f"{kind.value.upper()} image")
    walk = {ImageType.PNG: _walk_png, ImageType.JPEG: _walk_jpeg, ImageType.WEBP: _walk_webp}[kind]
    try:
        info, end = walk(data)
    except (struct.error, IndexError, ValueError):
        raise UploadError(f"the {kind.value.upper()} file is truncated or malformed") from None
    _check_size(info, max_pixels)
    if info.metadata_bytes > MAX_METADATA_BYTES:
        raise UploadError(f"the image carries {info.metadata_bytes // 1024} KB of metadata (EXIF, XMP, text; "
                          f"at most {MAX_METADATA_BYTES // 1024} KB); export it again without metadata")
    trailing = data[end:]
    more_jpeg = kind == ImageType.JPEG and trailing.startswith(b"\xff\xd8\xff")  # MPF: gain map, depth
    if trailing.strip(b"\x00\r\n\t ") and not more_jpeg:
        raise UploadError(f"the file has {len(trailing)} bytes after the end of the image (a polyglot or "
                          "an edited file); export it again as a plain image")
    return info


def _check_size(info: ImageInfo, max_pixels: int) -> None:
    w, h = info.width, info.height
    if w <= 0 or h <= 0:
        raise UploadError(f"the {info.kind.value.upper()} header gives no image size")
    if w * h > max_pixels or max(w, h) > MAX_SIDE:
        raise UploadError(f"the image is {w}x{h} ({w * h / 1e6:.0f} megapixels); at most "
                          f"{max_pixels / 1e6:.0f} megapixels and {MAX_SIDE} px a side")
    if min(w, h) < MIN_SIDE:
        raise UploadError(f"the image is only {w}x{h}; a portrait needs at least {MIN_SIDE} px a side")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise UploadError(f"the image is {w}x{h}, too long and thin for a portrait")


def _check_markup(blob: bytes) -> None:
    if MARKUP.search(blob):
        raise UploadError("the image's metadata holds HTML or script markup (a polyglot); "
                          "export it again as a plain image")


def _walk_png(data: bytes) -> tuple[ImageInfo, int]:
    pos, width, height, metadata = 8, 0, 0, 0
    while True:
        length, chunk = struct.unpack(">I4s", data[pos:pos + 8])
        body_end = pos + 8 + length
        if body_end + 4 > len(data):
            raise UploadError("the PNG file is truncated or malformed")
        if pos == 8:
            if chunk != b"IHDR" or length != 13:
                raise UploadError("the PNG file has no image header (IHDR)")
            width, height = struct.unpack(">II", data[pos + 8:pos + 16])
        elif chunk in (b"acTL", b"fcTL", b"fdAT"):
            raise UploadError("animated PNGs are not accepted; upload a still photo")
        elif chunk not in (b"IDAT", b"IEND", b"PLTE"):
            metadata += length
            if chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf") and metadata <= MAX_METADATA_BYTES:
                _check_markup(data[pos + 8:body_end])
        pos = body_end + 4
        if chunk == b"IEND":
            return ImageInfo(ImageType.PNG, width, height, metadata), pos


SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def _walk_jpeg(data: bytes) -> tuple[ImageInfo, int]:
    pos, width, height, metadata, frames = 2, 0, 0, 0, 0
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise UploadError("the JPEG file is malformed (expected a marker)")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # end of image
            if not frames:
                raise UploadError("the JPEG file holds no image frame")
            return ImageInfo(ImageType.JPEG, width, height, metadata), pos
        if marker in STANDALONE:
            continue
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > n:
            raise UploadError("the JPEG file is truncated or malformed")
        body = data[pos + 2:pos + length]
        if marker in SOF_MARKERS:
            frames += 1
            if frames > 1:
                raise UploadError("the JPEG file holds several frames; upload a plain photo")
            height, width = struct.unpack(">HH", body[1:5])
        elif 0xE0 <= marker <= 0xEF or marker == 0xFE:
            metadata += length
            if metadata <= MAX_METADATA_BYTES:
                _check_markup(body)
        pos += length
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next real marker
            pos = _skip_entropy(data, pos)
    raise UploadError("the JPEG file is truncated (no end-of-image marker)")


def _skip_entropy(data: bytes, pos: int) -> int:
    """Position of the first marker after entropy-coded data (0xFF00 stuffing and RSTn are data)."""
    while True:
        pos = data.index(b"\xff", pos)
        follower = data[pos + 1]
        if follower == 0x00 or 0xD0 <= follower <= 0xD7 or follower == 0xFF:
            pos += 1 if follower == 0xFF else 2
            continue
        return pos


def _walk_webp(data: bytes) -> tuple[ImageInfo, int]:
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = 8 + riff_size
    if end > len(data) or riff_size < 12:
        raise UploadError("the WebP file is truncated or malformed")
    pos, width, height, metadata = 12, 0, 0, 0
    while pos + 8 <= end:
        chunk, length = struct.unpack("<4sI", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise UploadError("the WebP file is truncated or malformed")
        if chunk in (b"ANIM", b"ANMF"):
            raise UploadError("animated WebP images are not accepted; upload a still photo")
        if chunk == b"VP8X":
            if body[0] & 0x02:
                raise UploadError("animated WebP images are not accepted; upload a still photo")
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif chunk == b"VP8 " and not width:
            w, h = struct.unpack("<HH", body[6:10])
            width, height = w & 0x3FFF, h & 0x3FFF
        elif chunk == b"VP8L" and not width:
            bits = int.from_bytes(body[1:5], "little")
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif chunk in (b"EXIF", b"XMP ", b"ICCP"):
            metadata += length
            if metadata <= MAX_METADATA_BYTES:
                _check_markup(body)
        pos += 8 + length + (length & 1)
    return ImageInfo(ImageType.WEBP, width, height, metadata), end


def decode_image(data: bytes, info: ImageInfo, max_side: int) -> np.ndarray:
    """Decode checked bytes to uint8 RGB (h, w, 3) with the longer side at most ``max_side`` pixels."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as image:
            if getattr(image, "n_frames", 1) != 1:
                raise UploadError("animated images are not accepted; upload a still photo")
            if info.kind == ImageType.JPEG:
                scale = max_side / max(image.size)  # DCT scaling by 1/2, 1/4 or 1/8 while still that large
                image.draft("RGB", (int(image.width * scale), int(image.height * scale)))
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.getchannel("A"))
            else:
                image = image.convert("RGB")
            scale = max_side / max(image.size)
            if scale < 1.0:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
            return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    except UploadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UploadError(f"cannot decode the image: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:120]
    return text or exc.__class__.__name__
