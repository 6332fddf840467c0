"""benchmarks/cifake_recipe_sweep.py: the GPU sweep's plumbing, run here on the CPU on a tiny zip.

It runs only where a GPU is lent, so a refactor could break it unnoticed; these check that it trains through the
real command, reports validation and nothing held out, refuses a recipe costlier than the baseline, and that its
pack/unpack round trip rebuilds the same members.
"""

import json
import subprocess
import sys
from pathlib import Path

from synth_data import write_folder, zip_tree

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "cifake_recipe_sweep.py"


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_sweep_reports_validation_only_and_packs_the_zip_losslessly(tmp_path: Path):
    write_folder(tmp_path / "data", n_per_class=40, names=("FAKE", "REAL"), size=32)
    archive = zip_tree(tmp_path / "data", tmp_path / "small.zip")
    packed = _sweep(str(archive), "--pack", str(tmp_path / "pack"))
    assert packed.returncode == 0, packed.stderr
    rebuilt = tmp_path / "re" / "small.zip"
    run = _sweep(str(rebuilt), "--from-tar", str(tmp_path / "pack" / "cifake.tar.xz"), "--out", str(tmp_path / "out"),
                 "--recipes", "baseline,flipalt", "--seeds", "0", "--workers", "2", "--device", "cpu",
                 "--extra", "--epochs 1 --patience 1 --hard-fraction 1 --threads 1")  # no selection in a 1-epoch run
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[0]["members"] == json.loads(packed.stdout)["members"] and lines[0]["members"].startswith("80 ")
    results = [line for line in lines if "val_correct" in line and "summary" not in line]
    assert sorted(r["recipe"] for r in results) == ["baseline", "flipalt"]
    for result in results:
        assert result["val_n"] == 4 and 0 <= result["val_correct"] <= 4 and result["epochs_run"] == 1
        assert not any("test" in key or "held" in key for key in result)
    summary = {line["summary"]: line for line in lines if "summary" in line}
    assert summary["baseline"]["paired_gain"] == [0]
    saved = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert saved == results


def test_sweep_lists_costs_and_refuses_a_recipe_costlier_than_the_baseline(monkeypatch, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import cifake_recipe_sweep as sweep
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert sweep.main(["--list", "--recipes", "baseline,width24x26"]) == 0
    costs = {row["recipe"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert costs["baseline"]["epoch_equivalents"] == 8.5 and round(costs["baseline"]["mmac_per_image"], 1) == 52.8
    assert costs["width24x26"]["vs_baseline"] < 1
    monkeypatch.setitem(sweep.RECIPES, "longer", ["--epochs", "20", "--patience", "20"])
    assert sweep.main(["--list", "--recipes", "baseline,longer"]) == 2
    assert "longer cost more training arithmetic than the baseline" in capsys.readouterr().err
