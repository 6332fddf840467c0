"""benchmarks/held_out_copies.py re-scores a card made with copies in its held-out split, and can add the result."""

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from synth_data import add_copies, write_manifest
from synthdetect.cli import app
from synthdetect.models.package import load_package
from synthdetect.train.datasets import open_dataset
from synthdetect.train.splits import split_records

REPO = Path(__file__).resolve().parents[1]


def test_held_out_copies_separates_the_copies_and_writes_them_beside_the_old_numbers(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (20, 20)}, size=16)
    add_copies(manifest, [(row, "a", None) for row in range(20)])
    out = tmp_path / "old-card"
    trained = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1", "--val-fraction", "0.2", "--test-fraction", "0.2",
        "--copies", "keep"])
    assert trained.exit_code == 0, trained.output
    old = json.loads((out / "model.json").read_text())
    assert old["training"]["split"]["test"]["n"] == 12  # copies scored, as before 2026-11-22

    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "held_out_copies.py"), str(out), "--data",
                          str(manifest), "--threads", "1", "--write"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    test = json.loads(run.stdout)["models"][str(out)]["test"]
    excluded = split_records(open_dataset(manifest), "stratified", val_fraction=0.2, test_fraction=0.2, seed=0)
    assert test["all"]["n"] == 12 and test["copies"]["n"] > 0
    assert test["copies"]["n"] + test["without_copies"]["n"] == 12
    assert test["without_copies"]["n"] == len(excluded.test)
    assert test["all"]["accuracy"] == round(old["metrics"]["test"]["at_0.5"]["accuracy"], 5)

    package = load_package(out)  # verifies the weights' sha256: --write leaves them alone
    assert package.card["metrics"]["test"] == old["metrics"]["test"]
    block = package.card["metrics"]["test_without_copies"]
    assert block["n"] == test["without_copies"]["n"] and block["copies_excluded"] == test["copies"]["n"]
    assert "| test_without_copies |" in (out / "MODEL_CARD.md").read_text()


    # An image the model cannot judge is counted not right and listed; --write does not put numbers over part of
    # a split (the script crashed on the first error verdict: None >= 0.5).
    card_before = (out / "model.json").read_bytes()
    kept = split_records(open_dataset(manifest), "stratified", val_fraction=0.2, test_fraction=0.2, seed=0,
                         copies="keep")
    broken = kept.test[0].ref
    Path(broken).write_bytes(Path(broken).read_bytes()[:40])  # a truncated image
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "held_out_copies.py"), str(out), "--data",
                          str(manifest), "--threads", "1", "--write"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "1 image(s) of its split could not be judged" in run.stderr
    assert (out / "model.json").read_bytes() == card_before
    test = json.loads(run.stdout)["models"][str(out)]["test"]  # the numbers are still printed
    assert len(test["not_judged"]) == 1 and test["not_judged"][0].startswith(f"{broken}: ")
    assert test["all"]["n"] == 12 and test["all"]["right"] <= 11
