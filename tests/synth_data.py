"""Small labelled datasets that tests write themselves (no downloads, no ../shared).

The "ai" class carries a fine checkerboard (a stand-in for generator
upsampling artefacts) and the "human" class smooth noise, so a tiny CNN can
learn the difference in a few epochs on two CPU cores.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def make_image(label: int, seed: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2))
    array = np.asarray(base, dtype=np.int16)
    if label == 1:
        yy, xx = np.mgrid[:size, :size]
        array = array + np.where((yy + xx) % 2 == 0, 40, -40)[..., None]
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_folder(root: Path, n_per_class: int = 12, names: tuple[str, str] = ("ai", "human"), size: int = 24,
                 fmt: tuple[str, str] = ("PNG", "PNG")) -> Path:
    """``root/<names[0]>/*`` AI images and ``root/<names[1]>/*`` human images."""
    for label, folder, f in ((1, names[0], fmt[0]), (0, names[1], fmt[1])):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[f]
            (root / folder / f"{i:03d}.{ext}").write_bytes(encode(make_image(label, seed=1000 * label + i, size=size), f))
    return root


def write_manifest(root: Path, sources: dict[str, tuple[int, int]], size: int = 24, broken: int = 0) -> Path:
    """A CSV manifest with sources: ``{"src": (n_ai, n_human)}``; ``broken`` adds undecodable files."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    seed = 0
    for source, (n_ai, n_human) in sources.items():
        for label, count in ((1, n_ai), (0, n_human)):
            for _ in range(count):
                seed += 1
                rel = f"images/{source}/{'ai' if label else 'real'}_{seed:04d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(encode(make_image(label, seed, size)))
                rows.append({"path": rel, "label": "ai" if label else "real", "source": source,
                             "generator": f"gen-{source}" if label else ""})
    for i in range(broken):
        rel = f"images/broken_{i}.png"
        (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        rows.append({"path": rel, "label": "ai", "source": "broken", "generator": ""})
    return write_manifest_rows(root, rows)


def write_manifest_rows(root: Path, rows: list[dict]) -> Path:
    """Write ``root/manifest.csv`` (path,label,source,generator) from row dicts."""
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "source", "generator"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def zip_tree(root: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(root).as_posix())
    return archive


def add_copies(manifest: Path, copies: list[tuple[int, str, str | None]]) -> Path:
    """Append byte-identical copies of manifest rows, as CIFAKE's zip holds 599 pairs of identical AI images.

    Each copy is ``(row index, source of the copy, label of the copy or None for the row's own)``.
    """
    root = manifest.parent
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for k, (index, source, label) in enumerate(copies):
        row = rows[index]
        rel = f"images/{source}/copy_{k:03d}_{Path(row['path']).name}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes((root / row["path"]).read_bytes())
        rows.append({**row, "path": rel, "source": source, "label": label or row["label"]})
    return write_manifest_rows(root, rows)
