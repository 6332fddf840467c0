"""Peer adapters (onnx:, timm: options, shared sidecar and label code) on the inputs a demanding user gives them:
malformed sidecars, graphs with a fixed or fused-quantised batch, paths with ``?``, outputs that are not what the
sidecar says.  Each case is a one-line error at load or a correct score, never a traceback or a silent change."""

from __future__ import annotations

import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from synthdetect.images import load_image
from synthdetect.models import load_model
from synthdetect.models.adapters.base import split_options
from synthdetect.models.adapters.labels import AdapterError, OutputMapping, map_labels
from test_adapters import ONNX_SIDECAR, TinyCNN, write_images

INPUT = ONNX_SIDECAR["input"]


def _export(path: Path, batch: int | None, module: torch.nn.Module | None = None, shape=(3, 20, 24)) -> Path:
    """The test CNN as ONNX: ``batch=None`` for a dynamic batch dimension, else fixed at ``batch``."""
    module = (module or TinyCNN()).eval()
    with warnings.catch_warnings():  # the TorchScript exporter warns it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(batch or 1, *shape),), str(path), input_names=["pixels"],
                          output_names=["logits"], dynamo=False,
                          dynamic_axes=None if batch else {"pixels": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("audit_onnx") / "tiny.onnx", None)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return [load_image(p) for p in write_images(tmp_path_factory.mktemp("audit_imgs"), 5, seed=11)]


def _with_sidecar(graph: Path, folder: Path, sidecar, name: str = "m.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / name
    shutil.copy(graph, copy)
    Path(f"{copy}.json").write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar), encoding="utf-8")
    return copy


def _one_line_error(spec: str) -> str:
    with pytest.raises(AdapterError) as info:
        load_model(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- sidecar keys of the wrong type --------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"input": None}, "input must be an object, not null"),
    ({"labels": 5}, "labels must be a list of class names in output order, not 5"),
    ({"labels": "REAL,FAKE"}, "labels must be a list of class names"),  # was read as 9 one-letter labels
    ({"labels": [0, 1]}, r"labels must be class names \(strings\)"),
    ({"labels": {"a": "REAL", "b": "FAKE"}}, "labels given as an object need output indices as keys"),
    ({"labels": {"0": "REAL", "2": "FAKE"}}, r"labels keys must be every output index from 0 to 1, not \[0, 2\]"),
    ({"labels": ["a", "b"], "label_map": ["a:ai"]}, "label_map must be an object"),
    ({"labels": ["a", "b"], "label_map": {"a": "ai", "b": 1}}, "label override 'b:1'"),
    ({"name": 5}, "name must be a string, not 5"),
    ({"schema": 1}, r"unknown sidecar key\(s\) \['schema'\]"),
    ({"batch_size": 0}, "batch_size must be a positive whole number, not 0"),
    ({"batch_size": -3}, "batch_size must be a positive whole number, not -3"),
    ({"batch_size": 2.7}, "batch_size must be a positive whole number, not 2.7"),
    ({"batch_size": "abc"}, "batch_size must be a positive whole number"),
    ({"batch_size": None}, "batch_size must be a positive whole number, not null"),
])
def test_a_sidecar_key_of_the_wrong_type_is_a_one_line_error_naming_the_file(graph, tmp_path, change, message):
    """These raised TypeError/ValueError/AttributeError tracebacks, or loaded and then failed (batch_size 0) or
    silently scored nothing (batch_size -3) for every image, or read {"0", "2"} as two consecutive outputs."""
    model = _with_sidecar(graph, tmp_path, {**ONNX_SIDECAR, **change})
    error = _one_line_error(f"onnx:{model}")
    assert "m.onnx" in error and re.search(message, error), error


@pytest.mark.parametrize("setting, message", [
    ("NaN", r"input.mean must be finite in every channel, not \[nan, 0.0, 0.0\]"),  # every score was NaN
    ("Infinity", r"input.mean must be finite in every channel, not \[inf, 0.0, 0.0\]"),
    ('"nan"', "input.mean must be a number, not 'nan'"),
])
def test_a_mean_that_makes_every_score_nan_is_refused_at_load(graph, tmp_path, setting, message):
    text = json.dumps(ONNX_SIDECAR).replace('"mean": [0.485', f'"mean": [{setting}').replace(", 0.456, 0.406]",
                                                                                         ", 0, 0]")
    model = _with_sidecar(graph, tmp_path, text)
    assert re.search(message, _one_line_error(f"onnx:{model}"))


@pytest.mark.parametrize("setting, message", [
    ({"ela_quality": "90"}, "input.ela_quality must be a whole number, not '90'"),
    ({"ela_quality": 90.5}, "input.ela_quality must be a whole number, not 90.5"),
    ({"ela_quality": True}, "input.ela_quality must be a whole number, not True"),
    ({"ela_quality": 200}, "input.ela_quality must be a JPEG quality from 1 to 100, not 200"),
    ({"ela_quality": 0}, "input.ela_quality must be a JPEG quality from 1 to 100, not 0"),
    ({"crop_pct": 0}, "input.crop_pct must be a positive fraction such as 0.875, not 0"),
    ({"crop_pct": -1}, "input.crop_pct must be a positive fraction"),
    ({"crop_pct": "0.875"}, "input.crop_pct must be a number, not '0.875'"),
    ({"size": 20.5}, "input.size must be a whole number, not 20.5"),
    ({"size": None}, r"input.size must be one number or \[height, width\], not None"),
    ({"size": True}, r"input.size must be one number or \[height, width\], not True"),
    ({"rescale": True}, "input.rescale must be a number, not True"),
    ({"mean": 0.5}, r"input.mean needs three numbers \(one per channel\), not 0.5"),
])
def test_input_settings_that_would_fail_every_image_are_refused_at_load(graph, tmp_path, setting, message):
    """ela_quality '90' and crop_pct 0 loaded, then every image failed ('Invalid quality setting',
    'division by zero'); size 20.5 or null was a TypeError traceback; true was read as 1."""
    model = _with_sidecar(graph, tmp_path, {**ONNX_SIDECAR, "input": {**INPUT, **setting}})
    error = _one_line_error(f"onnx:{model}")
    assert error.startswith(f"onnx:{model}: ") and re.search(message, error), error


def test_a_sidecar_with_a_byte_order_mark_and_upper_case_filter_names_loads(graph, tmp_path, images):
    plain = load_model(f"onnx:{_with_sidecar(graph, tmp_path / 'plain', ONNX_SIDECAR)}")
    windows = "\ufeff" + json.dumps({**ONNX_SIDECAR, "input": {**INPUT, "resample": "BICUBIC"}})
    model = load_model(f"onnx:{_with_sidecar(graph, tmp_path / 'windows', windows)}")
    assert model.card["preprocessing"]["resample"] == "bicubic"
    np.testing.assert_array_equal(model.logits(images), plain.logits(images))


# -- outputs and polarity -------------------------------------------------------------------------------------------
def test_logits_declared_as_probabilities_are_refused_not_read_as_certainty(graph, tmp_path, images):
    """The sidecar says probabilities, the graph gives logits: p_ai was 1e-11 (log-odds -25), silently."""
    model = load_model(f"onnx:{_with_sidecar(graph, tmp_path, {**ONNX_SIDECAR, 'output': 'probabilities'})}")
    with pytest.raises(AdapterError, match=r"outputs declared 'probabilities' are not probabilities .*"
                                           r"state \"output\": \"logits\"") as info:
        model.logits(images)
    assert str(info.value).startswith(f"onnx:{tmp_path / 'm.onnx'}: ")
    probabilities = OutputMapping("probabilities", ["REAL", "FAKE"], map_labels(["REAL", "FAKE"], None, "m"))
    p = np.array([[0.25, 0.75], [0.9999999, 1e-7]], dtype=np.float32)  # real float32 softmax rows pass
    np.testing.assert_allclose(probabilities.log_odds(p), np.log(p[:, 1] / p[:, 0]), rtol=1e-6)
    with pytest.raises(AdapterError, match="state \"output\": \"sigmoid_logit\""):
        OutputMapping("sigmoid_probability", positive="ai").log_odds(np.array([[3.2]]))
    with pytest.raises(AdapterError, match="not probabilities"):  # in [0, 1] but not a softmax row
        probabilities.log_odds(np.array([[0.9, 0.8]]))


def test_a_nan_output_gives_nan_without_numpy_warnings():
    """A NaN from the model becomes 'no usable score' downstream; numpy's RuntimeWarning went to stderr."""
    mapping = OutputMapping("logits", ["REAL", "FAKE"], ["human", "ai"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mapping.log_odds(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    assert np.isnan(out[0]) and out[1] == pytest.approx(1.0)


def test_positive_is_refused_where_it_would_be_ignored_or_says_neither(graph, tmp_path):
    two = _with_sidecar(graph, tmp_path, {**ONNX_SIDECAR, "positive": "human"})
    assert "'positive' is for one-output models; this one has 2 outputs" in _one_line_error(f"onnx:{two}")
    with pytest.raises(AdapterError, match="positive 'maybe' says neither ai nor human"):
        from synthdetect.models.adapters.labels import single_output_mapping
        single_output_mapping("sigmoid_logit", "maybe", None, "keras:/m.h5")


# -- names and options ----------------------------------------------------------------------------------------------
def test_a_model_path_with_a_question_mark_loads_with_and_without_options(graph, tmp_path, images):
    plain = load_model(f"onnx:{_with_sidecar(graph, tmp_path / 'plain', ONNX_SIDECAR)}")
    odd = _with_sidecar(graph, tmp_path / "wer? ü dir", ONNX_SIDECAR, name="what?.onnx")
    model = load_model(f"onnx:{odd}")
    np.testing.assert_array_equal(model.logits(images), plain.logits(images))
    flipped = load_model(f"onnx:{odd}?labels=REAL:ai,FAKE:human")
    assert flipped.card["labels"] == {"REAL": "ai", "FAKE": "human"}
    np.testing.assert_allclose(flipped.logits(images), -plain.logits(images), atol=1e-9)


def test_a_plus_in_an_option_is_kept_and_percent_escapes_are_read(graph):
    """'?labels=AI+art:ai' named a class 'AI art', which the model does not have."""
    assert split_options("m.onnx?labels=AI+art:ai,R%26D:human", ["labels"], "onnx") == (
        "m.onnx", {"labels": "AI+art:ai,R&D:human"})


def test_an_option_given_twice_is_refused(graph):
    assert "option(s) ['labels'] given more than once" in _one_line_error(
        f"onnx:{graph}?labels=REAL:ai&labels=REAL:human")


@pytest.mark.parametrize("query, message", [
    ("?arch=resnet18&num_classes=abc", "num_classes must be a positive whole number, not 'abc'"),
    ("?arch=resnet18&num_classes=0", "num_classes must be a positive whole number, not '0'"),
    ("?arch=resnet18&num_classes=-2", "num_classes must be a positive whole number, not '-2'"),
    ("?arch=resnet18&num_classes=2.5", "num_classes must be a positive whole number, not '2.5'"),
    ("?arch=resnet18&labels=0:maybe", "label override '0:maybe'"),
])
def test_timm_checkpoint_options_are_checked_before_timm_is_needed(tmp_path, monkeypatch, query, message):
    """A typo in the name was hidden behind 'timm models need the timm package' (or reached timm unchecked)."""
    monkeypatch.setitem(sys.modules, "timm", None)
    checkpoint = tmp_path / "ck.pth"
    checkpoint.write_bytes(b"")
    error = _one_line_error(f"timm:{checkpoint}{query}")
    assert message in error and error.startswith(f"timm:{checkpoint}: ")


def test_timm_arch_is_refused_where_it_would_be_ignored(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert "'arch' is for a bare checkpoint file" in _one_line_error("timm:resnet18?arch=vit_base_patch16_224")


# -- batches --------------------------------------------------------------------------------------------------------
def test_a_graph_with_a_fixed_batch_of_four_scores_any_number_of_images(graph, tmp_path, images):
    """Exported with batch 4 (no dynamic axis): every image failed with an ONNX Runtime INVALID_ARGUMENT."""
    fixed = _with_sidecar(_export(tmp_path / "src.onnx", 4), tmp_path, ONNX_SIDECAR)
    model = load_model(f"onnx:{fixed}")
    assert model.card["runtime"]["batch_size"] == 4
    reference = load_model(f"onnx:{_with_sidecar(graph, tmp_path / 'dyn', ONNX_SIDECAR)}").logits(images)
    together = np.array([s.logit for s in model.score(images)])  # 5 images: one full batch and one padded
    alone = np.array([model.score([im])[0].logit for im in images])
    np.testing.assert_allclose(together, reference, atol=1e-5)
    np.testing.assert_allclose(alone, reference, atol=1e-5)


class MatMulNet(torch.nn.Module):
    """Dense layers after a conv: quantize_dynamic on MatMul only, which ONNX Runtime fuses when optimising."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.hidden = torch.nn.Linear(8 * 20 * 24, 32)
        self.head = torch.nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(torch.relu(self.conv(x)).flatten(1))))


def test_a_graph_saved_after_onnx_runtime_fused_its_dynamic_quantisation_runs_one_image_per_call(tmp_path, images):
    """DynamicQuantizeMatMul takes its activation scale from the whole batch like DynamicQuantizeLinear, but only
    the latter was looked for: the graph was batched 16 at a time and scores moved with batch-mates."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = _export(tmp_path / "mm.onnx", None, MatMulNet())
    quantize_dynamic(str(source), str(tmp_path / "mmq.onnx"), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(str(tmp_path / "mmq.onnx"), options, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(tmp_path / "fused.onnx")).graph.node}
    assert "DynamicQuantizeMatMul" in ops and "DynamicQuantizeLinear" not in ops  # what this test is about
    fused = _with_sidecar(tmp_path / "fused.onnx", tmp_path / "peer", ONNX_SIDECAR)
    model = load_model(f"onnx:{fused}")
    assert model.card["runtime"] == {"batch_size": 1, "why": "dynamic INT8 quantisation"}
    together = [s.logit for s in model.score(images)]
    alone = [model.score([im])[0].logit for im in images]
    assert together == alone
    assert "DynamicQuantizeMatMul (fused by ONNX Runtime's optimiser)" in _one_line_error(
        f"onnx:{fused}?activations=float32")  # would have run the int8 graph while the card said float32


class GreyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return self.body(x)


class TwoInputNet(TinyCNN):
    def forward(self, x, temperature):
        return self.body(x) / temperature


def test_graphs_that_cannot_take_an_rgb_batch_alone_are_refused_at_load(tmp_path):
    """A one-channel graph, or one with a second input, loaded and then failed every image in ONNX Runtime."""
    grey = _with_sidecar(_export(tmp_path / "grey.onnx", None, GreyNet(), shape=(1, 20, 24)), tmp_path / "g",
                         ONNX_SIDECAR)
    assert "takes 1 channel(s) in NCHW; images are fed as RGB, 3 channels" in _one_line_error(f"onnx:{grey}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoInputNet().eval(), (torch.randn(1, 3, 20, 24), torch.ones(1, 1)),
                          str(tmp_path / "two.onnx"), input_names=["pixels", "temperature"], dynamo=False)
    two = _with_sidecar(tmp_path / "two.onnx", tmp_path / "t", ONNX_SIDECAR)
    assert "the graph has 2 inputs ['pixels', 'temperature']" in _one_line_error(f"onnx:{two}")


def test_a_peer_scores_wide_and_two_colour_images_it_was_never_said_not_to_know(graph, tmp_path):
    """synthdetect's own limits (max 4:1, no two-colour images) held a peer's score back with the false reason
    "aspect ratio 6.0:1 is outside what onnx:... was trained on"; only 'too small to judge' applies to a peer."""
    from PIL import Image

    from synthdetect.api import Detector

    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (20, 120, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray((rng.integers(0, 2, (64, 64)) * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "bw.png")
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    model = _with_sidecar(graph, tmp_path / "peer", ONNX_SIDECAR)
    detector = Detector.load(f"onnx:{model}", use_evidence=False)
    strip, bw, tiny = (detector(str(tmp_path / name)) for name in ("strip.png", "bw.png", "tiny.png"))
    direct = load_model(f"onnx:{model}")
    for verdict, name in ((strip, "strip.png"), (bw, "bw.png")):
        assert verdict.p_ai == pytest.approx(1 / (1 + np.exp(-direct.logits([load_image(tmp_path / name)])[0])),
                                             abs=1e-6), verdict.reasons
    assert tiny.p_ai is None and "image too small to judge (6x6 px" in tiny.reasons[0]


def test_border_mode_keeps_a_strip_that_rounds_to_zero_pixels():
    """timm's border crop of a 2000x8 strip into 32 px rounded its height to 0: PIL raised for the whole batch."""
    from PIL import Image

    from synthdetect.models.adapters.preprocess import ArrayPreprocess

    border = ArrayPreprocess(32, 32, crop_pct=1.0, crop_mode="border")
    batch = border([Image.new("RGB", (2000, 8), (255, 255, 255)), Image.new("RGB", (40, 30))])
    assert batch.shape == (2, 3, 32, 32)
    white_rows = np.flatnonzero((batch[0] == 1.0).all(axis=(0, 2)))
    assert white_rows.tolist() == [15] and np.delete(batch[0], 15, axis=1).max() == 0.0  # the rest is the mean fill


def test_a_runtime_error_without_a_message_is_named_by_its_type(graph, tmp_path, monkeypatch):
    """ONNX Runtime's first line was taken with splitlines()[0]: an empty message raised IndexError instead."""
    from synthdetect.models import onnx_backend

    copy = _with_sidecar(graph, tmp_path / "m", ONNX_SIDECAR)

    def refuse(*args, **kwargs):
        raise RuntimeError("")

    monkeypatch.setattr(onnx_backend, "make_session", refuse)
    assert _one_line_error(f"onnx:{copy}").endswith("not a loadable ONNX model (RuntimeError)")


def _pooled_linear_graph(path: Path, dtype: int, weights: np.ndarray, bias: np.ndarray) -> Path:
    """Mean colour -> two logits, in ``dtype`` throughout (float16 and float64 exports are common)."""
    import onnx
    from onnx import helper, numpy_helper

    np_type = onnx.helper.tensor_dtype_to_np_dtype(dtype)
    nodes = [helper.make_node("ReduceMean", ["x"], ["flat"], axes=[2, 3], keepdims=0),
             helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "pooled_linear", [helper.make_tensor_value_info("x", dtype, ["n", 3, 20, 24])],
        [helper.make_tensor_value_info("logits", dtype, ["n", 2])],
        initializer=[numpy_helper.from_array(weights.astype(np_type), "w"),
                     numpy_helper.from_array(bias.astype(np_type), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_half_and_double_precision_graphs_are_fed_their_own_type(tmp_path, images):
    """A float16 export was refused ('only float32 inputs are supported'): the batch is cast to the input type."""
    from onnx import TensorProto

    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(3, 2)) * 4, np.array([0.1, -0.2])
    scores = {}
    for name, dtype in (("f32", TensorProto.FLOAT), ("f16", TensorProto.FLOAT16), ("f64", TensorProto.DOUBLE)):
        graph = _pooled_linear_graph(tmp_path / f"{name}.onnx", dtype, weights, bias)
        Path(f"{graph}.json").write_text(json.dumps(ONNX_SIDECAR))
        model = load_model(f"onnx:{graph}")
        scores[name] = model.logits(images)
        assert model.card["input_type"] == {"f32": "tensor(float)", "f16": "tensor(float16)",
                                            "f64": "tensor(double)"}[name]
    assert np.allclose(scores["f64"], scores["f32"], atol=1e-5)
    assert np.allclose(scores["f16"], scores["f32"], atol=0.02)  # half precision: 3 decimal digits
