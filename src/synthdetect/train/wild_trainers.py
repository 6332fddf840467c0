"""``synthdetect train DATA --model clip-head|handcrafted``: the registry's trainers for the linear-head kinds.

These use the caller's train/val/test split (``synthdetect train`` makes it);
for the leave-one-source-out selection that produced ``wild-v1`` and ``wild-v2`` see
``synthdetect train-wild`` (:mod:`synthdetect.train.wild`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from synthdetect.models.multicrop import CropPolicy
from synthdetect.models.package import ModelPackage
from synthdetect.models.view_features import get_extractor, save_members
from synthdetect.train.registry import TrainerError, TrainRequest, finalize_package, register_trainer
from synthdetect.train.wild import (CLIP, HANDCRAFTED, MAX_ASPECT, MemberSpec, WildData, domain_rule, fit_member,
                                    fit_stacker, member_logits, outside_served_size)
from synthdetect.train.wild_features import extract_cached


#: What the served heads judge (the card's ``input``, with MAX_ASPECT): smaller images are answered uncertain.
MIN_SIDE = 32


def train_linear_heads(
    request: TrainRequest, extractor: str, kind: str, *, fit=None, description: str | None = None,
) -> ModelPackage:
    """Global-view and crop-mean heads fitted on ``train``; stacker on ``val``; calibrated by finalize_package.

    ``fit(data, train_idx, spec, seed)`` replaces the hard-label member fit (distillation passes a
    soft-label one); ``description`` goes on the card.
    """
    policy = CropPolicy(size=int(request.options.get("crop_size", 224)), native_crops=int(request.options.get("crops", 4)))
    records = request.train + request.val + request.test
    cache = request.options.get("cache")
    cached = extract_cached(records, policy, [extractor], Path(cache) if cache else None)
    if cached.cache_problem:
        print(f"note: {request.name}: {cached.cache_problem}", file=sys.stderr)
    data = WildData.from_cache(cached)
    where = {r.ref: i for i, r in enumerate(cached.records)}
    # Only the images the served model judges: it answers "uncertain" below MIN_SIDE or beyond MAX_ASPECT, so a card
    # measured on 16 px images (held-out accuracy 1.0) described answers the package never gives.
    served = np.array([not outside_served_size(m, MIN_SIDE) for m in cached.meta], dtype=bool)

    def idx(part):
        return np.array([where[r.ref] for r in part if r.ref in where and served[where[r.ref]]], dtype=int)

    outside = {name: sum(1 for r in part if r.ref in where and not served[where[r.ref]])
               for name, part in (("train", request.train), ("validation", request.val), ("test", request.test))}
    domain = domain_rule(MIN_SIDE, judged_by="this model")
    if any(outside.values()):
        print(f"warning: {request.name}: {sum(outside.values())} images are {domain}; they are left out of training "
              f"and of the card's numbers (train {outside['train']}, validation {outside['validation']}, "
              f"test {outside['test']})", file=sys.stderr)
    train, val, test = idx(request.train), idx(request.val), idx(request.test)
    if len(np.unique(data.labels[train])) < 2:
        left_out = f" ({outside['train']} of its images are {domain})" if outside["train"] else ""
        raise TrainerError(f"the training split needs both AI and human images{left_out}")
    if len(np.unique(data.labels[val])) < 2 and outside["validation"]:
        raise TrainerError(f"the validation split needs both AI and human images ({outside['validation']} of its "
                           f"images are {domain})")
    specs = [MemberSpec(extractor, "global"), MemberSpec(extractor, "crops", str(request.options.get("aggregate", "mean")))]
    members = [(fit or fit_member)(data, train, spec, request.seed) for spec in specs]

    def logits(part):
        return np.stack([member_logits(data, part, m, [m.aggregate])[m.aggregate if m.view == "crops" else "global"]
                         for m in members], 1)

    z_val = logits(val)
    weights, bias = fit_stacker(z_val, data.labels[val])
    out = request.out
    out.mkdir(parents=True, exist_ok=True)
    heads = out / "heads.npz"
    save_members(heads, members)
    card = {
        "description": description
        or f"Linear heads on {extractor} features of a global view and {policy.native_crops} native crops.",
        "input": {"min_side": MIN_SIDE, "max_aspect": MAX_ASPECT},
        "crop_policy": policy.to_dict(),
        "extractors": {extractor: get_extractor(extractor).describe()},
        "members": [m.meta() for m in members],
        "stacker": {"weights": [float(w) for w in weights], "bias": float(bias), "fitted_on": "validation split"},
        "labels": ["human", "ai"],
    }
    test_z = logits(test) @ weights + bias if len(test) else None
    return finalize_package(request, kind=kind, card=card, val_logits=z_val @ weights + bias,
                            val_labels=data.labels[val], test_logits=test_z,
                            test_labels=data.labels[test] if len(test) else None, files={"heads": heads},
                            training={"images_failed": [why for _, why in cached.failed],
                                      "outside_domain": {"rule": domain, **outside}},
                            unreadable=[record for record, _ in cached.failed])


@register_trainer("clip-head", torch_loop=False)
def train_clip_head(request: TrainRequest) -> ModelPackage:
    return train_linear_heads(request, CLIP, "clip-head")


@register_trainer("handcrafted", torch_loop=False)
def train_handcrafted(request: TrainRequest) -> ModelPackage:
    return train_linear_heads(request, HANDCRAFTED, "handcrafted")
