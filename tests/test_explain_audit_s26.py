"""``synthdetect explain -o ""``: an empty output path is refused, not read as the working folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app

from tiny_model import png_bytes


@pytest.mark.parametrize("images", [["img.png"], ["img.png", "img.png"], ["missing.png"], ["-"]])
@pytest.mark.parametrize("out", [["-o", ""], ["--out="]])
def test_explain_refuses_an_empty_out_before_any_work(tmp_path: Path, monkeypatch, images, out):
    """`-o "$OUT"` with OUT unset wrote img.why.png into the working folder (Path("") is "."), exit 0.

    '--model nonesuch' and a missing image would be refused too: the empty path is said first, in one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img.png").write_bytes(png_bytes(seed=1))
    result = CliRunner().invoke(app, ["explain", *images, *out, "--model", "nonesuch"], input=png_bytes(seed=2))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: -o/--out: empty path ("")'), result.stderr
    assert "nonesuch" not in result.stderr and "missing.png" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"], "nothing was written"
