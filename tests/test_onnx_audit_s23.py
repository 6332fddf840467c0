"""Audit of `synthdetect export --onnx` and the ONNX backend (session 23): settings refused before any export,
one-line errors instead of tracebacks, and a card that says where the export came from."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.models import ModelPackageError, load_model
from synthdetect.models import onnx_backend
from synthdetect.models.onnx_backend import (
    export_module, export_package, make_session, parity_images, threads_from_environment,
)
from synthdetect.models.package import write_package
from tiny_model import write_tiny_cnn


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_cnn(tmp_path_factory.mktemp("model") / "tiny", seed=3)


@pytest.mark.parametrize("opset", [99, 5, 0])
def test_an_opset_torch_cannot_write_or_onnx_runtime_cannot_run_is_one_line(tiny, tmp_path, opset):
    # Was a RuntimeError traceback ("Unsupported onnx_opset_version: 99") or, for 5, an ONNX Runtime
    # INVALID_GRAPH traceback after torch had written the graph.
    with pytest.raises(ModelPackageError, match=rf"opset {opset}: this torch exports ONNX opsets \d+ to \d+"):
        export_package(str(tiny), tmp_path / "out", opset=opset)
    assert not (tmp_path / "out").exists()


def test_cli_export_with_an_unsupported_opset_is_one_error_line(tiny, tmp_path):
    result = CliRunner().invoke(app, ["export", str(tiny), "--onnx", "--out", str(tmp_path / "o"), "--opset", "99"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: opset 99"), result.output


def test_a_nan_or_negative_tolerance_is_refused_as_a_setting_not_as_a_disagreement(tiny, tmp_path):
    # Was "ONNX export disagrees with torch (max |p_ai diff| 2.65e-08 > nan); not written": blamed the export.
    with pytest.raises(ModelPackageError, match="tolerance must be a number at least 0, not nan"):
        export_package(str(tiny), tmp_path / "out", tolerance=math.nan)
    for value in ("nan", "-1"):
        result = CliRunner().invoke(app, ["export", str(tiny), "--onnx", "--out", str(tmp_path / "o"),
                                          "--tolerance", value])
        assert result.exit_code == 2 and "disagrees" not in result.output, result.output
        assert "tolerance" in result.output
    assert not (tmp_path / "o").exists()


def test_a_thread_count_far_beyond_any_machine_is_refused(monkeypatch, tmp_path):
    # SYNTHDETECT_THREADS=100000 made ONNX Runtime start tens of thousands of threads (17 GB) and hang.
    monkeypatch.setenv("SYNTHDETECT_THREADS", "100000")
    with pytest.raises(ValueError, match="SYNTHDETECT_THREADS=100000 is more than 1024 threads"):
        threads_from_environment()
    monkeypatch.setenv("SYNTHDETECT_THREADS", "1024")
    assert threads_from_environment() == onnx_backend.MAX_THREADS == 1024
    monkeypatch.delenv("SYNTHDETECT_THREADS")
    with pytest.raises(ValueError, match="inference threads: use 1 to"):  # refused before a session is made
        make_session(tmp_path / "never-opened.onnx", threads=100_000)


def test_cli_refuses_a_huge_thread_count_in_one_line(monkeypatch):
    monkeypatch.setenv("SYNTHDETECT_THREADS", "100000")
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 2 and "SYNTHDETECT_THREADS=100000 is more than" in result.output


def test_a_kind_with_no_torch_module_is_not_told_to_export_a_routers_models(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    root = tmp_path / "peer"
    root.mkdir()
    onnx_path = export_module(module, root / "model.onnx", (16, 16))
    card = {"name": "peer", "version": "0", "kind": "onnx-classifier",
            "input": {"size": [16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}}
    write_package(root, card, {"onnx": onnx_path})
    with pytest.raises(ModelPackageError) as caught:
        export_package(str(root), tmp_path / "x")
    message = str(caught.value)
    assert "kind 'onnx-classifier' has no torch module to export" in message
    assert "router" not in message and "small-cnn" in message


def test_export_keeps_the_source_runtime_settings_and_names_its_source_absolutely(tmp_path, monkeypatch):
    root = write_tiny_cnn(tmp_path / "tiny", seed=1)
    card = json.loads((root / "model.json").read_text())
    card.pop("files", None)
    card.pop("created_with", None)
    card["runtime"] = {"batch_size": 5}
    write_package(root, card, {"weights": root / "weights.pt"})
    monkeypatch.chdir(tmp_path)
    package = export_package("tiny", "tiny-onnx")  # relative paths, as typed at a shell
    runtime = package.card["runtime"]
    assert runtime["exported_from"] == str(root.resolve())  # was "tiny": meaningless from any other folder
    assert runtime["batch_size"] == 5 and runtime["backend"] == "onnxruntime" and runtime["parity"]["images"] == 16
    assert load_model(str(tmp_path / "tiny-onnx")).batch_size == 5  # was 64: the card's setting was dropped


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    return export_package(str(tiny), tmp_path_factory.mktemp("export") / "tiny-onnx")


@pytest.mark.parametrize("value", [0, -3, "x", 2.5, None, True])
def test_a_bad_runtime_batch_size_on_the_card_is_refused_at_load_naming_the_model(exported, tmp_path, value):
    # 0 and -3 failed every image ("range() arg 3 must not be zero"); 'x' was "invalid literal for int() ..."
    # naming no model; 2.5 ran as 2 and True as 1.
    card = {k: v for k, v in exported.card.items() if k not in ("files", "created_with")}
    card["runtime"] = {**card["runtime"], "batch_size": value}
    root = tmp_path / "pkg"
    root.mkdir()
    files = {key: Path(shutil.copyfile(exported.file(key), root / exported.file(key).name))
             for key in ("onnx", "weights")}
    write_package(root, card, files)
    with pytest.raises(ModelPackageError, match=r"tiny-cnn: runtime\.batch_size on the card must be a whole number"):
        load_model(str(root))


def test_a_whole_float_batch_size_on_the_card_is_kept(exported, tmp_path):
    card = {k: v for k, v in exported.card.items() if k not in ("files", "created_with")}
    card["runtime"] = {**card["runtime"], "batch_size": 8.0}
    root = tmp_path / "pkg"
    root.mkdir()
    files = {key: Path(shutil.copyfile(exported.file(key), root / exported.file(key).name))
             for key in ("onnx", "weights")}
    write_package(root, card, files)
    assert load_model(str(root)).batch_size == 8


def test_cli_export_to_an_empty_out_is_refused_not_written_into_the_working_folder(tiny, tmp_path, monkeypatch):
    # `--out "$DIR"` with DIR unset wrote model.json, model.onnx and weights.pt into the working folder ("wrote .").
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", str(tiny), "--onnx", "--out", ""])
    assert result.exit_code == 2 and "--out is empty" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def two_class_graph(tmp_path_factory):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 2)).eval()
    return export_module(module, tmp_path_factory.mktemp("graph") / "model.onnx", (24, 24))


def _onnx_classifier(root: Path, graph: Path, **card_extra) -> Path:
    root.mkdir()
    card = {"name": "peer", "version": "0", "kind": "onnx-classifier", **card_extra}
    write_package(root, card, {"onnx": Path(shutil.copyfile(graph, root / "model.onnx"))})
    return root


@pytest.mark.parametrize("output", [{"ai_index": 5, "human_index": 0}, {"ai_index": -1, "human_index": 0},
                                    {"ai_index": "1", "human_index": 0}, {"ai_index": 1, "human_index": 1}])
def test_an_output_index_that_is_not_a_class_of_the_graph_is_refused_at_load(two_class_graph, tmp_path, output):
    # 5 failed every image with an IndexError; "1" with numpy's indexing message; -1 quietly counted from the end.
    root = _onnx_classifier(tmp_path / "peer", two_class_graph, input={"size": [24, 24]}, output=output)
    with pytest.raises(ModelPackageError, match=r"peer: output\.(ai_index|human_index)"):
        load_model(str(root))


def test_an_onnx_classifier_card_without_an_input_size_is_one_clear_reason(two_class_graph, tmp_path):
    root = _onnx_classifier(tmp_path / "peer", two_class_graph)  # was "could not be loaded: KeyError: 'input'"
    with pytest.raises(ModelPackageError, match=r"peer: the card has no input\.size"):
        load_model(str(root))
    good = _onnx_classifier(tmp_path / "good", two_class_graph, input={"size": [24, 24]},
                            output={"ai_index": 0, "human_index": 1})
    assert load_model(str(good)).logits(parity_images((24, 24), n=3)).shape == (3,)


@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)])
def test_cli_export_stopped_by_ctrl_c_or_sigterm_says_so_in_one_line(tiny, tmp_path, monkeypatch, signum, code):
    # Ctrl-C was click's bare "Aborted!" (exit 1); SIGTERM killed the process and left its scratch folder in /tmp.
    from synthdetect.models import onnx_backend as backend
    from synthdetect.scan.engine import ScanInterrupted

    def stopped(*args, **kwargs):
        raise ScanInterrupted(signum) if signum != 2 else KeyboardInterrupt()

    monkeypatch.setattr(backend, "export_package", stopped)
    result = CliRunner().invoke(app, ["export", str(tiny), "--onnx", "--out", str(tmp_path / "o")])
    assert result.exit_code == code, result.output
    assert "interrupted: the export did not finish" in result.output


def test_a_backend_named_with_surrounding_spaces_is_still_that_backend(monkeypatch):
    from synthdetect.models.onnx_backend import BACKEND_ENV, preferred_backend

    monkeypatch.setenv(BACKEND_ENV, " torch ")  # was "unknown inference backend ' torch '"
    assert preferred_backend({}) == "torch"
    monkeypatch.setenv(BACKEND_ENV, "  ")  # blank: not set, so the card decides
    assert preferred_backend({"runtime": {"backend": "torch"}}) == "torch"
