"""ONNX export and the ONNX Runtime backend: parity with torch, backend choice, the onnx-classifier kind."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from synthdetect.api import Detector
from synthdetect.models import ModelPackageError, load_model
from synthdetect.models.onnx_backend import (
    BACKEND_ENV, OnnxModel, export_module, export_package, parity_images, preprocess_numpy,
)
from synthdetect.models.package import write_package
from synthdetect.models.torch_kinds import TorchModel
from tiny_model import png_bytes, write_tiny_cnn

from typer.testing import CliRunner

from synthdetect.cli import app


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny", seed=3)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    return export_package(str(tiny), tmp_path_factory.mktemp("export") / "tiny-onnx")


def test_export_writes_a_verified_package_with_parity_on_its_card(exported):
    card = exported.card
    assert set(card["files"]) == {"onnx", "weights"}
    assert card["runtime"]["backend"] == "onnxruntime"
    assert card["runtime"]["parity"]["max_abs_p_ai_diff"] < 1e-4
    assert card["calibration"] and card["decision"]  # the served behaviour travels with the ONNX file


def test_onnx_and_torch_backends_agree_within_tolerance(exported, monkeypatch):
    onnx_model = load_model(str(exported.root))
    assert isinstance(onnx_model, OnnxModel)
    monkeypatch.setenv(BACKEND_ENV, "torch")
    torch_model = load_model(str(exported.root))
    assert isinstance(torch_model, TorchModel)
    images = parity_images(torch_model.input_size, n=24, seed=11)
    a, b = torch_model.logits(images), onnx_model.logits(images)
    assert a.shape == b.shape == (24,)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    assert np.std(a) > 0  # the comparison is not between two constants
    # Preprocessing itself is identical, not merely close.
    np.testing.assert_allclose(torch_model.preprocess(images).numpy(), preprocess_numpy(images, onnx_model.input_spec),
                               atol=1e-6)


def test_detector_verdicts_match_between_backends(exported, monkeypatch, tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        p.write_bytes(png_bytes((32 + i, 32), seed=i))
        paths.append(str(p))
    onnx_verdicts = Detector.load(str(exported.root)).detect(paths, names=paths)
    monkeypatch.setenv(BACKEND_ENV, "torch")
    torch_verdicts = Detector.load(str(exported.root)).detect(paths, names=paths)
    for o, t in zip(onnx_verdicts, torch_verdicts):
        assert o.label == t.label
        assert o.p_ai == pytest.approx(t.p_ai, abs=1e-4)


def test_unknown_backend_and_non_torch_models_are_refused(exported, monkeypatch, tmp_path):
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(ModelPackageError, match="unknown inference backend 'tensorrt'"):
        load_model(str(exported.root))
    monkeypatch.delenv(BACKEND_ENV)
    router = {"name": "router-of-tiny", "kind": "router", "routes": [{"model": str(exported.root)}]}
    write_package(tmp_path / "router", router, {})
    with pytest.raises(ModelPackageError, match="has no torch module to export"):
        export_package(str(tmp_path / "router"), tmp_path / "x")


def test_onnx_classifier_kind_serves_a_two_class_graph_without_torch_weights(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 2)).eval()
    root = tmp_path / "two-class"
    root.mkdir()
    onnx_path = export_module(module, root / "model.onnx", (24, 24))
    card = {"name": "two-class", "version": "0", "kind": "onnx-classifier",
            "input": {"size": [24, 24], "mean": [0.5] * 3, "std": [0.5] * 3, "resample": "bilinear"},
            "output": {"ai_index": 0, "human_index": 1}}
    write_package(root, card, {"onnx": onnx_path})
    model = load_model(str(root))
    images = parity_images((24, 24), n=5)
    expected = module(torch.from_numpy(preprocess_numpy(images, card["input"]))).detach().numpy()
    np.testing.assert_allclose(model.logits(images), expected[:, 0] - expected[:, 1], atol=1e-5)


def test_cli_export(tiny, tmp_path):
    out = tmp_path / "cli-onnx"
    result = CliRunner().invoke(app, ["export", str(tiny), "--onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "max |p_ai diff|" in result.output and (out / "model.onnx").is_file()
    refused = CliRunner().invoke(app, ["export", str(tiny), "--out", str(out)])
    assert refused.exit_code == 2


def test_sessions_take_their_threads_from_the_argument_then_the_environment_then_the_cpus(exported, monkeypatch):
    """One rule for every ONNX Runtime session (shipped models, the CLIP encoder, peers), so a scan's
    SYNTHDETECT_THREADS reaches all of them."""
    from synthdetect.models.onnx_backend import default_threads, make_session

    path = exported.file("onnx")

    def threads(**kwargs):
        return make_session(path, **kwargs).get_session_options().intra_op_num_threads

    monkeypatch.delenv("SYNTHDETECT_THREADS", raising=False)
    assert threads() == default_threads()
    monkeypatch.setenv("SYNTHDETECT_THREADS", "1")
    assert threads() == 1
    assert threads(threads=3) == 3
    monkeypatch.setenv("SYNTHDETECT_THREADS", "two")
    with pytest.raises(ValueError, match="SYNTHDETECT_THREADS must be a whole number of threads, not 'two'"):
        make_session(path)


def test_a_refused_export_leaves_the_package_already_in_out_intact(tiny, tmp_path):
    """The graph used to be written into OUT before the parity check: a refused export ("not written")
    replaced the model.onnx of the package there, which then failed its sha256 check."""
    from synthdetect.models.package import load_package

    out = tmp_path / "out"
    export_package(str(tiny), out)
    with pytest.raises(ModelPackageError, match="disagrees with torch.*not written"):
        export_package(str(tiny), out, tolerance=-1.0)
    load_package(out)  # still verifies
    with pytest.raises(ModelPackageError, match="not written"):
        export_package(str(tiny), tmp_path / "fresh", tolerance=-1.0)
    assert not (tmp_path / "fresh" / "model.onnx").exists()


def test_an_export_whose_logits_are_nan_is_refused(tmp_path):
    """NaN > tolerance is False: the check used to pass a graph whose every answer is NaN."""
    root = write_tiny_cnn(tmp_path / "nan")
    state = torch.load(root / "weights.pt", weights_only=True)
    state["head.2.weight"].fill_(float("nan"))  # the final Linear
    torch.save(state, root / "weights.pt")
    card = {k: v for k, v in json.loads((root / "model.json").read_text()).items() if k != "files"}
    write_package(root, card, {"weights": root / "weights.pt"})
    with pytest.raises(ModelPackageError, match=r"max \|p_ai diff\| nan"):
        export_package(str(root), tmp_path / "out")


def test_export_out_that_cannot_be_a_folder_is_one_line_and_a_tilde_is_home(tiny, tmp_path, monkeypatch):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        with pytest.raises(ModelPackageError, match=f"{out}: cannot write the exported package"):
            export_package(str(tiny), out)
    result = CliRunner().invoke(app, ["export", str(tiny), "--onnx", "--out", str(afile)])
    assert result.exit_code == 2 and "cannot write the exported package" in result.output
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    export_package(str(tiny), "~/exported")  # as a model path is expanded, so is the output folder
    assert (tmp_path / "home" / "exported" / "model.onnx").is_file() and not (tmp_path / "~").exists()


def _ela_package(root):
    from synthdetect.models.cnn import SmallCNN

    torch.manual_seed(1)
    module = SmallCNN(width=4, depth=2).eval()
    root.mkdir(parents=True)
    torch.save(module.state_dict(), root / "weights.pt")
    card = {"name": "tiny-ela", "version": "0", "kind": "ela-cnn", "architecture": module.hparams,
            "input": {"size": [32, 32], "resample": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
                      "ela_quality": 90, "min_side": 8, "max_aspect": 2.0},
            "calibration": {"method": "temperature", "temperature": 0.05}}
    write_package(root, card, {"weights": root / "weights.pt"})
    return root


def test_an_exported_ela_cnn_is_served_by_onnx_runtime_on_the_ela_image(tmp_path, monkeypatch):
    """The parity check used to feed the graph the plain resized image (so an ela-cnn export was refused),
    and the ela-cnn loader never served model.onnx."""
    exported = export_package(str(_ela_package(tmp_path / "ela")), tmp_path / "ela-onnx")
    assert exported.card["runtime"]["parity"]["max_abs_p_ai_diff"] < 1e-4
    onnx_model = load_model(str(exported.root))
    assert isinstance(onnx_model, OnnxModel) and not isinstance(onnx_model, TorchModel)
    monkeypatch.setenv(BACKEND_ENV, "torch")
    torch_model = load_model(str(exported.root))
    assert isinstance(torch_model, TorchModel)
    images = parity_images((32, 32), n=9, seed=4)
    np.testing.assert_allclose(onnx_model.logits(images), torch_model.logits(images), atol=1e-4)
    np.testing.assert_allclose(np.concatenate([onnx_model.logits([im]) for im in images]),
                               torch_model.logits(images), atol=1e-4)  # batch 1 too


def _lite_package(root):
    pytest.importorskip("efficientnet_lite_pytorch")
    from synthdetect.models.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLiteDetector

    torch.manual_seed(0)
    module = EfficientNetLiteDetector("efficientnet-lite0", 32).eval()
    root.mkdir()
    torch.save(module.state_dict(), root / "weights.pt")
    card = {"name": "tiny-lite", "version": "0", "kind": "efficientnet-lite0", "architecture": module.hparams,
            "input": {"size": [32, 32], "resample": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}
    write_package(root, card, {"weights": root / "weights.pt"})
    return root


def test_an_exported_efficientnet_lite_is_served_by_onnx_runtime(tmp_path, monkeypatch):
    """Its loader used to build the torch network whatever the card carried, so model.onnx went unused."""
    exported = export_package(str(_lite_package(tmp_path / "lite")), tmp_path / "lite-onnx")
    onnx_model = load_model(str(exported.root))
    assert isinstance(onnx_model, OnnxModel)
    monkeypatch.setenv(BACKEND_ENV, "torch")
    torch_model = load_model(str(exported.root))
    assert isinstance(torch_model, TorchModel)
    images = parity_images((32, 32), n=5, seed=2)
    np.testing.assert_allclose(onnx_model.logits(images), torch_model.logits(images), atol=1e-4)


def test_export_without_the_library_a_kind_needs_is_one_line(tmp_path, monkeypatch):
    """The loader's error (a ValueError) used to escape the export command as a traceback."""
    root = _lite_package(tmp_path / "lite")
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    with pytest.raises(ModelPackageError, match="tiny-lite: EfficientNet-Lite needs efficientnet_lite_pytorch"):
        export_package(str(root), tmp_path / "out")
    result = CliRunner().invoke(app, ["export", str(root), "--onnx", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "EfficientNet-Lite needs" in result.output


def test_export_from_a_card_given_by_a_path_not_named_model_json(tiny, tmp_path):
    """Loading accepts the card's own path (any .json name); export used to reload the folder's model.json."""
    import shutil

    root = tmp_path / "renamed"
    shutil.copytree(tiny, root)
    (root / "model.json").rename(root / "card.json")
    exported = export_package(str(root / "card.json"), tmp_path / "out")
    assert exported.card["name"] == "tiny-cnn" and (tmp_path / "out" / "model.onnx").is_file()


def _onnx_classifier(root, module, *, batch_of_one: bool = False, quantise: bool = False):
    """An onnx-classifier package of ``module`` on 16 px inputs: exported with a batch dimension of 1, or
    dynamically quantised by ONNX Runtime's own ``quantize_dynamic``, as published models are."""
    root.mkdir()
    path = root / "model.onnx"
    if batch_of_one:
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["logits"])
    else:
        export_module(module, path, (16, 16))
    if quantise:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(path), str(root / "q.onnx"), weight_type=QuantType.QInt8)
        (root / "q.onnx").replace(path)
    card = {"name": root.name, "version": "0", "kind": "onnx-classifier",
            "input": {"size": [16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}, "runtime": {"batch_size": 32}}
    write_package(root, card, {"onnx": path})
    return root


def _dense_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 1))


def test_a_dynamically_quantised_onnx_classifier_scores_an_image_the_same_whatever_its_batch_mates(tmp_path):
    """quantize_dynamic sets each activation's int8 scale from the whole batch: served 32 at a time (the
    card's batch_size), an image's logit moved by up to 0.0018 with a white and a black image beside it."""
    from PIL import Image

    from synthdetect.images import load_image

    model = load_model(str(_onnx_classifier(tmp_path / "int8", _dense_net(), quantise=True)))
    assert model.batch_size == 1 and "dynamic INT8" in model.one_per_run
    images = parity_images((16, 16), n=6)
    loud = [load_image(Image.new("RGB", (16, 16), colour), name=str(colour)) for colour in ((255,) * 3, (0,) * 3)]
    alone = np.array([model.logits([image])[0] for image in images])
    np.testing.assert_array_equal([s.logit for s in model.score(images + loud)][:6], alone)
    np.testing.assert_array_equal(model.logits(images + loud)[:6], alone)  # logits() too, not only score()
    # what the graph itself does with such batch-mates
    batch = preprocess_numpy(images + loud, model.input_spec)
    together = model.session.run(None, {model.input_name: batch})[0].reshape(-1)[:6]
    assert not np.allclose(together, alone, atol=1e-4)


def test_an_onnx_classifier_exported_with_a_batch_of_one_scores_several_images(tmp_path):
    """Its graph refuses a batch of two: scoring three images was an ONNX Runtime 'invalid dimensions' error."""
    module = _dense_net()
    model = load_model(str(_onnx_classifier(tmp_path / "batch-of-one", module, batch_of_one=True)))
    assert model.batch_size == 1 and model.one_per_run == "the graph's batch dimension is 1"
    images = parity_images((16, 16), n=3)
    expected = module(torch.from_numpy(preprocess_numpy(images, model.input_spec))).detach().numpy().reshape(-1)
    np.testing.assert_allclose([s.logit for s in model.score(images)], expected, atol=1e-5)
    np.testing.assert_allclose(model.logits(images), expected, atol=1e-5)


def test_a_float_onnx_classifier_keeps_the_batch_size_on_its_card(tmp_path):
    model = load_model(str(_onnx_classifier(tmp_path / "float", _dense_net())))
    assert model.one_per_run is None and model.batch_size == 32
