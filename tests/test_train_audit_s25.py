"""Audit of ``synthdetect train``'s torch loop (session 25): resume, settings that were ignored, early refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synthdetect.cli import app
from synthdetect.models.cnn import SmallCNN
from synthdetect.train.augment import AugmentConfig, PixelAugmenter
from synthdetect.train.trainer import TrainConfig, fit_classifier
from test_train import MEAN, STD, InterruptingAugmenter, _arrays, _Interrupt


def _dropout_linear() -> torch.nn.Module:
    # dropout draws its masks from torch's global random state, not from the loop's generator
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(8 * 8 * 3, 1),
                               torch.nn.Flatten(0))


def test_a_resumed_run_trains_the_same_weights_as_the_run_left_alone(tmp_path: Path):
    """Resuming re-seeded torch's global state, so epoch 2 drew epoch 1's dropout masks again and the resumed
    run ended with other weights than the uninterrupted one."""
    config = TrainConfig(epochs=3, patience=10, batch_size=8, lr=0.05, threads=1)
    train, val = _arrays(), _arrays(seed=1)
    augment = PixelAugmenter(AugmentConfig())
    torch.manual_seed(0)
    fit_classifier(_dropout_linear(), train, val, config, mean=MEAN, std=STD, workdir=tmp_path / "a", augment=augment)

    torch.manual_seed(0)
    with pytest.raises(_Interrupt):  # batches of 8: stopped in epoch 2, after epoch 1's checkpoint
        fit_classifier(_dropout_linear(), train, val, config, mean=MEAN, std=STD, workdir=tmp_path / "b",
                       augment=InterruptingAugmenter(augment.config, 32 // 8))
    torch.manual_seed(0)  # a fresh process: the same command seeds the same way
    result = fit_classifier(_dropout_linear(), train, val, config, mean=MEAN, std=STD, workdir=tmp_path / "b",
                            augment=augment)
    assert len(result.history) == 3
    straight, resumed = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=False) for run in ("a", "b"))
    assert [row["train_loss"] for row in resumed["history"]] == [row["train_loss"] for row in straight["history"]]
    for key, value in straight["model"].items():  # the last epoch's weights, not only the restored best
        assert torch.equal(value, resumed["model"][key]), key


def test_validation_left_with_one_class_by_unreadable_files_is_refused_before_the_first_epoch(tmp_path: Path):
    """The split had both classes; once unreadable files took the last human image out, every epoch trained and
    only the calibration at the end said the validation split needs both classes."""
    x_val, _ = _arrays(6, seed=1)
    with pytest.raises(ValueError, match=r"validation images that could be read are 0 human, 6 ai: validation needs "
                                         r"both classes .* so nothing was trained"):
        fit_classifier(_dropout_linear(), _arrays(), (x_val, np.ones(6, dtype=np.float32)),
                       TrainConfig(epochs=2, batch_size=8, threads=1), mean=MEAN, std=STD, workdir=tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_a_network_too_deep_for_its_input_is_one_line_before_the_first_epoch(tmp_path: Path):
    """``--option depth=5`` on 8 px inputs pools them to nothing: the first step stopped with a torch traceback."""
    with pytest.raises(ValueError, match=r"the network cannot take 8x8 px inputs \(.*too small.*\); choose a larger "
                                         r"--input-size, or for small-cnn and ela-cnn a smaller --option depth"):
        fit_classifier(SmallCNN(width=2, depth=5), _arrays(), _arrays(seed=1),
                       TrainConfig(epochs=1, batch_size=8, threads=1), mean=MEAN, std=STD, workdir=tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("hparams, message", [
    ({"depth": 0}, "small-cnn depth 0: expected a whole number of blocks, 1 or more"),
    ({"depth": -1}, "small-cnn depth -1: expected a whole number of blocks, 1 or more"),
    ({"width": 0}, "small-cnn width 0: expected a whole number of channels, 1 or more"),
])
def test_a_small_cnn_without_blocks_or_channels_is_refused(hparams: dict, message: str):
    # depth 0 had trained and packaged a "CNN" with no convolution at all (a linear model of the mean colour)
    with pytest.raises(ValueError, match=message):
        SmallCNN(**hparams)
    assert SmallCNN(width=np.int64(2), depth=1).hparams["depth"] == 1  # numpy whole numbers are whole numbers


@pytest.mark.parametrize("args, message", [
    # selection starts after --hard-after full epochs (3 by default): a 2-epoch run never selected, said nothing,
    # and its card still recorded hard_fraction 0.5
    (["--hard-fraction", "0.5", "--epochs", "2"],
     "--hard-fraction 0.5 starts after --hard-after 3 full epochs, but --epochs 2 ends the run first, so no epoch "
     "would select images; lower --hard-after or raise --epochs"),
    (["--hard-fraction", "0.5", "--hard-after", "4", "--epochs", "4"], "but --epochs 4 ends the run first"),
    (["--hard-after", "2"], "--hard-after 2 does nothing without --hard-fraction below 1"),
    # inf passed the check and trained a whole epoch before "training diverged ... Try a lower --lr"
    (["--lr", "inf"], "--lr inf: the learning rate must be above 0 and finite"),
    (["--weight-decay", "inf"], "--weight-decay inf: expected a number, 0 or more"),
])
def test_settings_that_would_be_ignored_or_blow_up_are_refused_before_the_data_is_read(tmp_path: Path, args, message):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "dataset not found" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [
    ["--hard-fraction", "0.5", "--hard-after", "1", "--epochs", "2"],  # epoch 2 selects
    ["--hard-fraction", "1", "--hard-after", "2"],  # an explicit "off" beside a recipe's --hard-after
])
def test_selective_backprop_settings_that_act_or_are_plainly_off_still_run(tmp_path: Path, args):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert "hard-" not in result.output, result.output  # it got as far as the data


def test_a_package_that_refuses_its_own_held_out_images_says_so(tmp_path: Path):
    """small-cnn trained on 96 px images served at most 64 px (2x its 32 px input): `detect` called every image
    like its training data "image larger than ... handles" while `train` printed a held-out accuracy for them."""
    from types import SimpleNamespace

    from synth_data import make_image
    from synthdetect.train.commands import judged_elsewhere
    from synthdetect.train.datasets import Record
    from tiny_model import write_tiny_cnn

    package = write_tiny_cnn(tmp_path / "pkg", max_short_side=64)
    records = {}
    for name, side in (("small", 32), ("large", 96)):
        path = tmp_path / f"{name}.png"
        make_image(1, seed=side, size=side).save(path)
        records[name] = Record(ref=str(path), label=1)
    parts = SimpleNamespace(val=[records["small"], records["large"]], test=[records["large"]])
    line = judged_elsewhere(package, parts)
    assert line is not None and line.startswith(f"{package} answers 'uncertain' for 1 of 2 validation, 1 of 1 test images")
    assert "large.png: image larger than tiny-cnn handles (short side 96 > 64 px)" in line
    assert "yet its card's numbers score them" in line and "--max-short-side N, 0 for none" in line
    assert judged_elsewhere(package, SimpleNamespace(val=[records["small"]], test=[])) is None


def test_a_negative_serving_limit_is_refused(tmp_path: Path):
    # -5 was written to the card, and the package then called every image "larger than it handles (32 > -5 px)"
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
                                      "--max-short-side", "-5"])
    assert result.exit_code == 2 and "Invalid value for '--max-short-side'" in " ".join(result.output.split())


@pytest.mark.parametrize("args, message", [
    # a typo trained the default (depth 3) and the card still said depth "dpeth=4"
    (["--option", "dpeth=4"], "--option dpeth: small-cnn reads no such setting, so it would be ignored; check the "
                              "spelling (small-cnn reads depth, description,"),
    (["--option", "freeze_backbone=true", "--option", "ela_quality=80"],
     "--option freeze_backbone, ela_quality: small-cnn reads no such setting, so they would be ignored"),
    (["--model", "efficientnet-lite0", "--width", "8"], "--width: efficientnet-lite0 has no width setting"),
    (["--model", "efficientnet-lite0", "--option", "depth=2"], "--option depth: efficientnet-lite0 reads no such"),
    (["--model", "ela-cnn", "--option", "ela_quality=150"],
     "--option ela_quality=150: expected a whole-number JPEG quality from 1 to 100"),
    (["--model", "ela-cnn", "--option", "ela_quality=abc"], "--option ela_quality=abc: expected a whole-number"),
])
def test_kind_settings_a_kind_would_ignore_are_refused_before_the_data_is_read(tmp_path: Path, args, message):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "dataset not found" not in result.output


@pytest.mark.parametrize("args", [
    ["--option", "depth=4", "--option", "tta_hflip=true", "--option", "keep_workdir=true", "--option", "max_aspect=4"],
    ["--model", "ela-cnn", "--option", "ela_quality=80", "--option", "layout=pool-mid"],
    ["--model", "efficientnet-lite0", "--option", "freeze_backbone=true", "--option", "min_side=16"],
    ["--model", "small-pair", "--option", "lite_epochs=1", "--option", "version=2.0.0", "--option", "depth=3"],
])
def test_settings_the_kind_reads_pass(tmp_path: Path, args):
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert "dataset not found" in result.output, result.output


def test_the_option_table_names_every_setting_the_trainers_read():
    """KIND_OPTIONS is a list kept by hand: a setting a trainer starts reading must join it, or it is refused."""
    import re

    import synthdetect
    from synthdetect.train.commands import KIND_OPTIONS

    root = Path(synthdetect.__file__).parent
    read_by = {"train/small_image.py": ("small-cnn", "ela-cnn", "small-pair"), "train/small_pair.py": ("small-pair",),
               "models/efficientnet_lite.py": ("efficientnet-lite0",), "train/clip_cascade.py": ("clip-cascade",),
               "train/wild_trainers.py": ("clip-head", "handcrafted")}
    for source, kinds in read_by.items():
        keys = set(re.findall(r"options(?:\.get\(|\.setdefault\(|\[)\"([a-z_0-9]+)\"", (root / source).read_text()))
        assert keys, source
        allowed = set().union(*(KIND_OPTIONS[kind] for kind in kinds))
        assert keys <= allowed, (source, keys - allowed)


def test_a_retry_may_keep_its_workdir_or_reword_its_card_without_losing_the_finished_epochs():
    """Adding --option keep_workdir=true to a retry was refused as "a different run (--option differs); delete it",
    which would have thrown the finished epochs away; so were options in another order and the default augment."""
    from synthdetect.train.trainer import fingerprint_differences

    saved = {"--epochs": 30, "--option": ["depth=4", "tta_hflip=true"], "--augment": None, "dataset": "d"}
    same = {"--epochs": 30, "--option": ["tta_hflip=true", "keep_workdir=true", "depth=4", "description=mine",
                                         "max_aspect=4"],  # the card's serving limits, as --max-short-side
            "--augment": "flip,shift:2", "dataset": "d"}
    assert fingerprint_differences(saved, same) == []
    assert fingerprint_differences({**saved, "--option": None}, {**same, "--option": ["keep_workdir=true"]}) == []
    assert fingerprint_differences(saved, {**same, "--option": ["depth=3", "tta_hflip=true"]}) == ["--option"]
    assert fingerprint_differences(saved, {**same, "--augment": "flip:alt"}) == ["--augment"]
    assert fingerprint_differences(saved, {**same, "--augment": "jpeg:7"}) == ["--augment"]  # unparsable: as typed


def test_ela_cnn_says_its_jpeg_augmentation_does_not_simulate_a_re_upload():
    # accepted without a word: the JPEG/blur/resize act on the ELA image, which no re-saved file ever produces
    from synthdetect.train.augment import parse_augment
    from synthdetect.train.commands import augment_note

    note = augment_note("ela-cnn", parse_augment("jpeg:0.5,blur:0.2"))
    assert note and note.startswith("ela-cnn: the jpeg, blur augmentations act on the error-level image the network "
                                 "sees, not on the photo, so they do not simulate")
    assert augment_note("small-cnn", parse_augment("jpeg:0.5")) is None
    assert augment_note("ela-cnn", parse_augment("flip,crop:0.7")) is None


def test_a_class_of_one_image_is_told_to_add_images_not_to_raise_the_validation_share(tmp_path: Path):
    # "raise --val-fraction" cannot help: the one human image cannot be in training and validation both
    from synth_data import write_manifest

    manifest = write_manifest(tmp_path / "d", {"a": (8, 1)}, size=8)
    result = CliRunner().invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--val-fraction", "0.3"])
    assert result.exit_code == 2, result.output
    assert ("the data holds 1 human image (1 human, 8 ai), and training and validation each need one; add human "
            "images") in " ".join(result.output.split())
    assert "raise --val-fraction" not in result.output and "decode" not in result.output


def test_the_closing_line_says_how_the_package_answers_the_held_out_images():
    """It printed "held-out test accuracy 0.5000" (at p_ai 0.5, which the package never decides by) for a package
    whose verdicts were right on 59 of 60 test images, and never how many human images it calls AI."""
    from synthdetect.train.commands import served_summary

    bands = {"ai_images": {"ai": 30, "human": 0, "uncertain": 0}, "human_images": {"ai": 1, "human": 25, "uncertain": 4}}
    assert served_summary(bands) == "; as served: 1 of 30 human images called ai, 56 of 60 images decided, 55 of them right"
    everything_uncertain = {"ai_images": {"ai": 0, "human": 0, "uncertain": 3},
                            "human_images": {"ai": 0, "human": 0, "uncertain": 2}}
    assert served_summary(everything_uncertain) == "; as served: 0 of 2 human images called ai, 0 of 5 images decided"
    assert served_summary(None) == ""  # no test set: validation numbers only, as before


def test_a_mixing_share_without_mixing_is_refused():
    # "mixprob:0.5" alone was accepted and dropped: the run printed "augment: none,flip,shift:2"
    from synthdetect.train.augment import parse_augment

    with pytest.raises(ValueError, match=r"--augment 'mixprob:0.5': mixprob is the share of batches mixed, and "
                                         r"nothing is mixed without mixup or cutmix"):
        parse_augment("flip,mixprob:0.5")
    assert parse_augment("mixprob:0.5,cutmix").spec() == "none,flip,shift:2,cutmix:1,mixprob:0.5"
    off = parse_augment("mixup:0.2,mixprob:0")  # mixing given, then switched off: as asked
    # the printed augmentation had said "mixup:0.2", which turns mixing on when given again
    assert off.mixes is False and off.spec() == "none,flip,shift:2,mixup:0.2,mixprob:0"
    assert parse_augment(off.spec()) == off


@pytest.mark.parametrize("model, recorded", [("efficientnet-lite0", None), ("small-cnn", 32)])
def test_a_kind_without_a_width_gets_no_width_among_its_options(tmp_path: Path, monkeypatch, model, recorded):
    # efficientnet-lite cards listed "width": 32 among the settings they were trained with, a setting it never reads
    from synth_data import write_manifest
    from synthdetect.train import registry

    seen = {}

    def capture(request):
        seen.update(request.options)
        raise KeyboardInterrupt  # stop before any image is decoded

    monkeypatch.setattr(registry, "get_trainer", lambda kind: capture)
    manifest = write_manifest(tmp_path / "d", {"a": (4, 4)}, size=8)
    result = CliRunner().invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--model", model,
                                      "--val-fraction", "0.5", "--test-fraction", "0"])
    assert result.exit_code == 130, result.output
    assert seen.get("width") == recorded


def test_a_one_image_batch_that_batch_norm_cannot_take_names_the_batch_size(tmp_path: Path):
    # EfficientNet-Lite at 32 px with --batch-size 1 ended in torch's "Expected more than 1 value per channel"
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 8), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(2, 1), torch.nn.Flatten(0))  # 8 px in, 1x1 px at the batch norm
    with pytest.raises(ValueError, match=r"--batch-size 1: this network's batch norm needs 2 or more images in a "
                                         r"batch at this input size \(Expected more than 1 value .*\); use "
                                         r"--batch-size 2 or more"):
        fit_classifier(module, _arrays(), _arrays(seed=1), TrainConfig(epochs=1, batch_size=1, threads=1),
                       mean=MEAN, std=STD, workdir=tmp_path)
