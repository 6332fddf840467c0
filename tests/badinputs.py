"""Generate the corpus of bad and odd inputs the loader must handle (no files are shipped for this)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import synthdetect.images  # noqa: F401  (registers the HEIF plugin used to write photo.heic)

# name -> (expected error kind, or None when the file must be judged)
EXPECTED: dict[str, str | None] = {
    "truncated.jpg": "truncated",
    "huge-header.png": "too_many_pixels",
    "random.jpg": "not_an_image",
    "text.jpg": "not_an_image",
    "empty.png": "empty",
    "document.pdf": "unsupported_format",
    "one-pixel.png": None,
    "strip-20000x1.png": None,
    "animated.gif": None,
    "cmyk.jpg": None,
    "sixteen-bit.png": None,
    "exif-rotated.jpg": None,
    "palette-alpha.png": None,
    "photo.webp": None,
    "photo.bmp": None,
    "photo.tiff": None,
    "photo.avif": None,
    "photo.heic": None,
    "small.jpg": None,
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header that claims a huge size (a decompression bomb's calling card)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * 4)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def natural_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like test image (gradients plus mild noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([
        128 + 100 * np.sin(x / max(width, 1) * 3.1 + seed),
        128 + 100 * np.cos(y / max(height, 1) * 2.3),
        128 + 60 * np.sin((x + y) / max(width + height, 1) * 5.0),
    ], axis=-1)
    noisy = base + rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def make_corpus(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        paths[name] = root / name

    def save(name: str, image: Image.Image, **kwargs) -> None:
        buffer = io.BytesIO()
        image.save(buffer, **kwargs)
        put(name, buffer.getvalue())

    photo = natural_image(96, 64)
    save("small.jpg", natural_image(32, 32, seed=3), format="JPEG", quality=90)
    full = io.BytesIO()
    natural_image(400, 300).save(full, format="JPEG", quality=90)
    put("truncated.jpg", full.getvalue()[: len(full.getvalue()) // 2])
    put("huge-header.png", png_claiming(100_000, 100_000))
    put("random.jpg", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("text.jpg", b"This is not a JPEG, it is a text file with a .jpg name.\n" * 20)
    put("empty.png", b"")
    put("document.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    save("one-pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)), format="PNG")
    save("strip-20000x1.png", natural_image(20000, 1), format="PNG")
    frames = [natural_image(48, 48, seed=s).convert("P") for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated.gif", buffer.getvalue())
    save("cmyk.jpg", natural_image(40, 40).convert("CMYK"), format="JPEG", quality=92)
    gradient = (np.linspace(0, 65535, 48 * 48).reshape(48, 48)).astype(np.uint16)
    save("sixteen-bit.png", Image.fromarray(gradient), format="PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: stored 60x40 is shown 40x60
    save("exif-rotated.jpg", natural_image(60, 40), format="JPEG", quality=92, exif=exif.tobytes())
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    save("palette-alpha.png", palette, format="PNG", transparency=0)
    save("photo.webp", photo, format="WEBP", quality=90)
    save("photo.bmp", photo, format="BMP")
    save("photo.tiff", photo, format="TIFF")
    save("photo.avif", photo, format="AVIF", quality=80)
    save("photo.heic", photo, format="HEIF", quality=80)
    return paths


def refuse_listing(monkeypatch, folder_name: str) -> None:
    """Make ``os.scandir`` fail with "Permission denied" on folders named ``folder_name``.

    The tests run as root, where ``chmod`` cannot lock a folder.
    """
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith(folder_name):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
