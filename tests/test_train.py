"""Training: early stopping, resume, the trainer registry, and packages that reload with identical predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synth_data import add_copies, write_manifest
from synthdetect.api import Detector
from synthdetect.cli import app
from synthdetect.evaluate.metrics import binary_metrics
from synthdetect.evaluate.report import predict_records
from synthdetect.train import registry
from synthdetect.train.augment import AugmentConfig, PixelAugmenter
from synthdetect.train.datasets import open_dataset
from synthdetect.train.splits import rebuild_card_split
from synthdetect.train.trainer import TrainConfig, fit_classifier

MEAN = STD = [0.5, 0.5, 0.5]


def _arrays(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).astype(np.float32)
    return x, y


def _linear() -> torch.nn.Module:
    # no batch norm, no dropout: its output depends only on its weights
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 3, 1), torch.nn.Flatten(0))


def test_early_stopping_stops_when_validation_does_not_improve(tmp_path: Path):
    torch.manual_seed(0)
    config = TrainConfig(epochs=10, patience=2, batch_size=8, lr=0.0, weight_decay=0.0, threads=1)
    result = fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    # lr 0: the loss never improves after epoch 1, so epochs 2 and 3 use up the patience
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 3
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss")


def test_early_stop_during_high_learning_rate_is_called_out(caplog):
    """22-epoch one-cycle runs stopped at epochs 10 and 14, the LR at 77% and 43% of its peak; the log says so."""
    from synthdetect.train.trainer import _warn_if_stopped_at_high_lr

    config = TrainConfig(epochs=22, patience=6, lr=0.1)
    for lr, epoch in ((0.077, 10), (0.043, 14)):
        with caplog.at_level("WARNING", logger="synthdetect.train.trainer"):
            _warn_if_stopped_at_high_lr(lr, config, epoch=epoch, best_epoch=4)
        assert f"epoch {epoch} of 22" in caplog.text and "--patience" in caplog.text
        caplog.clear()
    with caplog.at_level("WARNING", logger="synthdetect.train.trainer"):
        _warn_if_stopped_at_high_lr(0.01, config, epoch=20, best_epoch=14)  # annealed: a real plateau
    assert caplog.text == ""


def test_best_checkpoint_is_restored(tmp_path: Path):
    torch.manual_seed(0)
    config = TrainConfig(epochs=4, patience=10, batch_size=8, lr=0.05, threads=1, monitor="loss")
    module = _linear()
    result = fit_classifier(module, _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in module.state_dict().items())
    losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1


class _Interrupt(Exception):
    pass


class InterruptingAugmenter(PixelAugmenter):
    """The augmenter of ``config`` that raises :class:`_Interrupt` once ``batches`` batches are done: a run killed
    part-way through an epoch, after its last checkpoint."""

    def __init__(self, config: AugmentConfig, batches: int):
        super().__init__(config)
        self.batches, self.calls = batches, 0

    def __call__(self, x, generator, flip=None):
        self.calls += 1
        if self.calls > self.batches:
            raise _Interrupt
        return super().__call__(x, generator, flip)


@pytest.mark.parametrize("hard_fraction, hard_after, alternate_flip", [(1.0, 2, False), (0.5, 2, False), (0.5, 1, True)])
def test_resume_after_interruption_gives_the_same_model(tmp_path: Path, hard_fraction: float, hard_after: int,
                                                        alternate_flip: bool):
    # with selective backprop, epoch 3 draws its images from the per-image losses the checkpoint must carry;
    # with alternating flips, each image's mirror in epoch 3 depends on how often it was drawn before (once or
    # twice after a full epoch and a half one, so counts the checkpoint lost would show)
    config = TrainConfig(epochs=3, patience=10, batch_size=8, lr=0.05, threads=1, hard_fraction=hard_fraction,
                         hard_after=hard_after)
    planned = [config.images_per_epoch(epoch, 32) for epoch in range(3)]
    augment = PixelAugmenter(AugmentConfig(shift=config.max_shift,
                                           flip_mode="alternate" if alternate_flip else "random"))
    train, val = _arrays(), _arrays(seed=1)
    torch.manual_seed(0)
    straight = _linear()
    fit_classifier(straight, train, val, config, mean=MEAN, std=STD, workdir=tmp_path / "a", augment=augment)

    torch.manual_seed(0)
    with pytest.raises(_Interrupt):  # batches of 8: stop during epoch 3
        fit_classifier(_linear(), train, val, config, mean=MEAN, std=STD, workdir=tmp_path / "b",
                       augment=InterruptingAugmenter(augment.config, (planned[0] + planned[1]) // 8))
    # as if killed after logging epoch 3 but before its checkpoint: the resumed log must not repeat the epoch
    log = tmp_path / "b" / "metrics.jsonl"
    log.write_text(log.read_text() + json.dumps({"epoch": 3, "train_loss": 0.0}) + "\n")
    # a checkpoint written before epochs logged their image count still resumes (and prints its epoch lines)
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    for row in ckpt["history"]:
        del row["images"]
    torch.save(ckpt, tmp_path / "b" / "checkpoint.pt")
    torch.manual_seed(123)  # a fresh process would start from different random weights
    resumed = _linear()
    result = fit_classifier(resumed, train, val, config, mean=MEAN, std=STD, workdir=tmp_path / "b",
                            augment=augment)
    assert len(result.history) == 3 and [row["images"] for row in result.history] == planned
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 1 + 3
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key])
    # epoch 3's small late-schedule steps barely move the weights, so compare the losses that drive the draw
    straight_losses, resumed_losses = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=False)["image_losses"]
                                       for run in ("a", "b"))
    assert torch.isfinite(resumed_losses).all() and torch.allclose(straight_losses, resumed_losses)


def test_selective_backprop_draws_towards_the_largest_losses():
    from synthdetect.train.trainer import choose_hard_images

    generator = torch.Generator().manual_seed(0)
    losses = torch.rand(2000, generator=generator)
    kept = torch.zeros(2000)
    for _ in range(40):
        chosen = choose_hard_images(losses, 1000, generator)
        assert len(chosen) == 1000 and len(set(chosen.tolist())) == 1000
        kept[chosen] += 1
    rank = torch.argsort(torch.argsort(losses))
    # kept with probability = loss percentile: about 0.95 for the hardest tenth, 0.05 for the easiest
    assert kept[rank >= 1800].mean() / 40 > 0.9 and kept[rank < 200].mean() / 40 < 0.1
    assert 0.45 < kept[(rank >= 900) & (rank < 1100)].mean() / 40 < 0.55
    assert sorted(choose_hard_images(losses, 2000, generator).tolist()) == list(range(2000))


def test_selective_backprop_trains_on_a_share_after_the_full_epochs(tmp_path: Path, capsys):
    config = TrainConfig(epochs=4, patience=10, batch_size=8, lr=0.05, threads=1, hard_fraction=0.5, hard_after=2)
    torch.manual_seed(0)
    result = fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    # one-cycle was sized for 4 + 4 + 2 + 2 steps; a miscount would overrun the scheduler and raise
    assert [row["images"] for row in result.history] == [32, 32, 16, 16]
    # not a terminal, so no live bar: one line per epoch on stderr, for logs, with the ETA over the images still to train
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ") and "/4: " in line]
    assert [line.split(":")[0] for line in lines] == [f"epoch {e}/4" for e in range(1, 5)]
    assert lines[2].startswith("epoch 3/4: 16 images in ") and "val acc " in lines[2]
    assert lines[-1].endswith("eta 0.0 min")
    assert config.images_per_epoch(1, 32) == 32 and config.images_per_epoch(2, 32) == 16
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert torch.isfinite(state["image_losses"]).all()  # the full epochs gave every image a loss to rank
    for bad, message in (({"hard_fraction": 0.0}, "hard fraction must be in"),
                         ({"hard_fraction": 1.5}, "hard fraction must be in"),
                         ({"hard_after": 0}, "at least 1 full epoch")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="cannot be combined with mixup/cutmix"):
        fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path / "m",
                       mix=lambda x, y, g: None)


def test_option_switches_read_strings_as_the_command_line_gives_them():
    # --option keep_workdir=false once kept the work directory: bool("false") is True
    assert [registry.option_flag(v) for v in ("true", "1", "yes", "on", True)] == [True] * 5
    assert [registry.option_flag(v) for v in ("false", "0", "no", "off", "", False, None)] == [False] * 7


def test_registry_errors_are_clear(monkeypatch):
    with pytest.raises(registry.TrainerError, match="unknown model kind 'resnet9000'"):
        registry.get_trainer("resnet9000")
    monkeypatch.setitem(registry.TRAINER_MODULES, "ghost", "synthdetect.models.no_such_module")
    with pytest.raises(registry.TrainerError, match="'ghost' is not available"):
        registry.get_trainer("ghost")
    assert registry.get_trainer("small-cnn") is registry.get_trainer("small-cnn")


def _train_cli(tmp_path: Path, *extra: str, kind: str = "small-cnn") -> tuple[Path, Path]:
    manifest = write_manifest(tmp_path / "data", {"a": (16, 16), "b": (12, 12), "c": (10, 10)}, size=16)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(out), "--model", kind, "--epochs", "3", "--patience", "2",
        "--width", "4", "--batch-size", "16", "--input-size", "16", "--threads", "1", "--seed", "0", *extra])
    assert result.exit_code == 0, result.output
    return manifest, out


def test_alternating_flip_reaches_the_training_loop_from_the_command_line(tmp_path: Path):
    _, out = _train_cli(tmp_path, "--augment", "flip:alt", "--option", "keep_workdir=true")
    state = torch.load(out / "_work" / "checkpoint.pt", weights_only=False)
    trained = sum(row["images"] for row in state["history"])
    # every draw was counted, so the mirrors the loop chose were the alternating ones
    assert int(state["flips"]["draws"].sum()) == trained and int(state["flips"]["draws"].max()) == 3


@pytest.mark.parametrize("kind, flip", [("small-cnn", "flip:alt"), ("ela-cnn", "flip")])
def test_trained_package_reloads_with_identical_predictions(tmp_path: Path, kind: str, flip: str):
    manifest, out = _train_cli(tmp_path, "--split", "loso", "--holdout-source", "a", "--val-fraction", "0.3",
                               "--calibration", "platt", "--augment", f"{flip},mixup:0.2,cutmix:1.0", kind=kind)
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == kind
    assert card["training"]["augment"]["flip_mode"] == ("alternate" if flip == "flip:alt" else "random")
    assert card["training"]["augment_spec"] == f"none,{flip},shift:2,mixup:0.2,cutmix:1"
    assert f"- augmentation: `none,{flip},shift:2,mixup:0.2,cutmix:1`" in (out / "MODEL_CARD.md").read_text()
    for key in ("input", "calibration", "thresholds", "decision", "metrics", "training"):
        assert key in card
    assert card["calibration"]["method"] == "platt"
    assert card["training"]["split"]["method"] == "loso" and card["training"]["split"]["test_sources"] == ["a"]
    assert set(card["thresholds"]) == {"fpr_0.01", "fpr_0.05"}
    assert not (out / "_work").exists()
    assert len((out / "training_metrics.jsonl").read_text().splitlines()) == card["training"]["epochs_run"]
    # the card's validation numbers came from the in-memory model; the served path must reproduce them
    records = open_dataset(manifest)
    val = [r for r in records if r.source in card["training"]["split"]["validation_sources"]]
    detector = Detector.load(str(out), use_evidence=False)
    predictions = predict_records(detector, val, progress=False)
    assert not np.isnan(predictions.p_ai).any()
    served = binary_metrics(predictions.p_ai, predictions.labels)
    for key in ("loss", "accuracy", "roc_auc", "ece"):
        assert served[key] == pytest.approx(card["metrics"]["validation"][key], abs=1e-5)
    again = predict_records(Detector.load(str(out), use_evidence=False), val, progress=False)
    assert np.array_equal(again.p_ai, predictions.p_ai)


def test_train_cli_names_the_copies_it_does_not_score(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (20, 20)}, size=16)
    add_copies(manifest, [(row, "a", None) for row in range(20)])  # every AI image twice
    out = tmp_path / "pkg"
    result = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1", "--val-fraction", "0.2", "--test-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "model.json").read_text())
    copies = card["training"]["split"]["copies_not_scored"]
    counts = copies["counts"]
    assert sum(counts.values()) == len(copies["files"]) > 0
    line = "not scored, identical to an earlier file (listed in the card): " + ", ".join(
        f"{n} {part}" for part, n in counts.items())
    assert line in result.output
    assert card["metrics"]["test"]["at_0.5"]["n"] == 12 - counts.get("test", 0)
    # the card's recorded sizes, with its unscored copies counted back, draw the same split again
    rebuilt = rebuild_card_split(open_dataset(manifest), card["training"]["split"], copies="exclude")
    assert [len(rebuilt.val), len(rebuilt.test)] == [card["training"]["split"][p]["n"] for p in ("validation", "test")]
    assert rebuilt.unscored and len(rebuilt.unscored) == sum(counts.values())
    assert "listed in model.json" in (out / "MODEL_CARD.md").read_text()
    result = CliRunner().invoke(app, ["train", str(manifest), "--out", str(out), "--copies", "drop"])
    assert result.exit_code == 2 and "error: unknown copies rule 'drop' (one of exclude, keep)" in result.output


def test_train_cli_rejects_unknown_kind_and_bad_split(tmp_path: Path):
    manifest = write_manifest(tmp_path / "d", {"a": (2, 2), "b": (2, 2)}, size=8)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--model", "nope"])
    assert result.exit_code == 2 and "unknown model kind 'nope'" in result.output
    result = runner.invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--split", "loso"])
    assert result.exit_code == 2 and "exactly one --holdout-source" in result.output
    s2d = ["train", str(manifest), "--out", str(tmp_path / "o"), "--option", "layout=s2d",
           "--val-fraction", "0.3"]  # validation needs both classes, checked before the model is built
    result = runner.invoke(app, [*s2d, "--input-size", "15"])
    assert result.exit_code == 2 and "input size must be even, not 15x15" in result.output
    result = runner.invoke(app, [*s2d, "--option", "depth=1"])
    assert result.exit_code == 2 and "'s2d' replaces the first block, so it needs depth 2" in result.output
    heads = ["train", str(manifest), "--out", str(tmp_path / "o"), "--model", "handcrafted"]
    result = runner.invoke(app, [*heads, "--epochs", "5", "--seed", "1", "--hard-fraction", "0.5"])
    assert result.exit_code == 2 and ("error: handcrafted fits linear heads on frozen features, so --epochs, "
                                      "--hard-fraction would be ignored; leave them out") in result.output
    assert registry.uses_torch_loop("small-cnn") and not registry.uses_torch_loop("clip-head")
    plain = ["train", str(manifest), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*plain, "--hard-fraction", "0"])
    assert result.exit_code == 2 and "hard fraction must be in (0, 1], got 0.0" in result.output
    result = runner.invoke(app, [*plain, "--hard-fraction", "0.5", "--augment", "flip,mixup:0.2"])
    assert result.exit_code == 2 and "cannot be combined with mixup/cutmix" in result.output
    assert not (tmp_path / "o" / "model.json").exists()


def test_sgd_optimizer_trains_and_an_unknown_one_is_refused(tmp_path: Path):
    from synthdetect.train.trainer import make_optimizer

    torch.manual_seed(0)
    config = TrainConfig(epochs=3, patience=10, batch_size=8, lr=0.05, threads=1, optimizer="sgd")
    optimizer = make_optimizer(_linear(), config)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    result = fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer(_linear(), TrainConfig(optimizer="lamb"))


@pytest.mark.parametrize("n_images, epochs", [(40, 1), (16, 1), (8, 1), (16, 2)])
def test_runs_of_a_handful_of_steps_train(tmp_path: Path, n_images: int, epochs: int):
    """One epoch of 40 images at batch 8 is 5 steps, where torch's OneCycleLR divided by zero."""
    torch.manual_seed(0)
    config = TrainConfig(epochs=epochs, patience=10, batch_size=8, lr=0.05, threads=1, optimizer="sgd")
    result = fit_classifier(_linear(), _arrays(n_images), _arrays(seed=1), config, mean=MEAN, std=STD,
                            workdir=tmp_path)
    assert len(result.history) == epochs and all(np.isfinite(row["train_loss"]) for row in result.history)


def test_device_is_chosen_explicitly_and_a_missing_gpu_is_an_error(tmp_path: Path):
    from synthdetect.train.trainer import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    manifest = write_manifest(tmp_path / "d", {"a": (2, 2), "b": (2, 2)}, size=8)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--model", "handcrafted",
                                 "--device", "cuda"])
    assert result.exit_code == 2 and "--device would be ignored" in result.output
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            resolve_device("cuda")
        result = runner.invoke(app, ["train", str(manifest), "--out", str(tmp_path / "o"), "--device", "cuda"])
        assert result.exit_code == 2 and "use --device cpu" in result.output
        assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none here)")
def test_training_on_a_gpu_hands_back_a_cpu_module_with_the_best_weights(tmp_path: Path):
    torch.manual_seed(0)
    config = TrainConfig(epochs=3, patience=10, batch_size=8, lr=0.05, threads=1, optimizer="sgd", device="cuda")
    module = _linear()
    result = fit_classifier(module, _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    assert next(module.parameters()).device.type == "cpu"
    best = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(best[k], v) for k, v in module.state_dict().items())
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_cheaper_layouts_cut_the_arithmetic_and_round_trip_through_a_package(tmp_path: Path):
    from synthdetect.models.cnn import SmallCNN

    def conv_macs(module: torch.nn.Module) -> int:
        total = 0

        def count(conv, _inputs, output):
            nonlocal total
            total += output.numel() * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]

        hooks = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        module.eval()(torch.zeros(1, 3, 32, 32))
        for hook in hooks:
            hook.remove()
        return total

    vgg, pool_mid = SmallCNN(width=32, depth=4), SmallCNN(width=32, depth=4, layout="pool-mid")
    s2d = SmallCNN(width=32, depth=4, layout="s2d")
    assert sum(p.numel() for p in vgg.parameters()) == sum(p.numel() for p in pool_mid.parameters())
    assert conv_macs(vgg) == 52_789_248 and conv_macs(pool_mid) == 31_555_584  # the block-1 convs are unchanged
    # s2d drops the full-resolution block: blocks 2-4 as in vgg, the first fed 12 channels at 16 px, not 32.
    assert conv_macs(s2d) == 52_789_248 - 32 * 32 * (3 * 32 + 32 * 32) * 9 - 16 * 16 * 64 * (32 - 12) * 9
    x = torch.rand(2, 3, 32, 32)
    stem = s2d.features[0]
    assert stem(x).shape == (2, 12, 16, 16) and torch.equal(torch.nn.functional.pixel_shuffle(stem(x), 2), x)
    assert "layout" not in vgg.hparams  # cards written before the option load unchanged
    with pytest.raises(ValueError, match="unknown small-cnn layout 'resnet'"):
        SmallCNN(layout="resnet")

    for layout in ("pool-mid", "s2d"):
        manifest, out = _train_cli(tmp_path / layout, "--option", f"layout={layout}", "--option", "depth=2")
        card = json.loads((out / "model.json").read_text())
        assert card["architecture"]["layout"] == layout and card["architecture"]["depth"] == 2
        detector = Detector.load(str(out), use_evidence=False)
        assert detector.model.module.hparams["layout"] == layout
    # the space-to-depth stem exports to ONNX with parity, and Grad-CAM still finds a convolution to look at
    from synthdetect.explain import explain
    from synthdetect.models.onnx_backend import export_package

    exported = export_package(str(out), tmp_path / "s2d-onnx")
    assert exported.card["runtime"]["parity"]["max_abs_p_ai_diff"] < 1e-4
    image = next(p for p in (manifest.parent).rglob("*.png"))
    assert explain(detector, str(image)).gradcam is not None


# -- settings and data refused before the work, and runs that are what they say ------------------


def _quick_train(data: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, [
        "train", str(data), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1", "--val-fraction", "0.3", "--test-fraction", "0.2", *extra])


def test_the_first_fpr_decides_the_ai_cut(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (20, 20)}, size=16)
    result = _quick_train(manifest, tmp_path / "pkg", "--fpr", "0.2", "--fpr", "0.05")
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "pkg" / "model.json").read_text())
    assert card["decision"]["ai_at_or_above"] == card["thresholds"]["fpr_0.2"]["threshold"]
    assert card["decision"]["ai_rule"] == "p_ai at or above the 0.2 FPR threshold"


def test_a_retry_never_resumes_another_runs_checkpoint(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (12, 12)}, size=16)
    other = write_manifest(tmp_path / "other", {"a": (12, 10)}, size=16)
    out = tmp_path / "pkg"
    assert _quick_train(manifest, out, "--option", "keep_workdir=true").exit_code == 0
    checkpoint = out / "_work" / "checkpoint.pt"
    for data, extra, what in ((manifest, ["--epochs", "2"], "--epochs differs"),
                              (manifest, ["--width", "8"], "--width differs"),
                              (other, [], "dataset differs")):
        result = _quick_train(data, out, "--option", "keep_workdir=true", *extra)
        assert result.exit_code == 2
        assert f"error: {checkpoint} belongs to a different run ({what}); delete it or choose another --out" in result.output
    # where it runs and how the card is finished may change on a retry
    result = _quick_train(manifest, out, "--option", "keep_workdir=true", "--threads", "2", "--fpr", "0.1")
    assert result.exit_code == 0, result.output
    # the loop keeps its own fingerprint for callers that give none
    from synthdetect.train.trainer import CheckpointMismatch

    fit_classifier(_linear(), _arrays(), _arrays(seed=1), TrainConfig(epochs=1, batch_size=8, threads=1),
                   mean=MEAN, std=STD, workdir=tmp_path / "w")
    with pytest.raises(CheckpointMismatch, match=r"config.epochs differs"):
        fit_classifier(_linear(), _arrays(), _arrays(seed=1), TrainConfig(epochs=3, batch_size=8, threads=1),
                       mean=MEAN, std=STD, workdir=tmp_path / "w")


def test_one_class_data_is_refused_before_decoding(tmp_path: Path):
    from synth_data import write_folder
    from synthdetect.train.trainer import epoch_line

    write_folder(tmp_path / "data", n_per_class=3, names=("real", "human"))
    (tmp_path / "data" / "fake").mkdir()  # an empty class folder
    result = _quick_train(tmp_path / "data", tmp_path / "pkg")
    assert result.exit_code == 2 and f"error: {tmp_path / 'data'}: needs both classes: 6 human, 0 ai" in result.output
    assert not (tmp_path / "pkg").exists()
    row = {"epoch": 1, "images": 8, "seconds": 1.0, "train_loss": 0.7, "val_loss": 0.6, "val_accuracy": None}
    assert "val acc n/a" in epoch_line([row], 2, 1, [8])


@pytest.mark.parametrize("args, message", [
    (["--calibration", "foo"], "--calibration 'foo': expected temperature or platt"),
    (["--optimizer", "foo"], "--optimizer 'foo': expected adamw or sgd"),
    (["--lr", "-1"], "--lr -1: the learning rate must be above 0"),
    (["--monitor", "foo"], "--monitor 'foo': expected loss, roc_auc or accuracy"),
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["--epochs", "0"], "Invalid value for '--epochs'"),
    (["--seed", "-1"], "Invalid value for '--seed'"),  # was numpy's "expected non-negative integer", no option named
    (["--val-fraction", "0"], "--val-fraction 0: expected above 0 and below 1"),
    (["--val-fraction", "0.7", "--test-fraction", "0.5"], "their sum must be below 1"),
    (["--fpr", "2", "--fpr", "0"], "--fpr 2, 0: a false-positive rate is above 0 and below 1"),
])
def test_bad_settings_are_refused_before_the_data_is_read(tmp_path: Path, args: list[str], message: str):
    # the data does not exist: a setting checked first is named, not the missing data
    result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "dataset not found" not in result.output


def test_an_out_that_is_a_file_is_refused_before_the_work(tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        result = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(out)])
        assert result.exit_code == 2 and f"error: {out}: " in result.output and "a file, not a directory" in result.output


def test_a_diverging_run_stops_at_once_with_a_clear_error(tmp_path: Path):
    from synthdetect.train.trainer import TrainingDiverged

    torch.manual_seed(0)
    config = TrainConfig(epochs=3, patience=10, batch_size=8, lr=1e30, threads=1, optimizer="sgd")
    with pytest.raises(TrainingDiverged, match=r"training diverged: .* became (nan|inf) .*Try a lower --lr") as info:
        fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    assert info.value.epoch == 1  # not three epochs of NaN, then sklearn's "Input contains NaN"
    from synth_data import write_folder

    data = write_folder(tmp_path / "data", 30, size=16)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "pkg"), "--model", "small-cnn",
                                      "--epochs", "2", "--lr", "1e30", "--optimizer", "sgd", "--threads", "1"])
    assert result.exit_code == 2 and "error: training diverged" in result.output, result.output
    assert not (tmp_path / "pkg" / "model.json").exists()


def test_augmented_pixels_are_rounded_not_truncated_on_their_way_to_the_model():
    """A custom augmentation returning floats was cast to uint8, which truncates: half a level darker on average."""
    from synthdetect.train.trainer import _as_pixels

    assert _as_pixels(torch.tensor([0.6, 254.7, 300.0, -2.0, 7.0])).tolist() == [1, 255, 255, 0, 7]
    assert _as_pixels(torch.tensor([3, 250], dtype=torch.uint8)).tolist() == [3, 250]


def test_the_augmentation_used_is_printed_and_a_kind_that_never_augments_records_none(tmp_path: Path):
    """The readable card and the console said nothing of the augmentation; a linear-head card claimed flip,shift:2."""
    manifest = write_manifest(tmp_path / "d", {"a": (6, 6), "b": (6, 6), "c": (6, 6)}, size=32)  # heads judge >= 32 px
    cnn = CliRunner().invoke(app, ["train", str(manifest), "--out", str(tmp_path / "cnn"), "--epochs", "1",
                                   "--width", "4", "--input-size", "16", "--threads", "1", "--augment", "rot:5"])
    assert cnn.exit_code == 0, cnn.output
    assert "augment: none,flip,shift:2,rot:5\n" in cnn.output
    heads = CliRunner().invoke(app, ["train", str(manifest), "--out", str(tmp_path / "heads"), "--model",
                                     "handcrafted"])
    assert heads.exit_code == 0, heads.output
    card = json.loads((tmp_path / "heads" / "model.json").read_text())
    assert card["training"]["augment"] is None and "augment_spec" not in card["training"]
    assert not any(line.startswith("augment:") for line in heads.output.splitlines())
    assert "- augmentation:" not in (tmp_path / "heads" / "MODEL_CARD.md").read_text()



def test_progress_bars_go_to_stderr_and_stdout_keeps_the_results(tmp_path: Path):
    """The bars of decoding and epochs (and of evaluate and calibrate-route, which share them) were drawn on stdout,
    between the lines a log or a script reads there."""
    manifest = write_manifest(tmp_path / "data", {"a": (8, 8), "b": (8, 8)}, size=16, broken=1)
    result = CliRunner().invoke(app, [
        "train", str(manifest), "--out", str(tmp_path / "pkg"), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "━" not in result.stdout and "wrote" in result.stdout
    assert "epochs" in result.stderr and "━" in result.stderr
    # MODEL_CARD.md says how the run went and what it left out, as model.json does
    rendered = (tmp_path / "pkg" / "MODEL_CARD.md").read_text()
    assert "- run: 1 epoch, kept epoch 1 in " in rendered
    assert "- left out: 1 image that could not be read (listed in model.json" in rendered
