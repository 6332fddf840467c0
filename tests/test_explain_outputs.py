"""What ``explain`` writes: never over its input, whole files or none, replacements said; the occlusion budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthdetect.api import Detector
from synthdetect.explain import explain, explain_loaded
from synthdetect.images import load_image

from test_explain import CARD, NumpyRedness, red_square_png


@pytest.fixture
def cli(monkeypatch):
    """``synthdetect explain`` with the numpy model behind any ``--model``."""
    from synthdetect.cli import app

    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, *a, **k: Detector(NumpyRedness(dict(CARD)),
                                                                                      use_evidence=False)))
    return lambda *args: CliRunner().invoke(app, ["explain", *map(str, args)])


def test_explain_refuses_to_write_the_figure_or_a_map_over_the_input_image(tmp_path: Path, cli):
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    before = photo.read_bytes()
    result = cli(photo, "-o", tmp_path / "." / "photo.png", "--method", "ela")
    assert result.exit_code == 2 and "would be written over the input image" in result.stderr, result.output
    assert photo.read_bytes() == before  # the old code replaced the photo with the figure

    named_like_a_map = tmp_path / "why.ela.png"
    named_like_a_map.write_bytes(red_square_png())
    result = cli(named_like_a_map, "-o", tmp_path / "why.jpg", "--maps", "--method", "ela")
    assert result.exit_code == 2 and "the ela map would be written over" in result.stderr, result.output
    assert named_like_a_map.read_bytes() == before and not (tmp_path / "why.jpg").exists()


def test_explain_says_which_outputs_it_replaced(tmp_path: Path, cli):
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    first = cli(photo, "-o", tmp_path / "why.png", "--maps", "--method", "ela")
    assert first.exit_code == 0, first.output
    assert "replaced" not in first.stdout
    again = cli(photo, "-o", tmp_path / "why.png", "--maps", "--method", "ela")
    assert "wrote figure: " in again.stdout and again.stdout.count("(replaced the existing file)") == 2, again.stdout
    summary = json.loads(cli(photo, "-o", tmp_path / "why.png", "--maps", "--method", "ela", "--json").stdout)
    assert sorted(summary["replaced"]) == sorted(str(tmp_path / n) for n in ("why.png", "why.ela.png"))


def full_disk_for_files(monkeypatch) -> None:
    """Image.save fails half-way into any real file (a full disk); saving into memory (figures, ELA) still works."""
    original = Image.Image.save

    def save(self, fp, format=None, **params):
        if isinstance(fp, (str, Path)) or getattr(fp, "name", None) is not None:
            fp.write(b"\x89PNG\r\n\x1a\n partial") if hasattr(fp, "write") else Path(fp).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return original(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", save)


def test_a_failed_save_leaves_the_earlier_picture_whole_and_no_temporary_file(tmp_path: Path, monkeypatch):
    ex = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["ela"])
    target = ex.save(tmp_path / "why.png")
    before = target.read_bytes()
    full_disk_for_files(monkeypatch)
    with pytest.raises(OSError, match="No space left") as caught:
        ex.save(target)
    assert target.read_bytes() == before  # the old code left the half-written file in its place
    with pytest.raises(OSError):
        ex.save_maps(tmp_path / "why")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["why.png"]  # neither a partial map nor a temporary
    assert caught.value.filename == str(target)  # the file asked for, not the temporary one


def test_cli_reports_an_unwritable_output_in_one_line(tmp_path: Path, cli, monkeypatch):
    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())

    full_disk_for_files(monkeypatch)
    result = cli(photo, "-o", tmp_path / "why.png", "--method", "ela")
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'why.png'}: cannot write the picture (No space left on device)" in result.stderr
    assert "Traceback" not in result.output


def test_occlusion_budget_is_judged_on_a_warm_call_not_the_verdicts_first_call():
    """The verdict's model time includes loading the model; a cheap model must still get the full grid."""
    detector = Detector(NumpyRedness(dict(CARD)), use_evidence=False)
    image = load_image(red_square_png())
    verdict = detector.judge_loaded([(image.source, image)])[0]
    cold = replace(verdict, timing_ms={**verdict.timing_ms, "model": 5000.0})  # a first call that loaded the model
    ex = explain_loaded(detector, image, methods=["occlusion"], verdict=cold, occlusion_budget_s=60)
    reference = explain_loaded(detector, image, methods=["occlusion"], verdict=verdict, occlusion_budget_s=None)
    assert not any("grid to fit" in n or "skipped" in n for n in ex.notes), ex.notes
    assert ex.occlusion is not None and np.allclose(ex.occlusion, reference.occlusion)


def test_cli_shows_occlusion_progress_on_stderr_unless_quiet(tmp_path: Path, cli, monkeypatch):
    from synthdetect.cli import app

    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    shown = cli(photo, "-o", tmp_path / "why.png", "--method", "occlusion")
    assert shown.exit_code == 0, shown.output
    assert "occlusion (redness)" in shown.stderr and "image" in shown.stderr
    assert "occlusion (redness)" not in shown.stdout
    quiet = CliRunner().invoke(app, ["-q", "explain", str(photo), "-o", str(tmp_path / "why.png"),
                                     "--method", "occlusion"])
    assert quiet.exit_code == 0 and "occlusion (" not in quiet.stderr, quiet.stderr


def test_cli_refuses_an_unknown_method_before_loading_the_model(tmp_path: Path):
    from synthdetect.cli import app

    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    result = CliRunner().invoke(app, ["explain", str(photo), "-o", str(tmp_path / "why.png"), "--method", "saliency",
                                      "--model", str(tmp_path / "no-such-model")])
    assert result.exit_code == 2
    assert "unknown explanation method(s): saliency (known: gradcam, occlusion, ela)" in result.stderr, result.stderr


@pytest.mark.parametrize("suffix", [".xbm", ".msp"])
def test_a_suffix_whose_writer_cannot_take_colour_is_refused_before_any_work(tmp_path: Path, suffix):
    """Pillow registers these writers but they take only 1-bit images: the old code failed after all the maps."""
    from synthdetect.cli import app

    photo = tmp_path / "photo.png"
    photo.write_bytes(red_square_png())
    result = CliRunner().invoke(app, ["explain", str(photo), "-o", str(tmp_path / f"why{suffix}"),
                                      "--model", str(tmp_path / "no-such-model")])
    assert result.exit_code == 2 and f"cannot write a '{suffix}' image" in result.stderr, result.output


def test_the_figure_names_the_original_size_not_the_working_copys():
    from synthdetect.explain import render

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, size=(300, 640, 3), dtype=np.uint8))
    ex = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), big, methods=["ela"], max_side=128)
    assert ex.image.shape[:2] == (60, 128)
    assert render.original_title(ex) == "original 640x300 (shown 128x60)"  # the old figure said "original 128x60"
    small = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["ela"])
    assert render.original_title(small) == "original 32x32"
    ex.figure()


@pytest.mark.parametrize("size,grid", [((512, 342), 2), ((512, 342), 3), ((32, 32), 8), ((97, 61), 5), ((8, 300), 8)])
def test_occlusion_calls_counts_the_images_the_model_is_given(size, grid):
    """The budget and the progress bar rely on it; the old count used floor where captum uses ceil (9 vs 12)."""
    from synthdetect.explain.maps import occlusion_calls, occlusion_map

    given: list[int] = []

    class Counting(NumpyRedness):
        batch_size = 16

        def logits(self, images):
            given.append(len(images))
            return super().logits(images)

    width, height = size
    image = load_image(Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)))
    values = occlusion_map(Counting(dict(CARD)), image, grid=grid)
    assert sum(given) == occlusion_calls(height, width, grid)
    assert values.shape == (height, width) and np.isfinite(values).all()


def test_the_figure_writes_characters_its_font_lacks_as_escapes_not_empty_boxes():
    """A note naming 写真.png was drawn as boxes, with one matplotlib 'Glyph missing' warning per character."""
    import warnings

    from synthdetect.explain import render

    ex = explain(Detector(NumpyRedness(dict(CARD)), use_evidence=False), red_square_png(), methods=["ela"])
    ex.notes.append("gradcam failed: RuntimeError: 写真.png 🚀 café")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning from matplotlib
        ex.figure()
    assert render.drawable("写真.png 🚀 café") == "\\u5199\\u771f.png \\U0001f680 café"
