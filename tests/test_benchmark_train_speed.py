"""The training-speed benchmark runs against the shipped card (a refactor once broke a benchmark unnoticed)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train_speed_projects_the_shipped_recipe():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--steps", "1",
                          "--width", "8", "--layout", "pool-mid", "--threads", "1"],
                         capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout)
    assert result["architecture"]["width"] == 8 and result["architecture"]["depth"] == 4  # override + card
    assert result["architecture"]["layout"] == "pool-mid"
    assert result["epochs"] == 12 and result["train_images"] == 72154 and result["batch_size"] == 128
    assert abs(result["projected_run_min"] - result["projected_epoch_s"] * 12 / 60) <= 0.11  # both rounded
    assert result["fits_budget"] == (result["projected_run_min"] + result["overhead_min"] < 30)
