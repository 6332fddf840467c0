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
