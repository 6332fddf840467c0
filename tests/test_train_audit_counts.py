"""A card's per-split counts say what training, validation and test used, and how many files could not be read."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from synth_data import write_manifest
from synthdetect.cli import app


def test_the_card_counts_per_split_the_images_used_and_those_that_could_not_be_read(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (12, 12)}, size=16, broken=6)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1", "--val-fraction", "0.3", "--test-fraction", "0.2", "--copies", "keep"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    split, training = card["training"]["split"], card["training"]
    parts = ("train", "validation", "test")
    assert sum(split[p].get("unreadable", 0) for p in parts) == training["decode_error_count"] == 6
    assert sum(split[p]["n"] + split[p].get("unreadable", 0) for p in parts) == 30
    assert all(split[p]["n"] == split[p]["ai"] + split[p]["human"] for p in parts)
    assert split["train"]["n"] == 24 - split["validation"]["n"] - split["test"]["n"]  # the 24 readable images
    assert "broken" not in split["train"].get("sources", [])  # only unreadable files came from it
    assert split["validation"]["n"] == card["metrics"]["validation"]["n"]
    assert split["test"]["n"] == card["metrics"]["test"]["at_0.5"]["n"]
    # the card's counts, with the unreadable files counted back, draw the same split again
    from synthdetect.train.datasets import open_dataset
    from synthdetect.train.splits import rebuild_card_split

    rebuilt = rebuild_card_split(open_dataset(manifest), split)
    assert [len(rebuilt.train), len(rebuilt.val), len(rebuilt.test)] == [
        split[p]["n"] + split[p].get("unreadable", 0) for p in parts]
