"""Audit of ``synthdetect train --option`` for the linear-head kinds (session 26): keys they do not read."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthdetect.cli import app


def _train(tmp_path: Path, *args: str):
    # DATA does not exist: a refusal must come before the dataset is even looked for
    return CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])


@pytest.mark.parametrize("args, message", [
    # misspelt: handcrafted cropped 224 px and aggregated by mean, yet the card's options said crop_sise=32
    (["--model", "handcrafted", "--option", "crop_sise=32"],
     "--option crop_sise: handcrafted reads no such setting"),
    (["--model", "clip-head", "--option", "agregate=max"], "--option agregate: clip-head reads no such setting"),
    # keys of other kinds, which the linear heads never read (their card's description and limits are fixed)
    (["--model", "clip-head", "--option", "depth=4"], "--option depth: clip-head reads no such setting"),
    (["--model", "handcrafted", "--option", "description=mine"], "--option description: handcrafted reads no"),
    (["--model", "handcrafted", "--option", "max_aspect=4"], "--option max_aspect: handcrafted reads no"),
    (["--model", "clip-head", "--max-short-side", "64"], "--max-short-side: clip-head sets no serving limit"),
    # values that failed only after every image was decoded, or with Python's own words
    (["--model", "handcrafted", "--option", "crop_size=0"], "--option crop_size=0: expected a whole number, 1 or"),
    (["--model", "handcrafted", "--option", "crops=abc"], "--option crops=abc: expected a whole number"),
    (["--model", "clip-head", "--option", "aggregate=bogus"], "--option aggregate=bogus: expected one of mean"),
])
def test_linear_head_settings_they_would_ignore_or_fail_on_are_refused_before_the_data_is_read(
        tmp_path: Path, args, message):
    result = _train(tmp_path, *args)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "dataset not found" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize("args", [
    ["--model", "handcrafted", "--option", "crop_size=64", "--option", "crops=0", "--option", "aggregate=max",
     "--option", "cache=feature-cache", "--option", "keep_workdir=true"],
    ["--model", "clip-head", "--option", "crops=9", "--option", "aggregate=trimmed_mean"],
    ["--model", "small-cnn", "--max-short-side", "0", "--option", "max_aspect=4"],
])
def test_settings_the_linear_heads_read_pass(tmp_path: Path, args):
    assert "dataset not found" in _train(tmp_path, *args).output


def test_every_trainable_kind_has_its_settings_listed():
    """A kind missing from KIND_OPTIONS had every --option key accepted, and recorded on the card, unread."""
    from synthdetect.train.commands import KIND_OPTIONS
    from synthdetect.train.registry import trainer_kinds

    assert set(trainer_kinds()) <= set(KIND_OPTIONS)


def test_a_linear_head_card_no_longer_lists_a_width(tmp_path: Path):
    """``"width": 32`` (the --width default) stood in handcrafted's card options, a setting it has not got."""
    from synthdetect.train.commands import KIND_OPTIONS

    assert "width" not in KIND_OPTIONS["handcrafted"] and "width" not in KIND_OPTIONS["clip-head"]
