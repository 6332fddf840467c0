"""Every command that writes a model package replaces the one in its output folder whole, or not at all.

Written in place, a run stopped part-way (Ctrl-C, a full disk) left new weights beside the old card, which then
refused to load ("sha256 mismatch"), or a truncated ``model.json``.  Each writer is stopped here right after its
weights are written (the card write raises KeyboardInterrupt), and the package already there must still load,
byte for byte as it was.
"""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import synthdetect.models.package as package_module
from synth_data import write_manifest
from synthdetect.cli import app
from synthdetect.models.package import load_package, sha256_file, write_package
from tiny_model import write_tiny_cnn


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def _stop_at_the_card(monkeypatch, module=package_module) -> None:
    """Ctrl-C after a writer's weights are on disk and before its card is."""
    monkeypatch.setattr(module, "write_package", _interrupted)


def _no_partial_beside(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(".") and "partial" in p.name]


# -- a card rewritten on a full disk -----------------------------------------------------------------------


def _package_with_a_small_file(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"weights")
    write_package(root, {"name": "small", "kind": "small-cnn", "version": "1.0.0"}, {"weights": root / "weights.bin"})
    return root


def _with_file_size_limit(limit: int, action) -> None:
    """Run ``action`` where no file may grow past ``limit`` bytes, as on a disk that fills up."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        action()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_card_rewrite_on_a_full_disk_leaves_the_card_whole(tmp_path: Path):
    from synthdetect.models.package import add_card_metrics
    from synthdetect.train.wild import dump_json

    root = _package_with_a_small_file(tmp_path / "pkg")
    (root / "model.json").chmod(0o640)
    before = _contents(root)
    limit = len(before["model.json"]) + 64

    def add_a_large_block():
        with pytest.raises(OSError):
            add_card_metrics(root, {"peers_benchmark": {"note": "x" * 4096}})

    _with_file_size_limit(limit, add_a_large_block)
    assert load_package(root).card["name"] == "small"  # was: malformed card (a truncated model.json)
    assert _contents(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["MODEL_CARD.md", "model.json", "weights.bin"]
    add_card_metrics(root, {"peers_benchmark": {"note": "fits"}})
    assert load_package(root).card["metrics"]["peers_benchmark"] == {"note": "fits"}
    assert (root / "model.json").stat().st_mode & 0o777 == 0o640  # the card keeps its permissions

    # calibrate-route --write stores a router's card through dump_json
    card = json.loads((root / "model.json").read_text())
    written = (root / "model.json").read_bytes()
    _with_file_size_limit(len(written) + 64, lambda: pytest.raises(OSError, dump_json, root / "model.json",
                                                                   {**card, "routes": [{"x": "y" * 4096}]}))
    assert (root / "model.json").read_bytes() == written


# -- synthdetect export --onnx ----------------------------------------------------------------------------


def test_an_onnx_export_stopped_part_way_leaves_the_earlier_export_whole(tmp_path: Path, monkeypatch):
    from synthdetect.models import onnx_backend
    from synthdetect.models.onnx_backend import export_package

    tiny = write_tiny_cnn(tmp_path / "tiny", seed=3)
    other = write_tiny_cnn(tmp_path / "other", seed=4)
    out = tmp_path / "disk" / "exported"
    export_package(str(tiny), out)
    (out / "notes.txt").write_text("mine")
    before = _contents(out)
    with monkeypatch.context() as patch:
        _stop_at_the_card(patch, onnx_backend)
        with pytest.raises(KeyboardInterrupt):
            export_package(str(other), out)
    assert load_package(out).card["runtime"]["exported_from"] == str(tiny)  # was: sha256 mismatch for model.onnx
    assert _contents(out) == before and not _no_partial_beside(out)
    link = tmp_path / "exported-link"  # a link to the folder stays a link; its target gets the new package
    link.symlink_to(out, target_is_directory=True)
    package = export_package(str(other), link)
    assert package.root == link and link.is_symlink()
    assert load_package(out).card["runtime"]["exported_from"] == str(other)
    assert (out / "notes.txt").read_text() == "mine" and not _no_partial_beside(out)


# -- synthdetect train-wild -------------------------------------------------------------------------------


def test_train_wild_stopped_part_way_leaves_the_earlier_package_whole(tmp_path: Path, monkeypatch):
    manifest = write_manifest(tmp_path / "data", {"alpha": (4, 4), "beta": (4, 4), "gamma": (4, 4)}, size=32)
    out = tmp_path / "pkg"

    def train_wild(name: str, *extra: str):
        return CliRunner().invoke(app, [
            "train-wild", str(manifest), "--out", str(out), "--name", name, "--extractors", "handcrafted-v1",
            "--crops", "0", "--crop-size", "32", "--cache", str(tmp_path / "cache"), *extra])

    first = train_wild("first")
    assert first.exit_code == 0, first.output
    assert f"wrote {out} (" in first.output
    (out / "notes.txt").write_text("mine")
    before = _contents(out)
    with monkeypatch.context() as patch:
        _stop_at_the_card(patch)
        stopped = train_wild("stopped", "--global-short-side", "24")  # other features, so other heads
    assert stopped.exit_code != 0
    assert load_package(out).card["name"] == "first"  # was: sha256 mismatch for heads.npz
    assert _contents(out) == before and not _no_partial_beside(out)
    second = train_wild("second")
    assert second.exit_code == 0, second.output
    assert f"note: {out} holds a model package (name first" in second.output
    assert f"wrote {out} (" in second.output
    assert load_package(out).card["name"] == "second" and (out / "notes.txt").read_text() == "mine"
    assert not _no_partial_beside(out)


# -- synthdetect autopilot: the winner's export ---------------------------------------------------------


def _autopilot_summary() -> dict:
    return {"metric": "roc_auc", "split": {"test_sources": ["s3"]}, "budget_s": 60}


def test_an_autopilot_export_stopped_part_way_leaves_the_earlier_winner_whole(tmp_path: Path, monkeypatch):
    from synthdetect.train.autopilot import export_best

    target = tmp_path / "run" / "model"
    write_tiny_cnn(tmp_path / "earlier", seed=0)
    export_best({"candidate": "earlier", "package": str(tmp_path / "earlier")}, target, _autopilot_summary(), [])
    (target / "stale.txt").write_text("from the earlier run")
    before = _contents(target)
    winner = write_tiny_cnn(tmp_path / "run" / "candidates" / "quick" / "package", seed=1)
    row = {"candidate": "quick", "package": str(winner), "roc_auc": 0.9}
    with monkeypatch.context() as patch:
        _stop_at_the_card(patch)
        with pytest.raises(KeyboardInterrupt):
            export_best(row, target, _autopilot_summary(), [row])
    assert _contents(target) == before  # was: the earlier winner removed, a copy without its autopilot card
    assert load_package(target).card["autopilot"]["held_out"]["roc_auc"] is None
    assert not _no_partial_beside(target)
    assert export_best(row, target, _autopilot_summary(), [row]) == target
    package = load_package(target)
    assert package.card["autopilot"]["held_out"]["roc_auc"] == 0.9
    assert sha256_file(target / "weights.pt") == sha256_file(winner / "weights.pt")
    assert not (target / "stale.txt").exists()  # OUT/model is this run's winner alone, as before
    assert not _no_partial_beside(target)


# -- synthdetect distill: the student -------------------------------------------------------------------


@pytest.fixture(scope="module")
def distill_records(tmp_path_factory):
    from test_autopilot import make_dataset

    from synthdetect.train.datasets import open_dataset

    return open_dataset(make_dataset(tmp_path_factory.mktemp("distill-data"), sources=4, per_class=4))


def _trains_a_tiny_student(kind, request, targets):
    write_tiny_cnn(Path(request.out), seed=5)
    return load_package(request.out), list(request.train)


def _stopped_after_the_students_weights(kind, request, targets):
    import torch

    out = Path(request.out)
    (out / "_work").mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": request.config.fingerprint, "epoch": 0}, out / "_work" / "checkpoint.pt")  # as the loop does
    (out / "weights.pt").write_bytes(b"new weights")
    raise KeyboardInterrupt


def test_distill_stopped_part_way_leaves_the_earlier_student_whole(distill_records, tmp_path: Path, monkeypatch):
    from test_distill import write_teacher

    from synthdetect.train import distill
    from synthdetect.train.distill import run_distillation

    teacher = write_teacher(tmp_path / "teacher", "bright", 1.0)
    out = tmp_path / "out"
    student = write_tiny_cnn(out / "student", seed=0)
    (student / "notes.txt").write_text("mine")
    before = _contents(student)
    run = dict(records=distill_records, out=out, holdout_sources=["s3"], val_fraction=0.25, use_cache=False,
               seed=0)
    monkeypatch.setattr(distill, "train_student", _stopped_after_the_students_weights)
    with pytest.raises(KeyboardInterrupt):
        run_distillation([str(teacher)], "small-cnn", **run)
    assert load_package(student).card["name"] == "tiny-cnn"  # was: sha256 mismatch for weights.pt
    assert _contents(student) == before and not _no_partial_beside(student)
    assert (student / "_work" / "checkpoint.pt").is_file()  # where a retry resumes from, as before
    monkeypatch.setattr(distill, "train_student", _trains_a_tiny_student)
    result = run_distillation([str(teacher)], "small-cnn", **run)
    assert result.student_package == out / "student" and result.summary["student"] == str(out / "student")
    assert "distillation" in load_package(student).card
    assert (student / "notes.txt").read_text() == "mine" and not (student / "_work").exists()
    assert not _no_partial_beside(student)


def test_a_distill_retry_resumes_only_a_checkpoint_of_the_same_run(distill_records, tmp_path: Path, monkeypatch):
    """The loop compared only its settings and image counts: another alpha resumed the earlier epochs."""
    from test_distill import write_teacher

    from synthdetect.train import distill
    from synthdetect.train.distill import DistillError, run_distillation

    teacher = write_teacher(tmp_path / "teacher", "bright", 1.0)
    run = dict(records=distill_records, out=tmp_path / "out", holdout_sources=["s3"], val_fraction=0.25,
               use_cache=False, seed=0)
    monkeypatch.setattr(distill, "train_student", _stopped_after_the_students_weights)
    with pytest.raises(KeyboardInterrupt):
        run_distillation([str(teacher)], "small-cnn", **run, alpha=0.7)
    monkeypatch.setattr(distill, "train_student", _trains_a_tiny_student)
    with pytest.raises(DistillError, match=r"checkpoint.pt belongs to a different run \(alpha differs\)"):
        run_distillation([str(teacher)], "small-cnn", **run, alpha=0.3)
    assert not (tmp_path / "out" / "student" / "model.json").exists()
    result = run_distillation([str(teacher)], "small-cnn", **run, alpha=0.7)  # the same run goes on
    assert load_package(result.student_package).card["distillation"]["alpha"] == 0.7


def test_a_card_that_can_be_written_in_a_folder_that_cannot_is_rewritten_in_place(tmp_path: Path, monkeypatch):
    """add_card_metrics and calibrate-route --write failed with PermissionError where the folder was read-only but
    the card was not (a shared install); the temporary file beside the card cannot be made there."""
    import builtins

    from synthdetect.models import package as package_module

    card = tmp_path / "model.json"
    card.write_text("old")

    def no_new_files(file, mode="r", *args, **kwargs):
        if "x" in mode:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(package_module, "open", no_new_files, raising=False)
    package_module.write_text_atomic(card, "new")
    assert card.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]
    card.chmod(0o444)
    monkeypatch.setattr(package_module.os, "access", lambda path, mode: False)  # root could write it anyway
    with pytest.raises(PermissionError):
        package_module.write_text_atomic(card, "newer")
    assert card.read_text() == "new"
