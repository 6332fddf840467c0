"""Trainer for ``clip-cascade``: the small CNN, its uncertainty band and the CLIP head, in one command.

1. The CNN is trained exactly as ``small-cnn`` (the command's own settings).
2. The band is the ``band`` share (default 0.15) of validation images with
   the smallest |logit|; its edge ``tau`` is chosen from the logits alone,
   without labels.
3. The head is a logistic regression (C by 5-fold cross-validation) on
   [CLIP embedding, raw CNN logit] of up to ``head_images`` training images
   inside the band, found by scoring a seeded sample of ``head_sample``
   training images with the trained CNN.  Validation chose the band edge and
   the CNN's temperature only; the head never sees it.
4. Validation and held-out images in the band are embedded too, and the card
   is calibrated and measured on the cascade's logits (``finalize_package``).

Each embedding is one CLIP run (125 ms on 2 cores with the INT8 encoder), so
the command's extra time is about (head images + band share x (validation +
test)) x 0.125 s; the trainer prints the count before it starts.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthdetect.evaluate.calibration import Calibration
from synthdetect.models.clip_cascade import clip_views, head_logits
from synthdetect.models.package import ModelPackage
from synthdetect.train.registry import TrainerError, TrainRequest, option_flag, register_trainer
from synthdetect.train.small_image import MEAN, STD, _input_spec, cnn_card, finish_torch_package, fit_small_cnn
from synthdetect.train.trainer import predict_logits, progress_bar

#: CLIP extractors the head may be trained on (clip_onnx): INT8 as measured; float32 is deterministic across
#: processors but about 1.6 times slower per image.
ENCODERS = ("clip-vit-b16-int8", "clip-vit-b16-f32")


def cascade_options(options: dict[str, Any]) -> dict[str, Any]:
    """The cascade's own settings, checked before anything is decoded."""
    band = float(options.get("band", 0.15))
    if not 0 < band < 1:
        raise TrainerError(f"clip-cascade: --option band={band:g}: expected a share between 0 and 1 (default 0.15)")
    encoder = str(options.get("encoder", ENCODERS[0]))
    if encoder not in ENCODERS:
        raise TrainerError(f"clip-cascade: --option encoder={encoder}: expected one of {', '.join(ENCODERS)}")
    head_images, head_sample = int(options.get("head_images", 3000)), int(options.get("head_sample", 24000))
    if head_images < 10 or head_sample < head_images:
        raise TrainerError(f"clip-cascade: head_images={head_images}, head_sample={head_sample}: expected at least "
                           f"10 head images, drawn from a sample at least as large")
    return {"band": band, "encoder": encoder, "head_images": head_images, "head_sample": head_sample}


def embed(extractor, arrays: np.ndarray, description: str) -> np.ndarray:
    """CLIP embeddings of the CNN's inputs, one image at a time (the INT8 encoder's scales are set per run)."""
    rows = np.zeros((len(arrays), extractor.dim), dtype=np.float32)
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(arrays), status="")
        for i, array in enumerate(arrays):
            rows[i] = extractor.features(clip_views([array]))[0]
            bar.advance(task)
    return rows


def head_folds(labels: np.ndarray) -> int:
    """Cross-validation folds for the head's C; refused, before any embedding, when a class has under 2 images."""
    labels = (np.asarray(labels) > 0.5).astype(int)
    folds = int(min(5, np.bincount(labels, minlength=2).min()))
    if folds < 2:
        raise TrainerError(f"clip-cascade: the training images in the band are {int((labels == 0).sum())} human and "
                           f"{int(labels.sum())} ai; the head needs at least 2 of each (raise --option band or "
                           f"head_sample)")
    return folds


def fit_head(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, float, float]:
    """Weights, bias and C of the logistic head (C chosen by stratified cross-validation)."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    folds = head_folds(labels)
    labels = (np.asarray(labels) > 0.5).astype(int)
    with warnings.catch_warnings():  # scikit-learn 1.9's notices of future defaults (scoring, fitted attributes); the fit is as measured
        warnings.simplefilter("ignore", FutureWarning)
        head = LogisticRegressionCV(Cs=np.logspace(-2, 3, 11), max_iter=5000,
                                    cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).fit(features, labels)
    return head.coef_[0].astype(np.float64), float(head.intercept_[0]), float(head.C_[0])


@register_trainer("clip-cascade")
def train_clip_cascade(request: TrainRequest) -> ModelPackage:
    """A small CNN, and a CLIP head where the CNN is least sure."""
    from synthdetect.models.view_features import get_extractor

    settings = cascade_options(request.options)
    extractor = get_extractor(settings["encoder"])  # fail on a missing encoder before hours of decoding
    spec = _input_spec(request.options, 32)
    fitted = fit_small_cnn(request, spec)
    module = fitted.module
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = fitted.train, fitted.val, fitted.test
    cnn_val = predict_logits(module, x_val, MEAN, STD)
    cnn_test = predict_logits(module, x_test, MEAN, STD) if len(x_test) else np.zeros(0)
    tau = float(np.quantile(np.abs(cnn_val), settings["band"]))
    cnn_temperature = float(Calibration.fit(cnn_val, y_val, "temperature").temperature)

    rng = np.random.default_rng(request.seed)
    sample = rng.choice(len(x_train), min(settings["head_sample"], len(x_train)), replace=False)
    cnn_sample = predict_logits(module, x_train[sample], MEAN, STD)
    near = np.abs(cnn_sample) < tau
    in_band, cnn_in_band = sample[near][: settings["head_images"]], cnn_sample[near][: settings["head_images"]]
    val_band, test_band = np.flatnonzero(np.abs(cnn_val) < tau), np.flatnonzero(np.abs(cnn_test) < tau)
    head_folds(y_train[in_band])
    print(f"clip-cascade: band |logit| < {tau:.4f}; embedding {len(in_band)} training, {len(val_band)} validation "
          f"and {len(test_band)} test images with {settings['encoder']}")
    started = time.monotonic()
    head_features = np.c_[embed(extractor, x_train[in_band], "CLIP train band"), cnn_in_band]
    weights, bias, c = fit_head(head_features, y_train[in_band], request.seed)

    def cascade(cnn: np.ndarray, x: np.ndarray, band: np.ndarray, name: str) -> np.ndarray:
        out = cnn / cnn_temperature
        if band.size:
            out[band] = head_logits(embed(extractor, x[band], f"CLIP {name} band"), cnn[band], weights, bias)
        return out

    val_logits = cascade(cnn_val, x_val, val_band, "validation")
    test_logits = cascade(cnn_test, x_test, test_band, "test") if len(x_test) else None
    embed_seconds = time.monotonic() - started

    out = Path(request.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_path, head_path = out / "weights.pt", out / "head.npz"
    torch.save(module.state_dict(), weights_path)
    np.savez(head_path, weights=weights, bias=np.float64(bias))
    right = lambda logits, labels: int(((logits >= 0) == (np.asarray(labels) > 0.5)).sum())  # noqa: E731
    card = cnn_card(module, spec, request.options.get("description") or (
        f"Small CNN for small images (about {spec['size'][0]} px); where it is least sure (the {settings['band']:.0%} "
        f"of validation images nearest its boundary) a logistic head on the CLIP embedding and its logit decides."))
    card["cascade"] = {
        "band_share": settings["band"], "tau": tau, "cnn_temperature": cnn_temperature,
        "encoder": extractor.identity(),  # what the head's features depend on (name, dim, weights' sha256)
        "head": {"features": "unit-norm CLIP embedding of the CNN input enlarged bicubic to 224 px, then the raw CNN "
                             "logit", "fitted_on": "training images inside the band", "C": c,
                 "images": int(len(in_band)), "sample": int(len(sample))},
        "validation": {"band_images": int(len(val_band)), "cnn_right": right(cnn_val, y_val),
                       "cascade_right": right(val_logits, y_val), "n": int(len(y_val)),
                       "in_band_cnn_right": right(cnn_val[val_band], y_val[val_band]),
                       "in_band_head_right": right(val_logits[val_band], y_val[val_band])},
        "embedding_seconds": round(embed_seconds, 1),
    }
    # Grad-CAM would explain the CNN alone: the explanation maps use occlusion, which runs the whole cascade.
    card["explain"] = {"gradcam_layer": None}
    return finish_torch_package(
        request, kind="clip-cascade", card=card, result=fitted.result, errors=fitted.errors, workdir=fitted.workdir,
        val=(val_logits, y_val), test=(test_logits, y_test), weights=weights_path, extra_files={"head": head_path},
        keep_workdir=option_flag(request.options.get("keep_workdir", False)))
