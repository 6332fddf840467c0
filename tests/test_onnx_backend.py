"""ONNX export and the ONNX Runtime backend: parity with torch, backend choice, the onnx-classifier kind."""

from __future__ import annotations

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
