"""External-model adapters: label mapping, stated preprocessing, ONNX models end to end, timm without timm."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthdetect.api import Detector
from synthdetect.images import load_image
from synthdetect.models import load_model
from synthdetect.models.adapters.labels import (
    AdapterError, OutputMapping, map_labels, normalise_label, parse_label_overrides, single_output_mapping,
)
from synthdetect.models.adapters.preprocess import ArrayPreprocess, center_crop, preprocess_from_spec, resize_shorter
from synthdetect.models.adapters.timm import preprocess_from_data_config, read_hub_config


def write_images(folder: Path, n: int, seed: int = 0, sizes=((40, 30), (32, 32), (57, 64))) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# -- labels -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["artificial", "AI", "fake", "FAKE", "by AI", "generated", "AI-generated",
                                  "ai_generated", "Synthetic", "1_fake"])
def test_ai_names_normalise_to_ai(name):
    assert normalise_label(name) == "ai"


@pytest.mark.parametrize("name", ["human", "real", "REAL", "by human", "Human-made", "authentic", "0_real"])
def test_human_names_normalise_to_human(name):
    assert normalise_label(name) == "human"


@pytest.mark.parametrize("name", ["LABEL_0", "cat", "dog", "aircraft", "reality"])
def test_other_names_are_not_guessed(name):
    assert normalise_label(name) is None


def test_two_class_softmax_log_odds_is_log_p_ai_minus_log_p_human():
    mapping = OutputMapping("logits", ["human", "artificial"], map_labels(["human", "artificial"], None, "m"))
    z = np.array([[0.3, 2.0], [1.5, -1.0]])
    expected = z[:, 1] - z[:, 0]
    assert np.allclose(mapping.log_odds(z), expected)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    probs = OutputMapping("probabilities", mapping.labels, mapping.classes)
    assert np.allclose(probs.log_odds(p), np.log(p[:, 1]) - np.log(p[:, 0]))


def test_several_classes_on_one_side_are_summed():
    labels = ["real", "sd", "mj"]
    mapping = OutputMapping("logits", labels, map_labels(labels, {"sd": "ai", "mj": "ai"}, "m"))
    z = np.array([[0.0, 1.0, 2.0]])
    p = np.exp(z) / np.exp(z).sum()
    assert np.allclose(mapping.log_odds(z), np.log(p[0, 1] + p[0, 2]) - np.log(p[0, 0]))


def test_sigmoid_polarity_is_applied():
    to_ai = single_output_mapping("sigmoid_probability", "ai", None, "m")
    to_human = single_output_mapping("sigmoid_probability", "human", None, "m")
    p = np.array([[0.8], [0.1]])
    assert np.allclose(to_ai.log_odds(p), np.log(p[:, 0] / (1 - p[:, 0])))
    assert np.allclose(to_human.log_odds(p), -np.log(p[:, 0] / (1 - p[:, 0])))
    logit = single_output_mapping("sigmoid_logit", "ai", None, "m")
    assert np.allclose(logit.log_odds(np.array([[2.5]])), [2.5])


def test_sigmoid_without_stated_polarity_is_refused():
    with pytest.raises(AdapterError, match="polarity is not stated"):
        single_output_mapping("sigmoid_probability", None, None, "keras:/m.h5")


def test_unknown_labels_give_a_clear_error_and_overrides_fix_it():
    with pytest.raises(AdapterError, match=r"cannot tell which class means AI.*'cat', 'dog'"):
        map_labels(["cat", "dog"], None, "hf:/x")
    assert map_labels(["cat", "dog"], parse_label_overrides("cat:ai,dog:human"), "hf:/x") == ["ai", "human"]
    assert map_labels(["LABEL_0", "LABEL_1"], parse_label_overrides("0:human,1:ai"), "hf:/x") == ["human", "ai"]
    with pytest.raises(AdapterError, match="must be 'ai' or 'human'"):
        parse_label_overrides("cat:maybe")
    with pytest.raises(AdapterError, match="name no class"):
        map_labels(["fake", "real"], {"fakes": "ai"}, "hf:/x")
    with pytest.raises(AdapterError, match="at least one ai and one human"):
        map_labels(["fake", "artificial"], None, "hf:/x")


# -- preprocessing --------------------------------------------------------------------------------
def test_array_preprocess_scaling_channel_order_and_layout():
    im = Image.fromarray(np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [100, 110, 120]]], dtype=np.uint8))
    rgb = ArrayPreprocess(2, 2, rescale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))([im])
    assert rgb.shape == (1, 3, 2, 2)
    assert np.allclose(rgb[0, :, 0, 0], (np.array([10, 20, 30]) / 255 - 0.5) / 0.5)
    bgr = ArrayPreprocess(2, 2, rescale=1.0, channel_order="BGR", layout="NHWC")([im])
    assert bgr.shape == (1, 2, 2, 3) and bgr[0, 0, 0].tolist() == [30, 20, 10]


def test_a_long_strip_is_cropped_without_resizing_it_whole(monkeypatch):
    """A 20000x8 strip at crop_pct 0.875 became 640,000 x 256 px (0.5 GB) before its 224 px centre was cut."""
    from synthdetect.models.adapters import preprocess
    pre = preprocess_from_data_config({"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875})
    rng = np.random.default_rng(0)
    strip = Image.fromarray(rng.integers(0, 256, (8, 4000, 3), dtype=np.uint8))  # 128,000 x 256 when whole
    boxed = np.asarray(pre.geometry(strip), dtype=int)
    monkeypatch.setattr(preprocess, "MAX_INTERMEDIATE_PIXELS", 10**9)  # the plain path: resize whole, then crop
    whole = np.asarray(pre.geometry(strip), dtype=int)
    assert boxed.shape == whole.shape == (224, 224, 3)
    assert np.abs(boxed - whole).mean() < 1.0 and np.abs(boxed - whole).max() <= 16
    ordinary = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    monkeypatch.setattr(preprocess, "MAX_INTERMEDIATE_PIXELS", 4_000_000)
    np.testing.assert_array_equal(np.asarray(pre.geometry(ordinary)), np.asarray(
        center_crop(resize_shorter(ordinary, 256, Image.Resampling.BICUBIC), 224, 224)))


def test_spec_reads_size_and_fractions_and_refuses_unknown_keys():
    pre = preprocess_from_spec({"size": [24, 20], "rescale": "1/127.5"}, {"height": 99, "width": 99}, "m")
    assert (pre.height, pre.width) == (24, 20) and pre.rescale == pytest.approx(1 / 127.5)
    with pytest.raises(AdapterError, match="unknown input setting"):
        preprocess_from_spec({"sise": 3}, {}, "m")
    with pytest.raises(AdapterError, match="not fixed by the model"):
        preprocess_from_spec({}, {}, "m")


def test_timm_cfg_translation_reproduces_the_eval_transform_geometry():
    cfg = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center",
           "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    pre = preprocess_from_data_config(cfg)
    assert (pre.height, pre.width, pre.resample, pre.crop_pct) == (224, 224, "bicubic", 0.875)
    # timm: Resize(floor(224 / 0.875) = 256) on the shorter side, then CenterCrop(224)
    im = Image.new("RGB", (640, 480))
    resized = resize_shorter(im, 256, Image.Resampling.BICUBIC)
    assert resized.size == (341, 256)  # int(256 * 640 / 480) = 341, as torchvision truncates
    assert pre.geometry(im).size == (224, 224)
    # torchvision CenterCrop offsets: top = round((256 - 224) / 2) = 16, left = round((341 - 224) / 2) = 58
    gradient = Image.fromarray(np.tile(np.arange(341, dtype=np.uint8), (256, 1))).convert("RGB")
    assert np.asarray(center_crop(gradient, 224, 224))[0, 0, 0] == 58
    squash = preprocess_from_data_config({**cfg, "crop_mode": "squash", "crop_pct": 1.0, "input_size": (3, 64, 64)})
    assert squash.geometry(im).size == (64, 64)
    assert preprocess_from_data_config({"input_size": (3, 32, 32)}).crop_pct == 0.875  # timm's default
    # border: the longest side fits (640x480 -> 224x168), the rest is padded with the mean colour, 28 px each side
    border = preprocess_from_data_config({**cfg, "crop_mode": "border", "crop_pct": 1.0})
    out = np.asarray(border.geometry(Image.new("RGB", (640, 480), (255, 255, 255))))
    assert out.shape == (224, 224, 3)
    assert out[0, 0].tolist() == [124, 116, 104] and out[27, 0].tolist() == [124, 116, 104]
    assert out[28, 0].tolist() == [255, 255, 255] and out[195, 0].tolist() == [255, 255, 255]
    assert out[196, 0].tolist() == [124, 116, 104]
    with pytest.raises(AdapterError, match="not supported"):
        preprocess_from_data_config({**cfg, "crop_mode": "diagonal"})


def test_timm_hub_config_is_read_without_timm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "mobilenetv3_large_100", "num_classes": 2, "label_names": ["FAKE", "REAL"],
        "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.875, "interpolation": "bilinear"}}))
    config = read_hub_config(tmp_path)
    assert config["architecture"] == "mobilenetv3_large_100"
    assert preprocess_from_data_config(config["pretrained_cfg"]).resample == "bilinear"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(AdapterError, match="not a timm config"):
        read_hub_config(tmp_path)


def test_timm_missing_gives_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, whether installed or not
    with pytest.raises(AdapterError) as info:
        load_model("timm:mobilenetv3_large_100")
    message = str(info.value)
    assert "timm models need the timm package" in message and "\n" not in message
    with pytest.raises(AdapterError, match="file not found"):
        load_model(f"timm:{tmp_path}/missing.pth?arch=resnet18")


# -- ONNX -----------------------------------------------------------------------------------------
class TinyCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 2))
        with torch.no_grad():
            self.body[-1].weight.mul_(8.0)

    def forward(self, x):
        return self.body(x)


ONNX_SIDECAR = {"input": {"size": [20, 24], "resample": "bicubic", "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225]}, "labels": ["REAL", "FAKE"], "output": "logits"}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    module = TinyCNN().eval()
    path = root / "tiny.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter needs no onnxscript; it warns it is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (torch.randn(1, 3, 20, 24),), str(path), input_names=["pixels"],
                          output_names=["logits"], dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False)
    (root / "tiny.onnx.json").write_text(json.dumps(ONNX_SIDECAR))
    return module, path


def _reference_torch_logits(module, paths):
    """The stated preprocessing written out by hand, then the torch module the ONNX file was exported from."""
    mean, std = np.array(ONNX_SIDECAR["input"]["mean"]), np.array(ONNX_SIDECAR["input"]["std"])
    arrays = [(np.asarray(Image.open(p).convert("RGB").resize((24, 20), Image.Resampling.BICUBIC)) / 255.0 - mean) / std
              for p in paths]
    x = torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        z = module(x).numpy().astype(np.float64)
    return z[:, 1] - z[:, 0]  # FAKE minus REAL


def test_onnx_adapter_equals_the_torch_model_it_was_exported_from(onnx_model, tmp_path):
    module, path = onnx_model
    paths = write_images(tmp_path / "imgs", 5)
    model = load_model(f"onnx:{path}")
    assert model.card["labels"] == {"REAL": "human", "FAKE": "ai"}
    assert model.card["preprocessing"]["layout"] == "NCHW"
    ours = model.logits([load_image(p) for p in paths])
    reference = _reference_torch_logits(module, paths)
    assert np.abs(reference).max() > 0.05  # the test would be vacuous on a constant model
    assert np.allclose(ours, reference, atol=1e-4)


def test_onnx_through_detector_and_cli(onnx_model, tmp_path):
    from typer.testing import CliRunner

    from synthdetect.cli import app

    module, path = onnx_model
    paths = write_images(tmp_path / "imgs", 3)
    detector = Detector.load(f"onnx:{path}")
    verdicts = detector([str(p) for p in paths])
    expected = 1 / (1 + np.exp(-_reference_torch_logits(module, paths)))
    assert np.allclose([v.p_ai for v in verdicts], expected, atol=1e-4)
    assert all("default thresholds (card has none)" in v.reasons[0] for v in verdicts)
    result = CliRunner().invoke(app, ["detect", "--model", f"onnx:{path}", "-f", "jsonl", str(paths[0])])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[0])
    assert row["p_ai"] == pytest.approx(expected[0], abs=1e-4)


def test_dynamically_quantised_onnx_runs_one_image_per_call(onnx_model, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, path = onnx_model
    int8 = tmp_path / "tiny.int8.onnx"
    quantize_dynamic(str(path), str(int8), weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "Gemm"])
    (tmp_path / "tiny.int8.onnx.json").write_text(json.dumps(ONNX_SIDECAR))
    quantised = load_model(f"onnx:{int8}")
    assert quantised.card["runtime"] == {"batch_size": 1, "why": "dynamic INT8 quantisation"}
    assert load_model(f"onnx:{path}").card["runtime"]["batch_size"] == 16
    images = [load_image(p) for p in write_images(tmp_path / "imgs", 4)]
    together = [s.logit for s in quantised.score(images)]
    alone = [quantised.score([im])[0].logit for im in images]
    assert together == alone  # a batch-mate never changes an image's score


def test_dynamically_quantised_onnx_can_run_on_float32_activations_and_batch(onnx_model, tmp_path):
    """?activations=float32: the dequantised weights, batched, near the float model the file was quantised from."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    module, path = onnx_model
    int8 = tmp_path / "tiny.int8.onnx"
    quantize_dynamic(str(path), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    (tmp_path / "tiny.int8.onnx.json").write_text(json.dumps(ONNX_SIDECAR))
    model = load_model(f"onnx:{int8}?activations=float32")
    assert model.card["runtime"]["batch_size"] == 16 and "float32" in model.card["runtime"]["activations"]
    assert model.session.synthdetect_rewritten >= 1
    paths = write_images(tmp_path / "imgs", 4)
    images = [load_image(p) for p in paths]
    together = np.array([s.logit for s in model.score(images)])
    alone = np.array([model.score([im])[0].logit for im in images])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    reference = _reference_torch_logits(module, paths)
    assert np.ptp(reference) > 0.2  # images that score differently, so the comparison below means something
    assert np.abs(together - reference).max() < 0.02  # only the weights' rounding separates them (measured 0.0014)
    with pytest.raises(AdapterError, match="activations 'int4' is not one of"):
        load_model(f"onnx:{int8}?activations=int4")
    assert "activations" not in load_model(f"onnx:{path}?activations=float32").card["runtime"]  # a float file as is


def test_onnx_errors_are_clear(onnx_model, tmp_path):
    _, path = onnx_model
    with pytest.raises(AdapterError, match="file not found"):
        load_model(f"onnx:{tmp_path}/nope.onnx")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(path.read_bytes())
    with pytest.raises(AdapterError, match="needs a JSON sidecar"):
        load_model(f"onnx:{bare}")
    (tmp_path / "bare.onnx.json").write_text(json.dumps({**ONNX_SIDECAR, "labels": ["cat", "dog"]}))
    with pytest.raises(AdapterError, match="cannot tell which class means AI"):
        load_model(f"onnx:{bare}")
    assert load_model(f"onnx:{bare}?labels=cat:human,dog:ai").card["labels"] == {"cat": "human", "dog": "ai"}
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a graph")
    (tmp_path / "junk.onnx.json").write_text(json.dumps(ONNX_SIDECAR))
    with pytest.raises(AdapterError, match="not a loadable ONNX model"):
        load_model(f"onnx:{junk}")
    with pytest.raises(AdapterError, match="unknown option"):
        load_model(f"onnx:{path}?colour=blue")


def test_adapter_prefixes_do_not_import_heavy_libraries():
    import subprocess

    code = ("import sys; from synthdetect.models import load_model, PREFIXES, _import_kinds; _import_kinds(); "
            "print(sorted(p for p in PREFIXES.entries if p in ('hf','timm','keras','onnx')), "
            "[m for m in ('transformers', 'keras', 'timm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['hf', 'keras', 'onnx', 'timm'] []"


def test_a_router_can_route_to_a_prefixed_model(onnx_model, tmp_path):
    """A route may name an adapter (no package card to read beforehand): it is loaded with the router."""
    module, path = onnx_model
    card = {"name": "mixed", "kind": "router", "version": "0.0.1",
            "routes": [{"max_short_side": 64, "model": "cifake-cnn"}, {"model": f"onnx:{path}"}]}
    (tmp_path / "router").mkdir()
    (tmp_path / "router" / "model.json").write_text(json.dumps(card))
    detector = Detector.load(str(tmp_path / "router"), use_evidence=False)
    assert detector.model.member_cards[f"onnx:{path}"]["name"] == f"onnx:{path}"
    large = write_images(tmp_path / "imgs", 1, sizes=((120, 100),))
    verdict = detector(str(large[0]))
    assert verdict.models[0]["model"] == f"onnx:{path}"
    assert verdict.p_ai == pytest.approx(1 / (1 + np.exp(-_reference_torch_logits(module, large)[0])), abs=1e-4)
    assert detector(str(write_images(tmp_path / "small", 1, sizes=((32, 32),))[0])).models[0]["model"] == "cifake-cnn"


@pytest.mark.parametrize("setting, message", [
    ({"layout": "NHWC"}, r"sidecar input.layout 'NHWC' contradicts the graph's input shape \['batch', 3, 20, 24\]"),
    ({"size": [32, 32]}, r"sidecar input.size \[32, 32\] contradicts the graph's input shape .*fixed 20x24"),
    ({"rescale": 0}, "input.rescale must be a positive number, not 0"),
    ({"rescale": "-1/255"}, "input.rescale must be a positive number"),
    ({"rescale": "1/0"}, "input.rescale '1/0' is not a number"),
    ({"std": [0, 1, 1]}, r"input.std must be positive in every channel"),
    ({"std": [0.2, -0.2, 0.2]}, r"input.std must be positive in every channel, not \[0.2, -0.2, 0.2\]"),
])
def test_onnx_sidecar_contradicting_the_graph_is_refused_at_load(onnx_model, tmp_path, setting, message):
    _, path = onnx_model
    copy = tmp_path / "m.onnx"
    copy.write_bytes(path.read_bytes())
    (tmp_path / "m.onnx.json").write_text(json.dumps({**ONNX_SIDECAR, "input": {**ONNX_SIDECAR["input"], **setting}}))
    with pytest.raises(AdapterError, match=message) as info:
        load_model(f"onnx:{copy}")
    assert "\n" not in str(info.value) and str(info.value).startswith(f"onnx:{copy}: ")


def test_models_show_prints_the_card_of_a_prefixed_name(onnx_model):
    from typer.testing import CliRunner

    from synthdetect.cli import app

    _, path = onnx_model
    result = CliRunner().invoke(app, ["models", "show", f"onnx:{path}", "-f", "json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["kind"] == "onnx" and card["labels"] == {"REAL": "human", "FAKE": "ai"}
    table = CliRunner().invoke(app, ["models", "show", f"onnx:{path}"])
    assert table.exit_code == 0 and table.stdout.count("source:") == 1  # the source once, not twice
    missing = CliRunner().invoke(app, ["models", "show", f"onnx:{path}.missing"])
    assert missing.exit_code == 2 and "file not found" in missing.stderr
