"""``synthdetect train``: build a model package from a labelled dataset."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        data: Annotated[str, typer.Argument(help="Class folders, CSV manifest, or a zip of either.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the model package.")],
        model: Annotated[str, typer.Option("--model", help="Model kind to train.")] = "small-cnn",
        name: Annotated[Optional[str], typer.Option(help="Name written on the card.")] = None,
        epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = 12,
        patience: Annotated[int, typer.Option(help="Stop after this many epochs without improvement.")] = 3,
        batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 128,
        lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle).")] = 3e-3,
        width: Annotated[int, typer.Option(help="small-cnn: channels of the first block.")] = 32,
        seed: Annotated[int, typer.Option(help="Seed for split, init and augmentation.")] = 0,
        threads: Annotated[int, typer.Option(help="Torch threads (0 = all CPUs this process may use).")] = 0,
        val_fraction: Annotated[float, typer.Option(help="Validation share (early stopping, calibration).")] = 0.05,
        test_fraction: Annotated[float, typer.Option(help="Held-out test share (the card's numbers).")] = 0.05,
    ) -> None:
        """Train a detector and write a model package that Detector.load() reads."""
        from synthdetect.train.small_image import train_small_cnn
        from synthdetect.train.trainer import TrainConfig

        if model != "small-cnn":
            raise typer.BadParameter(f"unknown model kind '{model}' (available: small-cnn)", param_hint="--model")
        config = TrainConfig(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, seed=seed,
                             threads=threads or None)
        command = "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        package = train_small_cnn(data, out, name=name or out.name, config=config, width=width,
                                  val_fraction=val_fraction, test_fraction=test_fraction, command=command)
        test = package.card["metrics"]["test"]["at_0.5"]
        typer.echo(f"wrote {package.root} (held-out test accuracy {test['accuracy']:.4f}, "
                   f"ROC-AUC {test['roc_auc']:.4f}, ECE {test['ece']:.4f})")
