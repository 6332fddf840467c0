"""Per-view feature extractors and the linear-head models built on them.

A full-size model is a few *members*, each a linear head on one extractor's
features of one view (the global view, or the native crops whose logits are
aggregated), and an optional stacker that weighs the members' logits.  The
kinds ``clip-head``, ``handcrafted`` and ``wild-stack`` are all this one
class, configured by the card: the head weights are a few KB of numbers, the
heavy encoder (CLIP) comes from an installed, hash-checked package.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from synthdetect.images import LoadedImage
from synthdetect.lazy_registry import LazyRegistry
from synthdetect.models.base import Model
from synthdetect.models.multicrop import CropPolicy, aggregate
from synthdetect.models.package import ModelPackage, ModelPackageError


class FeatureExtractor:
    """Maps a list of equally sized RGB crops to an ``(n, dim)`` float array."""

    name: str = "?"
    dim: int = 0
    #: Raise when the same crop would give other features (new weights, another normalisation): cached
    #: features are keyed by :meth:`identity`, so stale ones are then computed again instead of being read back.
    revision: int = 1

    @classmethod
    def identity(cls) -> dict[str, Any]:
        """What the features of a crop depend on, known without building the extractor (no session is loaded)."""
        return {"name": cls.name, "dim": cls.dim, "revision": cls.revision}

    def features(self, crops: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}


ExtractorFactory = Callable[[], FeatureExtractor]
#: extractor name -> the module that registers it (imported on first use: the hand-crafted one pulls SciPy, 1.2 s;
#: EfficientNet pulls torch).
EXTRACTORS: LazyRegistry[ExtractorFactory] = LazyRegistry({
    "clip-vit-b16-int8": "synthdetect.models.clip_onnx",
    "clip-vit-b16-f32": "synthdetect.models.clip_onnx",
    "handcrafted-v1": "synthdetect.models.handcrafted",
    "efficientnet-lite0-imagenet": "synthdetect.models.efficientnet_features",
})
EXTRACTOR_MODULES = EXTRACTORS.modules
register_extractor = EXTRACTORS.register
_INSTANCES: dict[str, FeatureExtractor] = {}
_BUILDING = threading.Lock()


def get_extractor(name: str) -> FeatureExtractor:
    """One shared instance per process: the float32 CLIP session holds about 1 GB and takes seconds to build.

    Threads that ask at once (a server's workers on their first images) wait for the one being built: unlocked,
    four threads scoring their first photo with wild-v3 built four CLIP sessions (peak 2.9 GB, 11 s; one session:
    0.8 GB, 4 s)."""
    extractor = _INSTANCES.get(name)
    if extractor is None:
        with _BUILDING:
            extractor = _INSTANCES.get(name)
            if extractor is None:
                factory = EXTRACTORS.get(name)
                if factory is None:
                    EXTRACTORS.import_all()  # so the error lists every extractor
                    raise ModelPackageError(
                        f"unknown feature extractor '{name}' (known: {', '.join(sorted(EXTRACTORS.entries))})")
                extractor = _INSTANCES[name] = factory()
    return extractor


def extractor_identity(name: str) -> dict[str, Any]:
    """:meth:`FeatureExtractor.identity` of a registered extractor (its module is imported, nothing is built)."""
    factory = EXTRACTORS.get(name)
    identity = getattr(factory, "identity", None)
    return identity() if callable(identity) else {"name": name}


def policy_views(rgb: Image.Image, policy: CropPolicy) -> tuple[list[Image.Image], bool]:
    """The views a model looks at (global view first, then the native crops) and whether there is a global one."""
    views: list[Image.Image] = [policy.global_crop(rgb)] if policy.global_view else []
    views += policy.native_crops_of(rgb) if policy.native_crops > 0 else []
    return views, policy.global_view


def features_of_views(extractor: FeatureExtractor, views: tuple[list[Image.Image], bool]) -> dict[str, np.ndarray]:
    """``{"global": (dim,), "crops": (k, dim)}`` from :func:`policy_views`."""
    crops, has_global = views
    feats = extractor.features(crops)
    out: dict[str, np.ndarray] = {}
    if has_global:
        out["global"] = feats[0]
    if len(crops) > int(has_global):
        out["crops"] = feats[int(has_global):]
    return out


def view_features(extractor: FeatureExtractor, rgb: Image.Image, policy: CropPolicy) -> dict[str, np.ndarray]:
    """``{"global": (dim,), "crops": (k, dim)}`` for one image."""
    return features_of_views(extractor, policy_views(rgb, policy))


def member_view(feats: dict[str, np.ndarray], view: str) -> np.ndarray:
    """A member's input view.  With no crops (a policy without them) the global view stands in for "crops",
    as :meth:`CropPolicy.native_crops_of` gives an image too small for a crop its global view."""
    if view == "crops" and "crops" not in feats:
        return feats["global"][None]
    return feats[view]


@dataclass
class LinearMember:
    """Standardise, then a logistic-regression direction; crops are aggregated after the head."""

    extractor: str
    view: str  # "global" or "crops"
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    aggregate: str = "mean"

    def logit(self, feats: dict[str, np.ndarray]) -> float:
        x = np.atleast_2d(member_view(feats, self.view))
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return float(z[0]) if self.view == "global" else aggregate(z, self.aggregate)

    def logits_of_rows(self, x: np.ndarray) -> np.ndarray:
        return ((np.atleast_2d(x) - self.mean) / self.scale) @ self.coef + self.intercept

    def meta(self) -> dict[str, Any]:
        return {"extractor": self.extractor, "view": self.view, "aggregate": self.aggregate}


def save_members(path, members: Sequence[LinearMember]) -> None:
    arrays = {}
    for i, m in enumerate(members):
        arrays.update({f"m{i}_mean": m.mean, f"m{i}_scale": m.scale, f"m{i}_coef": m.coef,
                       f"m{i}_intercept": np.array([m.intercept])})
    np.savez(path, **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})


def load_members(path, metas: Sequence[dict[str, Any]]) -> list[LinearMember]:
    with np.load(path, allow_pickle=False) as data:
        return [
            LinearMember(meta["extractor"], meta["view"], data[f"m{i}_mean"], data[f"m{i}_scale"],
                         data[f"m{i}_coef"], float(data[f"m{i}_intercept"][0]), meta.get("aggregate", "mean"))
            for i, meta in enumerate(metas)
        ]


class MultiViewModel(Model):
    """Members' logits, combined by the stacker weights in the card (identity for one member)."""

    #: Images go through the extractors one at a time: the int8 CLIP path must not batch, and batching crops
    #: of several images on the float32 path measured about 2% faster (556 against 565 ms per crop).
    batch_size = 8

    def __init__(self, card: dict[str, Any], members: list[LinearMember]):
        super().__init__(card)
        self.policy = CropPolicy.from_dict(card.get("crop_policy"))
        self.members = members
        stack = card.get("stacker") or {"weights": [1.0] * len(members), "bias": 0.0}
        self.stack_weights = np.asarray(stack["weights"], dtype=np.float64)
        self.stack_bias = float(stack["bias"])
        if self.stack_weights.size != len(members):
            raise ModelPackageError(f"{self.name}: stacker has {self.stack_weights.size} weights for {len(members)} members")
        self.extractor_names = sorted({m.extractor for m in members})
        self._extractors: dict[str, FeatureExtractor] | None = None
        self._missing: str | None = None

    @property
    def extractors(self) -> dict[str, FeatureExtractor]:
        """Built on first use: loading ``default`` must not fail (or cost a 90 MB session) when weights are absent."""
        if self._extractors is None:
            self._extractors = {name: get_extractor(name) for name in self.extractor_names}
        return self._extractors

    def missing_weights(self) -> str | None:
        """Why this model cannot run here (an encoder not installed), or None."""
        if self._extractors is None and self._missing is None:
            try:
                self.extractors
            except ModelPackageError as exc:
                self._missing = f"{self.name} cannot run: {exc}"
        return self._missing

    def out_of_domain(self, image: LoadedImage) -> str | None:
        return super().out_of_domain(image) or self.missing_weights()

    def ready(self) -> None:
        self.missing_weights()

    def prepare(self, image: LoadedImage) -> tuple[list[Image.Image], bool]:
        """The policy's views (at most ``1 + native_crops`` crops of ``size`` px), not the whole photo."""
        return policy_views(image.rgb, self.policy)

    def member_logits(self, views: tuple[list[Image.Image], bool]) -> np.ndarray:
        feats = {name: features_of_views(ex, views) for name, ex in self.extractors.items()}
        return np.array([m.logit(feats[m.extractor]) for m in self.members])

    def logits_prepared(self, prepared: Sequence[tuple[list[Image.Image], bool]]) -> np.ndarray:
        return np.array([float(self.member_logits(v) @ self.stack_weights + self.stack_bias) for v in prepared])


def load_multiview(package: ModelPackage) -> Model:
    members = load_members(package.file("heads"), package.card["members"])
    return MultiViewModel(package.card, members)
