"""The model package: card + weights, sha256 verified at load, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthdetect.models import ModelPackageError, find_package, load_model
from synthdetect.models.package import load_package


def test_package_round_trip_predictions_identical(tiny_package):
    from badinputs import natural_image
    from synthdetect.images import load_image

    images = [load_image(natural_image(32, 32, seed=s)) for s in range(4)]
    first = load_model(str(tiny_package.root)).logits(images)
    second = load_model(str(tiny_package.root / "model.json")).logits(images)
    assert np.array_equal(first, second)


def test_hash_mismatch_is_refused(tiny_package):
    weights = tiny_package.file("weights")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="sha256 mismatch for weights.pt.*refusing to load"):
        load_package(tiny_package.root)


def test_missing_weights_file(tiny_package):
    tiny_package.file("weights").unlink()
    with pytest.raises(ModelPackageError, match="weight file missing"):
        load_model(str(tiny_package.root))


def test_malformed_and_incomplete_cards(tmp_path):
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="malformed card"):
        load_package(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelPackageError, match="card has no 'kind'"):
        load_package(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"name": "x", "kind": "nonesuch"}))
    with pytest.raises(ModelPackageError, match="unknown model kind 'nonesuch'"):
        load_model(str(tmp_path))


def test_unknown_name_lists_shipped_models():
    with pytest.raises(ModelPackageError, match="unknown model 'no-such-model'.*default"):
        find_package("no-such-model")


def test_shipped_packages_verify():
    from synthdetect.models import builtin_names

    names = builtin_names()
    assert "default" in names and "cifake-cnn" in names
    for name in names:
        package = find_package(name)  # hash-checks every weight file
        assert package.card["name"] == name


def test_a_local_folder_named_like_a_shipped_model_does_not_shadow_it(tmp_path, monkeypatch, caplog):
    from synthdetect.models import BUILTIN_DIR

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifake-cnn").mkdir()
    with caplog.at_level("WARNING", logger="synthdetect.models"):
        package = find_package("cifake-cnn")
    assert package.root == BUILTIN_DIR / "cifake-cnn"
    assert "shipped model, used here" in caplog.text and "./cifake-cnn" in caplog.text
    with pytest.raises(ModelPackageError, match="not a model package"):
        find_package("./cifake-cnn")  # written as a path: the local folder, as asked


@pytest.mark.parametrize("edit, why", [
    (lambda c: c.update(kind=["small-cnn"]), "'kind' must be a non-empty string"),
    (lambda c: c.update(input=[32, 32]), "'input' must be an object"),
    (lambda c: c["input"].update(size="32"), "input.size must be"),
    (lambda c: c["input"].update(size=[0, 32]), "input.size must be"),
    (lambda c: c["input"].update(mean="x"), "input.mean must be three numbers"),
    (lambda c: c["input"].update(std=[0.5, 0, 0.5]), "input.std must be three numbers"),
    (lambda c: c["input"].update(resample="box2"), "input.resample"),
    (lambda c: c["input"].update(max_aspect="2"), "input.max_aspect must be a number"),
    (lambda c: c.update(calibration={"method": "temprature", "temperature": 0.5}), "calibration method"),
    (lambda c: c.update(calibration={"method": "temperature", "temperature": float("nan")}),
     "temperature calibration needs a positive number"),
    (lambda c: c.update(decision={"ai_at_or_above": "0.6", "human_below": 0.4}), "decision.ai_at_or_above"),
    (lambda c: c.update(runtime="onnx"), "'runtime' must be an object"),
    (lambda c: c.update(calibration={"method": "platt", "a": -1.0, "b": 0.0}),
     "platt calibration slope 'a' -1.0 is negative"),
    (lambda c: c.update(decision={"ai_at_or_above": 0.3, "human_below": 0.7}),
     "decision.human_below 0.7 is above ai_at_or_above 0.3"),
])
def test_a_card_with_a_field_of_the_wrong_type_is_one_line_naming_the_card(tmp_path, edit, why):
    """These used to load and fail later with a traceback (often only at the first image), or, for an unknown
    calibration method, to serve uncalibrated probabilities without a word."""
    from typer.testing import CliRunner

    from synthdetect.cli import app
    from tiny_model import png_bytes, write_tiny_cnn

    root = write_tiny_cnn(tmp_path / "pkg")
    card = json.loads((root / "model.json").read_text())
    edit(card)
    (root / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match=f"model.json: malformed card \\({why}"):
        load_package(root)
    (tmp_path / "x.png").write_bytes(png_bytes((40, 32)))
    result = CliRunner().invoke(app, ["detect", "--model", str(root), "--no-evidence", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "malformed card" in result.output and "Traceback" not in result.output


def test_weights_torch_cannot_read_or_a_card_its_kind_cannot_build_from_is_a_one_line_error(tmp_path):
    """The hashes match (the card was written for these files), so only building the model finds the fault."""
    from synthdetect.models.package import write_package
    from tiny_model import write_tiny_cnn

    root = write_tiny_cnn(tmp_path / "truncated")
    weights = root / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    card = json.loads((root / "model.json").read_text())
    write_package(root, card, {"weights": weights})
    with pytest.raises(ModelPackageError, match=r"truncated: model 'tiny-cnn' \(kind small-cnn\) could not be loaded: "
                                                r"RuntimeError: "):
        load_model(str(root))
    root = write_tiny_cnn(tmp_path / "no-arch")
    card = json.loads((root / "model.json").read_text())
    del card["architecture"]
    write_package(root, card, {"weights": root / "weights.pt"})
    with pytest.raises(ModelPackageError,
                       match="no-arch: model 'tiny-cnn' .*could not be loaded: KeyError: 'architecture'"):
        load_model(str(root))


@pytest.mark.parametrize("where", ["../elsewhere/weights.pt", "/abs/weights.pt", "sub/../../weights.pt"])
def test_a_card_that_lists_a_file_outside_its_package_is_refused(tiny_package, tmp_path, where):
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "weights.pt").write_bytes(tiny_package.file("weights").read_bytes())  # same bytes, same sha256
    card_path = tiny_package.root / "model.json"
    card = json.loads(card_path.read_text())
    card["files"]["weights"]["path"] = where
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match=f"malformed card \\(files entry 'weights' points outside the package"):
        load_package(tiny_package.root)


@pytest.mark.parametrize("edit, why", [
    (lambda r: r[0]["calibration"].update(method="plat"), "routes[0].calibration method \"plat\""),
    (lambda r: r[0]["decision"].update(ai_at_or_above="0.7"), "routes[0].decision.ai_at_or_above must be a number"),
    (lambda r: r[0].update(max_short_side="64"), "routes[0].max_short_side must be a number"),
])
def test_a_router_route_with_a_field_of_the_wrong_type_is_one_line(tmp_path, edit, why):
    """A route's calibration is applied to the model it names: a misspelt method served uncalibrated p_ai."""
    import shutil

    router = tmp_path / "router"
    shutil.copytree(find_package("default").root, router)
    card = json.loads((router / "model.json").read_text())
    edit(card["routes"])
    (router / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match="malformed card") as info:
        load_package(router)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_write_package_renders_the_markdown_card_with_the_given_renderer(tmp_path):
    """train-wild wrote the generic MODEL_CARD.md and then its own over it; a kind's renderer now writes it once."""
    from synthdetect.models.package import write_package

    (tmp_path / "w.bin").write_bytes(b"w")
    card = {"name": "m", "kind": "small-cnn", "version": "1.0.0"}
    write_package(tmp_path, card, {"weights": tmp_path / "w.bin"}, render=lambda c: f"# {c['name']} own\n")
    assert (tmp_path / "MODEL_CARD.md").read_text() == "# m own\n"
    write_package(tmp_path, card, {"weights": tmp_path / "w.bin"})
    assert (tmp_path / "MODEL_CARD.md").read_text().startswith("# m 1.0.0")


def test_a_file_that_is_not_a_card_is_not_a_model_package(tmp_path):
    """`-m photo.png` said "photo.png: malformed card (not UTF-8 text: byte 0)"."""
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    with pytest.raises(ModelPackageError, match=r"photo.png: not a model package \(a package is a folder holding "
                                                r"model.json, or the path of that card; this is a .png file\)"):
        load_package(tmp_path / "photo.png")


def test_the_markdown_card_says_when_there_is_no_uncertain_band_and_what_the_rule_did_held_out():
    """A card whose two thresholds met read "`uncertain` in between" (there was nothing between), and the people's
    card never said how many held-out human images its rule called ``ai``: the false-positive rate a user meets."""
    from synthdetect.models.package import card_markdown

    decision = {"ai_at_or_above": 0.7, "human_below": 0.7, "uncertain_band_empty": True,
                "note": "the uncertain band is empty: the thresholds meet"}
    bands = {"human_images": {"ai": 41, "human": 1961, "uncertain": 0}, "ai_images": {"ai": 1889, "human": 61,
                                                                                     "uncertain": 0}}
    card = {"name": "m", "kind": "clip-cascade", "version": "2.0.0", "decision": decision,
            "metrics": {"test": {"verdict_bands": bands}},
            "cascade": {"tau": 1.85, "encoder": {"name": "clip-vit-b16-int8"},
                        "validation": {"band_images": 594, "n": 3960, "cnn_right": 3858, "cascade_right": 3884}}}
    text = card_markdown(card)
    assert "`uncertain` in between" not in text and "- the uncertain band is empty: the thresholds meet" in text
    assert "held out, this rule called 41 of 2002 human images `ai` and 0 `uncertain`" in text
    assert "(594 of 3960 validation images); validation right: CNN alone 3858, cascade 3884" in text
    decision.pop("uncertain_band_empty")
    assert "- `uncertain` in between" in card_markdown(card)
