"""The training-speed benchmark runs against the shipped card (a refactor once broke a benchmark unnoticed)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--steps", "1", "--threads", "1", *args]


def _run(*args: str) -> dict:
    out = subprocess.run(_command(*args), capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def _run_side_by_side(*runs: tuple[str, ...]) -> list[dict]:
    """Each run's JSON, the runs started together: each spends seconds importing torch on one thread."""
    procs = [subprocess.Popen(_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in runs]
    try:
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    return [json.loads(out) for out, _ in outputs]


def test_train_speed_projects_the_shipped_recipe():
    card = json.loads((REPO / "src" / "synthdetect" / "weights" / "cifake-cnn" / "model.json").read_text())
    result = _run("--width", "8", "--layout", "pool-mid", "--clip-images", "2")
    assert result["architecture"]["width"] == 8 and result["architecture"]["depth"] == 4  # override + card
    assert result["architecture"]["layout"] == "pool-mid"
    assert result["epochs"] == card["training"]["config"]["epochs"]
    assert result["train_images"] == 72154 and result["batch_size"] == 128
    projected = result["projected_epoch_s"] * result["epoch_equivalents"] / 60
    assert abs(result["projected_cnn_min"] - projected) <= 0.06  # rounded
    # the shipped 2.0.0 is a clip-cascade: its CLIP embeddings (552 s of its 21 min run) are part of the projection
    assert card["kind"] == "clip-cascade"
    (clip,) = result["other_members"]
    assert clip["member"] == "clip embeddings" and len(clip["embed_ms"]) == 2
    assert clip["embeddings"] == 3000 + round(0.15 * (3960 + 3952))
    assert abs(result["projected_run_min"] - projected - clip["projected_min"]) <= 0.11  # both rounded
    # three rounds by default: the projection is their median, the fit is judged on the slowest
    rounds = result["projected_epoch_s_rounds"]
    assert len(rounds) == 3 and result["projected_epoch_s"] == sorted(rounds)[1]
    assert abs(result["projected_run_min_slowest"] - max(rounds) * result["epoch_equivalents"] / 60
               - clip["projected_min_slowest"]) <= 0.11
    assert result["fits_budget"] == (result["projected_run_min_slowest"] + result["overhead_min"] < 30)
    assert result["host"]["cpu"] and isinstance(result["host"]["torch_cpu_capability"], str)
    assert result["host"]["cpus_usable"] >= 1


def test_train_speed_counts_selective_backprop_epochs_at_their_share():
    # bookkeeping, not timing: one round of steps each
    result, full = _run_side_by_side(
        ("--width", "8", "--epochs", "16", "--hard-fraction", "0.5", "--hard-after", "3", "--rounds", "1"),
        ("--width", "8", "--epochs", "16", "--hard-fraction", "1", "--rounds", "1"))
    assert result["hard_fraction"] == 0.5 and result["epoch_equivalents"] == 9.5  # 3 full + 13 halves
    assert full["epoch_equivalents"] == 16
