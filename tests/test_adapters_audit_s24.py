"""Peer adapters, audit s24: how a user's stated class names set the polarity of another publisher's detector.

Guessing or ignoring a stated polarity flips every verdict, so a label override must be obeyed wherever it is
accepted, and a statement that cannot be obeyed (or can be read two ways) must be a one-line error at load.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdetect.images import load_image
from synthdetect.models import load_model
from synthdetect.models.adapters.labels import AdapterError, map_labels, multi_class_mapping, single_output_mapping
from synthdetect.models.adapters.onnx import output_mapping
from synthdetect.models.adapters.timm import head_mapping
from test_adapters import ONNX_SIDECAR, TinyCNN, write_images

WHERE = "onnx:/m.onnx"


class OneLogit(torch.nn.Module):
    """A one-output head (a sigmoid logit), as many published binary detectors have."""

    def __init__(self):
        super().__init__()
        self.body = TinyCNN()

    def forward(self, x):
        out = self.body(x)
        return out[:, 1:] - out[:, :1]


@pytest.fixture(scope="module")
def one_output_graph(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s24_one")
    path = root / "one.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter warns it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(OneLogit().eval(), (torch.randn(1, 3, 20, 24),), str(path), input_names=["pixels"],
                          output_names=["logit"], dynamo=False,
                          dynamic_axes={"pixels": {0: "batch"}, "logit": {0: "batch"}})
    Path(f"{path}.json").write_text(json.dumps({**ONNX_SIDECAR, "labels": ["fake"], "output": "sigmoid_logit"}))
    return path


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(AdapterError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# -- one-output heads: a label override was silently ignored --------------------------------------------------------
def test_a_label_override_sets_the_polarity_of_a_one_output_onnx_model(one_output_graph, tmp_path):
    """'?labels=fake:human' on a one-output model whose class is named 'fake' kept positive=ai: the user's
    stated polarity was ignored and every p_ai was the opposite of what they asked for."""
    images = [load_image(p) for p in write_images(tmp_path, 3, seed=5)]
    plain = load_model(f"onnx:{one_output_graph}")
    assert plain.card["positive"] == "ai"
    flipped = load_model(f"onnx:{one_output_graph}?labels=fake:human")
    assert flipped.card["positive"] == "human"
    np.testing.assert_allclose(flipped.logits(images), -plain.logits(images), atol=1e-9)
    # by index, and in the sidecar's label_map, the same
    assert load_model(f"onnx:{one_output_graph}?labels=0:human").card["positive"] == "human"
    mapped = tmp_path / "mapped.onnx"
    shutil.copy(one_output_graph, mapped)
    Path(f"{mapped}.json").write_text(json.dumps({**ONNX_SIDECAR, "labels": ["fake"], "output": "sigmoid_logit",
                                                  "label_map": {"fake": "human"}}))
    assert load_model(f"onnx:{mapped}").card["positive"] == "human"


def test_a_label_override_states_the_polarity_a_one_output_name_does_not():
    """A one output named 'score' was refused as 'polarity not stated' though '?labels=score:ai' stated it."""
    mapping = output_mapping({"labels": ["score"]}, {"labels": "score:ai"}, 1, WHERE)
    assert (mapping.kind, mapping.positive) == ("sigmoid_logit", "ai")
    # the hf: and timm: one-output paths read the override the same way
    assert single_output_mapping("sigmoid_logit", None, ["LABEL_0"], "hf:x", {"LABEL_0": "human"}).positive == "human"
    assert head_mapping(1, ["fake"], {"labels": "fake:human"}, "timm:x").positive == "human"


def test_a_one_output_override_that_contradicts_or_names_nothing_is_refused():
    assert "positive 'ai' contradicts the label override" in _error(
        output_mapping, {"labels": ["fake"]}, {"labels": "0:human", "positive": "ai"}, 1, WHERE)
    assert "give the one output both polarities" in _error(
        output_mapping, {"labels": ["fake"]}, {"labels": "fake:human,0:ai"}, 1, WHERE)
    assert "['real'] name no class of this model" in _error(
        output_mapping, {"labels": ["fake"]}, {"labels": "real:human"}, 1, WHERE)
    # a positive that agrees with the override is fine
    assert output_mapping({}, {"labels": "0:ai", "positive": "AI"}, 1, WHERE).positive == "ai"


def test_hf_one_output_model_obeys_a_label_override(tmp_path):
    pytest.importorskip("transformers")
    from test_adapters_hf import build_vit

    folder = build_vit(tmp_path / "vit1", labels=("fake",))
    assert load_model(f"hf:{folder}").card["positive"] == "ai"
    assert load_model(f"hf:{folder}?labels=fake:human").card["positive"] == "human"


# -- multi-class heads: 'positive' was silently ignored by hf: and timm: --------------------------------------------
def test_positive_on_a_multi_class_head_is_refused_not_ignored():
    """'?positive=human' on a two-class timm/hf model loaded with the labels' own polarity and said nothing."""
    message = _error(head_mapping, 2, ["real", "fake"], {"positive": "human"}, "timm:x")
    assert "'positive' is for one-output models; this one has 2 outputs" in message
    assert "'positive' is for one-output models" in _error(
        multi_class_mapping, "logits", ["artificial", "human"], {}, "hf:x", positive="ai")
    assert multi_class_mapping("logits", ["artificial", "human"], {}, "hf:x").classes == ["ai", "human"]


# -- overrides that can be read two ways ----------------------------------------------------------------------------
def test_an_override_naming_a_class_by_label_and_by_index_differently_is_refused():
    """'?labels=fake:human,1:ai' with fake at index 1: the name silently won over the index."""
    assert "give class 1 ('fake') both ai and human" in _error(
        map_labels, ["real", "fake"], {"fake": "human", "1": "ai"}, WHERE)
    assert map_labels(["real", "fake"], {"fake": "ai", "1": "ai"}, WHERE) == ["human", "ai"]


def test_an_override_key_that_is_one_class_name_and_another_class_index_is_refused():
    """Labels ["1", "0"] with '?labels=0:ai,1:human': read by name it is the reverse of read by index."""
    assert "label override '0' is ambiguous" in _error(map_labels, ["1", "0"], {"0": "ai", "1": "human"}, WHERE)
    # labels that equal their own index are not ambiguous
    assert map_labels(["0", "1"], {"0": "human", "1": "ai"}, WHERE) == ["human", "ai"]
    assert map_labels(["LABEL_0", "LABEL_1"], {"1": "ai", "0": "human"}, WHERE) == ["human", "ai"]


# -- preprocessing --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rescale, mean, std", [
    (1.0 / 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),  # inputs in [-1, 1]
    (1.0, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # Caffe-style: mean/std in pixel units
    (1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # timm's own units
])
def test_border_mode_pads_with_the_mean_colour_whatever_the_scaling(rescale, mean, std):
    """The border was filled with round(255 * mean): white (255) for a mean of 1 or 123.7, so the model saw a
    white frame, normalised to +1 or +2.2, around every image that was not square, instead of its mean colour."""
    from PIL import Image

    from synthdetect.models.adapters.preprocess import ArrayPreprocess

    prep = ArrayPreprocess(height=16, width=16, crop_pct=1.0, crop_mode="border", rescale=rescale, mean=mean,
                           std=std)
    batch = prep([Image.fromarray(np.full((4, 32, 3), 200, np.uint8))])  # a strip: padded above and below
    corner = batch[0, :, 0, 0]
    np.testing.assert_allclose(corner, 0.0, atol=rescale / min(std))  # the mean colour, to a grey level
    assert np.all(np.abs(batch[0, :, 8, 8] - corner) > 0.5)  # the image itself is there


def test_the_unknown_labels_hint_does_not_suggest_a_polarity():
    """The hint read "e.g. '?labels=LABEL_0:ai,...'": pasted as it stood, it called class 0 AI, a guess that for
    most such models (LABEL_0 is often 'real') flips every verdict."""
    message = _error(map_labels, ["LABEL_0", "LABEL_1"], {}, "hf:org/name")
    assert "'?labels=LABEL_0:ai|human,LABEL_1:ai|human'" in message
    assert "LABEL_0:ai," not in message
    many = _error(map_labels, ["real", "a", "b", "c", "d"], {}, WHERE)
    assert "'?labels=a:ai|human,b:ai|human,c:ai|human,...'" in many
    # pasting the hint unedited is refused, not read as a polarity
    assert "the target must be 'ai' or 'human'" in _error(output_mapping, {"labels": ["LABEL_0", "LABEL_1"]},
                                                          {"labels": "LABEL_0:ai|human,LABEL_1:ai|human"}, 2, WHERE)


# -- keras ----------------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("softmax_layer", [False, True])
def test_a_softmax_over_one_keras_output_is_refused_not_read_as_certainty(tmp_path, softmax_layer):
    """Dense(1, activation='softmax') outputs 1.0 for any image; with a sidecar stating sigmoid_probability and
    positive ai, every image (a camera photo as much as anything) was called 'ai' with p_ai 1.000."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    head = [keras.layers.Dense(1), keras.layers.Softmax()] if softmax_layer else [
        keras.layers.Dense(1, activation="softmax")]
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), *head])
    path = tmp_path / "one_softmax.keras"
    model.save(path)
    Path(f"{path}.json").write_text(json.dumps({"output": "sigmoid_probability", "positive": "ai"}))
    message = _error(load_model, f"keras:{path}")
    assert "one output goes through a softmax, which is 1.0 for every image" in message


# -- onnx: what every image would fail on is one error at load ------------------------------------------------------
class FlatLinear(torch.nn.Module):
    """A head over the flattened image: only 20x24 inputs fit, whatever the exported axes say."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3 * 20 * 24, 2)

    def forward(self, x):
        return self.linear(x.flatten(1))


def _export_symbolic(module: torch.nn.Module, path: Path, axes: dict) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(1, 3, 20, 24),), str(path), input_names=["pixels"],
                          output_names=["logits"], dynamo=False, dynamic_axes=axes)
    return path


def test_a_sidecar_size_a_symbolic_graph_cannot_take_is_one_error_at_load(tmp_path, capfd):
    """Input H and W exported as symbolic, the sidecar's size 32x32 wrong: the model loaded, then every image of
    a batch failed with the same ONNX Runtime 'GEMM: Dimension mismatch' (and ORT logged each to stderr)."""
    path = _export_symbolic(FlatLinear(), tmp_path / "flat.onnx",
                            {"pixels": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n"}})
    Path(f"{path}.json").write_text(json.dumps({"input": {"size": [32, 32]}, "labels": ["real", "fake"]}))
    message = _error(load_model, f"onnx:{path}")
    assert message.startswith(f"onnx:{path}: the graph refuses the input the sidecar describes (32x32 NCHW): ")
    assert "Dimension mismatch" in message
    assert "onnxruntime" not in capfd.readouterr().err  # ORT's own log line is not printed beside it
    Path(f"{path}.json").write_text(json.dumps({"input": {"size": [20, 24]}, "labels": ["real", "fake"]}))
    assert load_model(f"onnx:{path}").card["labels"] == {"real": "human", "fake": "ai"}

