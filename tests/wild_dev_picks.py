"""Real wild-dev photos picked by a fixed rule, never by score, for the tests that re-encode or shrink them."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image


def first_real_jpegs(wild_dev: Path, sources: tuple[str, ...], min_short_side: int = 0) -> dict[str, Path]:
    """The first real JPEG of each named source, in manifest order, whose short side is at least ``min_short_side``."""
    picked: dict[str, Path] = {}
    with open(wild_dev / "manifest.csv") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "real" and row["source"] in sources and row["source"] not in picked:
                with Image.open(wild_dev / row["path"]) as im:
                    if im.format == "JPEG" and min(im.size) >= min_short_side:
                        picked[row["source"]] = wild_dev / row["path"]
    return picked
