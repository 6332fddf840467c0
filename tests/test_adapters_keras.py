"""``keras:`` adapter on tiny Sequential models saved here as .h5 and .keras, run on the torch backend."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from synthdetect.images import load_image  # noqa: E402
from synthdetect.models import load_model  # noqa: E402
from synthdetect.models.adapters.labels import AdapterError  # noqa: E402
from synthdetect.models.adapters.preprocess import error_level_image  # noqa: E402
from test_adapters import write_images  # noqa: E402

# keras's own predict() on the torch backend (our reference) trips a numpy 2 deprecation inside keras.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _sequential(outputs: int, activation: str, seed: int) -> "keras.Model":
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((24, 24, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(outputs, activation=activation, kernel_initializer=keras.initializers.RandomNormal(0, 3.0)),
    ])


@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras")
    sigmoid = _sequential(1, "sigmoid", 0)
    sigmoid.save(root / "sig.h5")
    sigmoid.save(root / "sig.keras")
    for name in ("sig.h5", "sig.keras"):
        (root / f"{name}.json").write_text(json.dumps({"positive": "human"}))  # the stated polarity
    softmax = _sequential(2, "softmax", 1)
    softmax.save(root / "soft.keras")
    (root / "soft.keras.json").write_text(json.dumps({
        "labels": ["by AI", "by human"], "input": {"resample": "bicubic", "rescale": "1/127.5", "mean": [1, 1, 1]}}))
    return {"sigmoid": sigmoid, "softmax": softmax, "root": root}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("keras_imgs"), 4, seed=5)


def _arrays(paths, resample, scale, offset=0.0):
    """The stated preprocessing, written out by hand for the reference."""
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((24, 24), resample), dtype=np.float32) * scale
                     - offset for p in paths])


@pytest.mark.parametrize("filename", ["sig.h5", "sig.keras"])
def test_sigmoid_model_with_stated_polarity_equals_keras_predict(keras_models, images, filename):
    model = load_model(f"keras:{keras_models['root'] / filename}")
    assert model.card["output"] == "sigmoid_probability" and model.card["positive"] == "human"
    assert model.card["backend"] == "torch"
    p_human = keras_models["sigmoid"].predict_on_batch(_arrays(images, Image.Resampling.BILINEAR, 1 / 255)).ravel()
    assert p_human.max() - p_human.min() > 0.01  # a constant model would make this test vacuous
    p_ai = 1 / (1 + np.exp(-model.logits([load_image(p) for p in images])))
    assert np.allclose(p_ai, 1 - p_human, atol=1e-5)


def test_softmax_model_with_sidecar_scaling_and_labels(keras_models, images):
    model = load_model(f"keras:{keras_models['root'] / 'soft.keras'}")
    assert model.card["labels"] == {"by AI": "ai", "by human": "human"}
    assert model.card["output"] == "probabilities"
    probs = keras_models["softmax"].predict_on_batch(_arrays(images, Image.Resampling.BICUBIC, 1 / 127.5, 1.0))
    ours = model.logits([load_image(p) for p in images])
    assert np.allclose(ours, np.log(probs[:, 0]) - np.log(probs[:, 1]), atol=1e-4)


def test_keras_errors_are_clear(keras_models, tmp_path):
    root = keras_models["root"]
    bare = tmp_path / "bare.h5"
    bare.write_bytes((root / "sig.h5").read_bytes())
    with pytest.raises(AdapterError, match="polarity is not stated"):
        load_model(f"keras:{bare}")
    assert load_model(f"keras:{bare}?positive=ai").card["positive"] == "ai"
    soft = tmp_path / "soft.keras"
    soft.write_bytes((root / "soft.keras").read_bytes())
    with pytest.raises(AdapterError, match="names no labels"):
        load_model(f"keras:{soft}")
    with pytest.raises(AdapterError, match="file not found"):
        load_model(f"keras:{tmp_path}/missing.h5")
    with pytest.raises(AdapterError, match="expected a .h5 or .hdf5 or .keras file"):
        load_model(f"keras:{root / 'sig.h5.json'}")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF junk")
    with pytest.raises(AdapterError, match="not a loadable Keras model"):
        load_model(f"keras:{junk}?positive=ai")


def test_ela_input_matches_the_published_recipe(tmp_path):
    """Re-save at the quality, difference, stretch to 255: the preprocessing of the Keras ELA-CNNs."""
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    ela = np.asarray(error_level_image(im, 90), dtype=np.int32)
    assert ela.max() >= 250  # stretched so the largest difference is (about) 255
    im.save(tmp_path / "r.jpg", "JPEG", quality=90)
    diff = np.abs(np.asarray(im, np.int32) - np.asarray(Image.open(tmp_path / "r.jpg").convert("RGB"), np.int32))
    assert np.corrcoef(ela.ravel(), diff.ravel())[0, 1] > 0.99


def _conv_trunk(seed: int) -> list:
    keras.utils.set_random_seed(seed)
    return [keras.Input((24, 24, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(0, 3.0))]


@pytest.mark.parametrize("head", ["softmax_layer", "activation_layer", "softmax_then_dropout"])
def test_a_softmax_layer_head_is_not_softmaxed_twice(tmp_path, images, head):
    """``Softmax()`` / ``Activation('softmax')`` as the last layer already gives probabilities."""
    extra = {"softmax_layer": [keras.layers.Softmax()],
             "activation_layer": [keras.layers.Activation("softmax")],
             "softmax_then_dropout": [keras.layers.Softmax(), keras.layers.Dropout(0.5)]}[head]
    module = keras.Sequential(_conv_trunk(3) + extra)
    module.save(tmp_path / "m.keras")
    (tmp_path / "m.keras.json").write_text(json.dumps({"labels": ["FAKE", "REAL"]}))
    model = load_model(f"keras:{tmp_path / 'm.keras'}")
    assert model.card["output"] == "probabilities" and model.card["final_activation"] == "softmax"
    probs = module.predict_on_batch(_arrays(images, Image.Resampling.BILINEAR, 1 / 255))
    assert np.allclose(model.logits([load_image(p) for p in images]),
                       np.log(probs[:, 0]) - np.log(probs[:, 1]), atol=1e-4)


def test_an_undetermined_output_activation_is_probed_or_refused(tmp_path, images):
    """A last layer that does not say (here a Reshape) is settled by a probe batch, or refused in one line."""
    hidden = keras.Sequential(_conv_trunk(4) + [keras.layers.Softmax(), keras.layers.Reshape((2,))])
    hidden.save(tmp_path / "hidden.keras")
    (tmp_path / "hidden.keras.json").write_text(json.dumps({"labels": ["FAKE", "REAL"]}))
    model = load_model(f"keras:{tmp_path / 'hidden.keras'}")
    assert model.card["final_activation"] == "unknown" and model.card["output"] == "probabilities"
    assert model.card["output_from"].startswith("probe batch")
    probs = hidden.predict_on_batch(_arrays(images, Image.Resampling.BILINEAR, 1 / 255))
    assert np.allclose(model.logits([load_image(p) for p in images]),
                       np.log(probs[:, 0]) - np.log(probs[:, 1]), atol=1e-4)
    relu = keras.Sequential(_conv_trunk(5) + [keras.layers.ReLU()])
    relu.save(tmp_path / "relu.keras")
    (tmp_path / "relu.keras.json").write_text(json.dumps({"labels": ["FAKE", "REAL"]}))
    with pytest.raises(AdapterError, match="cannot tell whether the outputs are logits or probabilities"):
        load_model(f"keras:{tmp_path / 'relu.keras'}")
    (tmp_path / "relu.keras.json").write_text(json.dumps({"labels": ["FAKE", "REAL"], "output": "logits"}))
    assert load_model(f"keras:{tmp_path / 'relu.keras'}").card["output_from"] == "sidecar"
