"""ELA and spectrum helpers (used by reports) and the ``synthdetect inspect`` command."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from evidence_fakes import WEBUI_PARAMETERS, encode, png_with_text, textured_rgb
from synthdetect.cli import app
from synthdetect.evidence import probe_names, run_probes
from synthdetect.evidence.ela import ela_difference, ela_features, ela_image
from synthdetect.evidence.spectrum import power_spectrum, spectrum_features, spectrum_image
from synthdetect.images import load_image


def test_ela_shows_a_pasted_region():
    base = textured_rgb(256, seed=1)
    once = np.asarray(Image.open(__import__("io").BytesIO(encode(base, "JPEG", quality=70))))
    pasted = once.copy()
    pasted[64:128, 64:128] = base[64:128, 64:128]  # never compressed: re-saves differently
    diff = ela_difference(Image.fromarray(pasted)).mean(axis=2)
    inside, outside = diff[72:120, 72:120].mean(), diff[160:240, 160:240].mean()
    assert inside > 1.5 * outside
    picture = ela_image(Image.fromarray(pasted))
    assert picture.mode == "RGB" and picture.size == (256, 256) and np.asarray(picture).max() == 255
    assert set(ela_features(Image.fromarray(pasted))) == {"quality", "mean", "std", "p99", "tile_mean_spread"}


def test_spectrum_separates_white_noise_from_natural_falloff():
    """White noise has a flat spectrum; smooth natural-looking content falls off steeply with frequency."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(textured_rgb(256, seed=2)).filter(ImageFilter.GaussianBlur(1.5)))
    freqs, profile = power_spectrum(noise)
    assert freqs[0] == 0 and freqs[-1] == 1 and len(freqs) == 128
    noisy, natural = spectrum_features(noise), spectrum_features(smooth)
    assert abs(noisy["high_minus_mid"]) < 0.2 and abs(noisy["log_slope"]) < 0.5
    assert natural["log_slope"] < noisy["log_slope"] - 1.0
    picture = spectrum_image(Image.fromarray(smooth))
    assert picture.mode == "L" and picture.size == (256, 256)


def test_forensic_probes_run_only_on_request():
    loaded = load_image(encode(textured_rgb(300), "PNG"))
    assert {"ela", "spectrum"} <= set(probe_names())
    assert "ela" not in probe_names(include_on_request=False)
    assert run_probes(loaded) == []
    kinds = {e.kind: e for e in run_probes(loaded, ["ela", "spectrum"])}
    assert set(kinds) == {"ela", "spectrum"} and all(e.signal == "none" for e in kinds.values())


def test_inspect_json_and_table(tmp_path):
    good = tmp_path / "webui.png"
    good.write_bytes(png_with_text(textured_rgb(300), {"parameters": WEBUI_PARAMETERS}))
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(encode(textured_rgb(300, seed=3), "JPEG"))
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(good), str(plain), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == [str(good), str(plain)]
    kinds = {e["kind"] for e in rows[0]["evidence"]}
    assert {"genparams", "ela", "spectrum"} <= kinds
    assert not [e for e in rows[1]["evidence"] if e["signal"] == "ai"]
    table = runner.invoke(app, ["inspect", str(plain), str(good)])
    assert table.exit_code == 0
    assert "no provenance or metadata found" in table.stdout and "Stable Diffusion WebUI" in table.stdout
    assert "watermark not checked: JPEG compressed" in table.stdout  # not "no watermark found": never decoded
    bracketed = tmp_path / "bracket.png"
    params = WEBUI_PARAMETERS.replace("Model: sd_xl_base_1.0", "Model: IL_Deliberate [deliberate_v2]")
    bracketed.write_bytes(png_with_text(textured_rgb(300), {"parameters": params}))
    shown = runner.invoke(app, ["inspect", str(bracketed), "-p", "genparams"], env={"COLUMNS": "200"})
    assert "[deliberate_v2]" in shown.stdout, "file-supplied text must not be read as Rich markup"
    (tmp_path / "notes.txt").write_text("no image suffix")
    folder = runner.invoke(app, ["inspect", str(tmp_path), "--format", "json", "-p", "genparams"])
    assert "1 non-image file(s) in the folders were not inspected" in folder.stderr  # never a silent skip


def test_inspect_bad_files_exit_3_and_unknown_probe_exits_2(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    result = CliRunner().invoke(app, ["inspect", str(broken), str(tmp_path / "missing.png"), "-f", "jsonl"])
    assert result.exit_code == 3
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["error"] for r in lines) and "not an image" in lines[0]["error"]
    assert CliRunner().invoke(app, ["inspect", str(broken), "--probe", "nope"]).exit_code == 2


def test_inspect_reads_an_image_piped_in_and_a_list_of_paths(tmp_path):
    """``curl -s URL | synthdetect inspect -``: provenance of a picture that was never saved."""
    data = png_with_text(textured_rgb(300), {"parameters": WEBUI_PARAMETERS})
    piped = CliRunner().invoke(app, ["inspect", "-", "-f", "jsonl", "-p", "genparams"], input=data)
    assert piped.exit_code == 0, piped.output
    row = json.loads(piped.stdout)
    assert row["file"] == "<stdin>" and [e["signal"] for e in row["evidence"]] == ["ai"]
    saved = tmp_path / "webui.png"
    saved.write_bytes(data)
    (tmp_path / "list.txt").write_text("webui.png\nmissing.png\n")  # relative to the list's folder
    listed = CliRunner().invoke(app, ["inspect", "--files-from", str(tmp_path / "list.txt"), "-f", "jsonl",
                                      "-p", "genparams"])
    assert listed.exit_code == 3
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(saved), str(tmp_path / "missing.png")]
    assert rows[0]["evidence"] == row["evidence"] and rows[1]["error"].endswith("file not found")
