"""``synthdetect inspect`` over many files: findings appear file by file; a probe that did not look says so."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.evidence import commands


def noisy(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def write(path: Path, picture: Image.Image, **options) -> Path:
    picture.save(path, **options)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_findings_are_written_as_each_file_is_inspected(tmp_path: Path, monkeypatch, fmt):
    files = [write(tmp_path / f"{i}.png", noisy((40, 40), seed=i)) for i in range(3)]
    seen_before: list[str] = []
    inspect_one = commands.inspect_file

    def recording(path, probes=None, source=None):
        seen_before.append(sys.stdout.buffer.getvalue().decode())  # what the user had read when this file began
        return inspect_one(path, probes, source)

    monkeypatch.setattr(commands, "inspect_file", recording)
    result = CliRunner().invoke(app, ["inspect", *map(str, files), "-p", "exif", "-f", fmt])
    assert result.exit_code == 0, result.output
    assert len(seen_before) == 3
    assert str(files[0]) in seen_before[1] and str(files[1]) in seen_before[2], seen_before
    assert str(files[1]) not in seen_before[1]
    if fmt == "jsonl":
        assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [str(f) for f in files]


def test_a_watermark_not_decoded_is_not_reported_as_not_found(tmp_path: Path):
    small = write(tmp_path / "small.png", noisy((200, 120)))
    coarse = write(tmp_path / "coarse.jpg", noisy((400, 300)), quality=75)
    decoded = write(tmp_path / "decoded.png", noisy((300, 300)))
    result = CliRunner().invoke(app, ["inspect", str(small), str(coarse), str(decoded), "-p", "watermark",
                                      "-p", "spectrum", "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["small.png"]["not_checked"]["watermark"] == (
        "image is 120 px on its short side; the marks need at least 256 px")
    assert "quality 90 or coarser" in rows["coarse.jpg"]["not_checked"]["watermark"]
    assert rows["decoded.png"]["not_checked"] == {}

    table = CliRunner().invoke(app, ["inspect", str(small), str(decoded), "-p", "watermark"]).stdout
    small_part, decoded_part = table.split(str(decoded))
    assert "watermark not checked: image is 120 px on its short side" in small_part
    assert "watermark found" not in small_part  # the old table said "no ... watermark found" of an image never decoded
    assert "no watermark found" in decoded_part and "metadata" not in decoded_part  # only the watermark looked


def test_a_spectrum_too_small_to_profile_says_so(tmp_path: Path):
    strip = write(tmp_path / "strip.png", noisy((600, 20)))
    row, = map(json.loads, CliRunner().invoke(app, ["inspect", str(strip), "-p", "spectrum", "-f", "jsonl"])
               .stdout.splitlines())
    assert row["evidence"] == []
    assert row["not_checked"] == {"spectrum": "image is 20 px on its short side; the spectrum needs at least 32 px"}
    bigger = write(tmp_path / "square.png", noisy((32, 32)))
    row, = map(json.loads, CliRunner().invoke(app, ["inspect", str(bigger), "-p", "spectrum", "-f", "jsonl"])
               .stdout.splitlines())
    assert [e["kind"] for e in row["evidence"]] == ["spectrum"] and row["not_checked"] == {}


def test_a_json_array_shows_progress_on_stderr_unless_quiet(tmp_path: Path):
    files = [str(write(tmp_path / f"{i}.png", noisy((40, 40), seed=i))) for i in range(2)]
    shown = CliRunner().invoke(app, ["inspect", *files, "-p", "exif", "-f", "json"])
    assert shown.exit_code == 0 and [r["file"] for r in json.loads(shown.stdout)] == files
    assert "inspect" in shown.stderr and "100%" in shown.stderr, shown.stderr
    quiet = CliRunner().invoke(app, ["-q", "inspect", *files, "-p", "exif", "-f", "json"])
    assert quiet.exit_code == 0 and "100%" not in quiet.stderr


def test_the_nothing_found_line_names_only_the_probes_that_looked(tmp_path: Path):
    """It said "no provenance, metadata or watermark found" whichever probes ran (`-p exif` looked for no watermark)."""
    plain = write(tmp_path / "plain.png", noisy((300, 300)))

    def line(*probes: str) -> str:
        out = CliRunner().invoke(app, ["inspect", str(plain), *[a for p in probes for a in ("-p", p)]]).stdout
        return next((row.strip() for row in out.splitlines() if row.strip().startswith("no ")), "")

    assert line("exif") == "no metadata found (absence is not evidence either way)"
    assert line("c2pa", "watermark") == "no provenance or watermark found (absence is not evidence either way)"
    assert line() == "no provenance, metadata or watermark found (absence is not evidence either way)"
    assert line("ela") == ""  # a view looks for nothing
