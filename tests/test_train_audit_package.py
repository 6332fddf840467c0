"""A model package replaces the one in ``--out`` in one rename: a run stopped part-way leaves the old one whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth_data import write_manifest
from synthdetect.cli import app
from synthdetect.models.package import load_package, sha256_file
from synthdetect.train import registry
from tiny_model import write_tiny_cnn


def _quick_train(data: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, [
        "train", str(data), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1", "--val-fraction", "0.3", "--test-fraction", "0.2", *extra])


def _stopped_after_the_weights(request):
    """A run killed between writing its weights and its card, as Ctrl-C during the test-set scoring would."""
    out = Path(request.out)
    (out / "_work").mkdir(parents=True, exist_ok=True)
    (out / "_work" / "checkpoint.pt").write_bytes(b"epochs")
    (out / "weights.pt").write_bytes(b"new weights")
    raise KeyboardInterrupt


def test_a_run_stopped_after_writing_its_weights_leaves_the_old_package_whole(tmp_path: Path, monkeypatch):
    manifest = write_manifest(tmp_path / "data", {"a": (10, 10)}, size=16)
    out = write_tiny_cnn(tmp_path / "pkg")
    before = {name: sha256_file(out / name) for name in ("weights.pt", "model.json", "MODEL_CARD.md")}
    monkeypatch.setattr(registry, "get_trainer", lambda kind: _stopped_after_the_weights)
    result = _quick_train(manifest, out)
    assert result.exit_code == 130, result.output
    assert load_package(out).card["name"] == "tiny-cnn"  # the weights still match their card
    assert {name: sha256_file(out / name) for name in before} == before
    assert f"{out / '_work' / 'checkpoint.pt'} holds the epochs finished so far" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pkg"]  # no partial folder left behind


def test_a_finished_run_replaces_the_package_and_keeps_what_else_the_folder_held(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (10, 10)}, size=16)
    out = write_tiny_cnn(tmp_path / "pkg")
    (out / "notes.txt").write_text("mine")
    card = json.loads((out / "model.json").read_text())
    (out / "old-extra.bin").write_bytes(b"x")  # a file the old card lists goes with the old package
    card["files"]["extra"] = {"path": "old-extra.bin", "sha256": sha256_file(out / "old-extra.bin")}
    (out / "model.json").write_text(json.dumps(card))
    (tmp_path / ".pkg.partial").mkdir()  # left by a run that was killed
    (tmp_path / ".pkg.partial" / "weights.pt").write_bytes(b"half")
    result = _quick_train(manifest, out, "--name", "second")
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (" in result.output
    package = load_package(out)
    assert package.card["name"] == "second" and package.card["kind"] == "small-cnn"
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "model.json", "notes.txt",
                                                      "training_metrics.csv", "training_metrics.jsonl", "weights.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "pkg"]
    kept = _quick_train(manifest, tmp_path / "kept", "--option", "keep_workdir=true")
    assert kept.exit_code == 0, kept.output
    assert (tmp_path / "kept" / "_work" / "checkpoint.pt").is_file() and load_package(tmp_path / "kept")


def test_a_failed_rename_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch):
    import synthdetect.models.package as package_module
    from synthdetect.models.package import replace_package

    out = write_tiny_cnn(tmp_path / "pkg")
    (out / "notes.txt").write_text("mine")
    staged = write_tiny_cnn(tmp_path / ".pkg.partial", seed=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rename = os.rename

    def refuse_the_last_step(src, dst):
        if Path(src) == staged:
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(package_module.os, "rename", refuse_the_last_step)
    with pytest.raises(KeyboardInterrupt):
        replace_package(staged, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pkg.partial", "pkg"]


def _writes_a_package(request):
    """A trainer that finishes at once: the tiny package, with the metrics the command prints."""
    from synthdetect.models.package import write_package

    root = write_tiny_cnn(Path(request.out), seed=1)
    card = json.loads((root / "model.json").read_text())
    card["metrics"] = {"validation": {"accuracy": 0.5, "roc_auc": 0.5, "ece": 0.1}}
    return write_package(root, card, {"weights": root / "weights.pt"})


def test_an_out_that_is_a_link_to_a_folder_stays_a_link(tmp_path: Path, monkeypatch):
    manifest = write_manifest(tmp_path / "data", {"a": (10, 10)}, size=16)
    real = write_tiny_cnn(tmp_path / "disk" / "pkg")
    link = tmp_path / "pkg"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setattr(registry, "get_trainer", lambda kind: _writes_a_package)
    result = _quick_train(manifest, link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert load_package(real).card["metrics"]["validation"]["accuracy"] == 0.5
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["pkg"]


def test_two_runs_into_one_out_folder_are_refused_and_a_killed_run_leaves_no_lock(tmp_path: Path):
    """Two runs given the same --out shared OUT/_work (one resumed the other's checkpoint) and its staging folder
    (the second removed the first's half-written package); the second is now refused in one line."""
    import subprocess
    import sys

    from synthdetect.models.package import exclusive_out
    from synthdetect.train.autopilot import AutopilotError, run_autopilot
    from synthdetect.train.distill import DistillError, run_distillation

    manifest = write_manifest(tmp_path / "data", {"a": (4, 4), "b": (4, 4), "c": (4, 4)}, size=16)
    out = tmp_path / "pkg"
    with exclusive_out(out):
        assert (tmp_path / ".pkg.lock").read_text() == str(os.getpid())
        result = _quick_train(manifest, out)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (f"error: {out}: another synthdetect run is writing this package now "
                                         f"(process {os.getpid()}); wait for it to end or choose another --out")
        wild = CliRunner().invoke(app, ["train-wild", str(manifest), "--out", str(out)])
        assert wild.exit_code == 2 and "another synthdetect run is writing this package" in wild.stderr
        with pytest.raises(AutopilotError, match="another synthdetect run is writing this package"):
            run_autopilot([], out, budget_s=5)
        with pytest.raises(DistillError, match="another synthdetect run is writing this package"):
            run_distillation(["t"], "small-cnn", [], out)
        (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
        assert _quick_train(manifest, tmp_path / "link" / "pkg").exit_code == 2  # the same folder by another path
        assert not out.exists()  # refused before anything was written
    assert not (tmp_path / ".pkg.lock").exists()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom synthdetect.models.package import "
                               "exclusive_out\nwith exclusive_out(sys.argv[1]):\n print('held', flush=True)\n "
                               "time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _quick_train(manifest, out).exit_code == 2
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with exclusive_out(out):  # the system released the killed run's lock; its file is simply reused
        pass


def test_a_checkpoint_cut_by_ctrl_c_while_it_is_written_leaves_the_last_whole_one(tmp_path: Path, monkeypatch):
    """torch.save wrote OUT/_work/checkpoint.pt in place: Ctrl-C during the write left it cut, and every retry
    ended in a torch traceback ("failed locating file data.pkl") instead of resuming."""
    import io

    import torch

    manifest = write_manifest(tmp_path / "data", {"a": (10, 10)}, size=16)
    out = tmp_path / "pkg"
    real_save = torch.save

    def cut_on_the_second_epochs_checkpoint(obj, stream, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 1:
            whole = io.BytesIO()
            real_save(obj, whole, *args, **kwargs)
            if isinstance(stream, (str, os.PathLike)):  # saved in place, as before
                with open(stream, "wb") as handle:
                    handle.write(whole.getvalue()[: len(whole.getvalue()) // 2])
            else:
                stream.write(whole.getvalue()[: len(whole.getvalue()) // 2])
            raise KeyboardInterrupt
        return real_save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", cut_on_the_second_epochs_checkpoint)
    result = _quick_train(manifest, out, "--epochs", "3", "--patience", "3")
    assert result.exit_code == 130, result.output
    monkeypatch.setattr(torch, "save", real_save)
    work = out / "_work"
    assert torch.load(work / "checkpoint.pt", weights_only=False)["epoch"] == 0  # the first epoch's, whole
    assert not [p.name for p in work.rglob("*.part")]
    resumed = _quick_train(manifest, out, "--epochs", "3", "--patience", "3")
    assert resumed.exit_code == 0, resumed.output


def test_an_input_size_under_8_is_refused_before_decoding(tmp_path: Path):
    """--input-size 7 ended in torch's 'Output size is too small' traceback after the data was decoded."""
    manifest = write_manifest(tmp_path / "data", {"a": (4, 4)}, size=16)
    result = _quick_train(manifest, tmp_path / "pkg", "--input-size", "7")
    assert result.exit_code == 2 and "greater than or equal to 8" in result.output, result.output
    assert not (tmp_path / "pkg").exists()


def test_a_thread_count_beyond_any_machine_or_below_zero_is_refused_before_decoding(tmp_path: Path):
    """train --threads 100000 went to torch.set_num_threads (a thread explosion, as SYNTHDETECT_THREADS=100000 held
    32,432 threads in detect, audit); -1 was taken as 'all CPUs'."""
    manifest = write_manifest(tmp_path / "data", {"a": (4, 4)}, size=16)
    for bad in ("100000", "-1"):
        result = _quick_train(manifest, tmp_path / "pkg", "--threads", bad)
        assert result.exit_code == 2 and "Invalid value for '--threads'" in result.output, result.output
    assert not (tmp_path / "pkg").exists()
