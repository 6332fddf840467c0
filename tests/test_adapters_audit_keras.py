"""``keras:`` adapter on files a user really meets: truncated archives, several outputs, a KERAS_BACKEND whose
library is missing, a sidecar batch size.  Built here as tiny models; skipped where keras is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="the keras extra is not installed (pip install 'synthdetect[keras]')")

from synthdetect.images import load_image  # noqa: E402
from synthdetect.models import load_model  # noqa: E402
from synthdetect.models.adapters.labels import AdapterError  # noqa: E402
from test_adapters import write_images  # noqa: E402

# saving on the torch backend trips a numpy 2 deprecation inside keras
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _softmax_model(path):
    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(2, activation="softmax")]).save(path)
    (path.parent / f"{path.name}.json").write_text(json.dumps({"labels": ["fake", "real"]}))
    return path


def test_a_truncated_keras_archive_is_not_called_missing(tmp_path):
    """Keras answers 'File not found: filepath=...' for a .keras file that is there but cut short."""
    whole = _softmax_model(tmp_path / "whole.keras")
    cut = tmp_path / "cut.keras"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (tmp_path / "cut.keras.json").write_text(json.dumps({"labels": ["fake", "real"]}))
    with pytest.raises(AdapterError) as info:
        load_model(f"keras:{cut}")
    message = str(info.value)
    assert "not a .keras zip archive" in message and "File not found" not in message and "\n" not in message


def test_a_model_with_two_outputs_is_a_one_line_error(tmp_path):
    """It was a TypeError traceback ('int() argument must be ... not tuple')."""
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    two = keras.Model(inputs, [keras.layers.Dense(2, activation="softmax")(pooled),
                               keras.layers.Dense(1, activation="sigmoid")(pooled)])
    two.save(tmp_path / "two.keras")
    (tmp_path / "two.keras.json").write_text(json.dumps({"labels": ["fake", "real"]}))
    with pytest.raises(AdapterError, match=r"expected one image input and one output, the model has 2 outputs"):
        load_model(f"keras:{tmp_path / 'two.keras'}")


@keras.saving.register_keras_serializable(package="synthdetect_tests")
class _UnsizedScores(keras.layers.Layer):
    """Two logits per image, from a layer that does not state its output's size (as custom heads often do not)."""

    def call(self, x):
        pooled = keras.ops.mean(x, axis=(1, 2))
        return keras.ops.stack([pooled[:, 0] - pooled[:, 1], pooled[:, 1] - pooled[:, 2]], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)


def test_an_output_of_unstated_size_is_counted_on_a_probe(tmp_path):
    """``(None, None)`` from a custom last layer was a TypeError traceback (int(None))."""
    inputs = keras.Input((16, 16, 3))
    keras.Model(inputs, _UnsizedScores()(inputs)).save(tmp_path / "unsized.keras")
    assert keras.saving.load_model(tmp_path / "unsized.keras").output_shape == (None, None)
    (tmp_path / "unsized.keras.json").write_text(json.dumps({"labels": ["fake", "real"], "output": "logits"}))
    model = load_model(f"keras:{tmp_path / 'unsized.keras'}")
    images = [load_image(p) for p in write_images(tmp_path / "imgs", 3, seed=5)]
    assert model.logits(images).shape == (3,)
    inputs = keras.Input((16, 16, 3))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "map.keras")  # a score map, not a row
    (tmp_path / "map.keras.json").write_text(json.dumps({"labels": ["fake", "real"], "output": "logits"}))
    with pytest.raises(AdapterError, match=r"expected one row of scores per image \(None, K\), the model gives "
                                           r"\(None, 16, 16, 2\)"):
        load_model(f"keras:{tmp_path / 'map.keras'}")


def test_the_sidecar_batch_size_is_used(tmp_path):
    """Documented for the sidecar, it was read by onnx: only; keras: ran 16 at a time whatever it said."""
    path = _softmax_model(tmp_path / "m.keras")
    (tmp_path / "m.keras.json").write_text(json.dumps({"labels": ["fake", "real"], "batch_size": 3}))
    assert load_model(f"keras:{path}").batch_size == 3


def test_a_missing_keras_backend_is_named_not_reported_as_missing_keras(tmp_path):
    """KERAS_BACKEND=tensorflow without tensorflow said "keras models need keras (pip install ...)"."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed here, so that backend imports")
    path = _softmax_model(tmp_path / "m.keras")
    code = ("from synthdetect.models import load_model\n"
            f"try:\n    load_model({f'keras:{path}'!r})\nexcept Exception as exc:\n    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    message = run.stdout.strip().splitlines()[-1]
    assert "keras is installed but cannot import its backend 'tensorflow' (KERAS_BACKEND" in message, run.stderr[-800:]
    assert "unset KERAS_BACKEND" in message


@pytest.mark.parametrize("setting, message", [
    ({"layout": "NCHW"}, r"sidecar input.layout 'NCHW' contradicts the graph's input shape \[None, 16, 16, 3\]"),
    ({"size": [32, 32]}, r"sidecar input.size \[32, 32\] contradicts .*\(fixed 16x16\)"),
])
def test_sidecar_settings_the_keras_model_contradicts_are_refused_at_load(tmp_path, setting, message):
    """layout NCHW loaded, then every image failed with Keras's multi-line 'incompatible with the layer'; a size
    other than the model's fixed input was fed to it unchecked."""
    path = _softmax_model(tmp_path / "m.keras")
    (tmp_path / "m.keras.json").write_text(json.dumps({"labels": ["fake", "real"], "input": setting}))
    with pytest.raises(AdapterError, match=message) as info:
        load_model(f"keras:{path}")
    assert "\n" not in str(info.value)
