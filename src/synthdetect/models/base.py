"""The one interface every model kind implements, and the registry of kinds.

Like a Hugging Face pipeline, scoring is split into ``preprocess`` ->
``forward`` -> calibration, and like timm, a kind is created by one factory
from a package card.  The Detector only ever talks to :class:`Model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from synthdetect.evaluate.calibration import Calibration
from synthdetect.images import LoadedImage
from synthdetect.lazy_registry import LazyRegistry
from synthdetect.models.package import ModelPackage, ModelPackageError


def _at_most_two_colours(image: LoadedImage) -> int:
    """The number of distinct colours when it is at most two, else 0 (Pillow stops counting at the third)."""
    rgb = getattr(image, "rgb", None)
    colours = rgb.getcolors(2) if rgb is not None else None
    return len(colours) if colours else 0


@dataclass
class ModelScore:
    """One model's opinion on one image: raw logit and calibrated probability."""

    model: str
    logit: float
    p_ai: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "raw_logit": round(self.logit, 6), "p_ai": round(self.p_ai, 6), **self.details}


class Model:
    """Base class: subclasses implement :meth:`logits` (log-odds of AI, uncalibrated)."""

    #: Images per forward pass; INT8-dynamic ONNX models must use 1 (see DEVELOPERS.md).
    batch_size: int = 64

    def __init__(self, card: dict[str, Any]):
        self.card = card
        self.name: str = card["name"]
        self.calibration = Calibration.from_dict(card.get("calibration"))
        decision = card.get("decision") or {}
        self.ai_at_or_above: float | None = decision.get("ai_at_or_above")
        self.human_below: float | None = decision.get("human_below")

    def out_of_domain(self, image: LoadedImage) -> str | None:
        """A reason this model should not judge ``image`` (too small, wrong shape), or None."""
        limits = self.card.get("input", {})
        short, long_ = min(image.size), max(image.size)
        min_side = limits.get("min_side", 8)
        if short < min_side:
            return f"image too small to judge ({image.size[0]}x{image.size[1]} px; {self.name} needs at least {min_side} px)"
        max_aspect = limits.get("max_aspect", 4.0)
        if long_ / short > max_aspect:
            ratio = long_ / short
            # Enough decimals to differ from the limit: 2.2:1 or 2.03:1, never a rounded "2.0:1" beside "max 2:1".
            for digits in (0 if ratio >= 10 else 1, 2, 3):
                shown = f"{ratio:.{digits}f}"
                if float(shown) > max_aspect:
                    break
            return f"aspect ratio {shown}:1 is outside what {self.name} was trained on (max {max_aspect:g}:1)"
        max_short = limits.get("max_short_side")
        if max_short and short > max_short:
            return f"image larger than {self.name} handles (short side {short} > {max_short} px)"
        if not limits.get("two_colour_images") and (colours := _at_most_two_colours(image)):
            # 1-bit scans and line art: no shipped model saw one, and on them the small CNN called
            # real drawings 'ai' (14 of 30 thumbnails); a card that trained on them can say so
            return (f"only {colours} colour{'s' if colours > 1 else ''} in the image (1-bit, line art or flat): "
                    f"{self.name} was not trained on such images")
        return None

    def logits(self, images: Sequence[LoadedImage]) -> np.ndarray:
        """Log-odds of AI: override this, or :meth:`prepare` and :meth:`logits_prepared` (then this composes them)."""
        if type(self).logits_prepared is Model.logits_prepared:
            raise NotImplementedError(f"{type(self).__name__} implements neither logits nor logits_prepared")
        return self.logits_prepared([self.prepare(im) for im in images])

    def prepare(self, image: LoadedImage) -> Any:
        """The weight-free part of scoring one image (resize, crops).

        ``synthdetect scan`` runs it in its decode worker processes, so that
        only this small result, not the decoded photo, crosses to the process
        that holds the weights.  The default keeps the whole image.
        """
        return image

    def logits_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        """Logits from what :meth:`prepare` returned; kinds that override ``prepare`` override this too."""
        return self.logits(prepared)

    def ready(self) -> None:
        """Load anything built lazily; called before a scan forks its workers so none of them builds it again."""

    def score(self, images: Sequence[LoadedImage]) -> list[ModelScore]:
        return self.score_prepared([self.prepare(im) for im in images])

    def score_prepared(self, prepared: Sequence[Any]) -> list[ModelScore]:
        out: list[ModelScore] = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            raw = np.asarray(self.logits_prepared(chunk), dtype=np.float64).reshape(-1)
            p = self.calibration(raw)
            out.extend(ModelScore(self.name, float(r), float(q)) for r, q in zip(raw, p))
        return out

    def describe(self) -> dict[str, Any]:
        return self.card


ModelFactory = Callable[[ModelPackage], Model]

#: kind -> the module that registers it, imported when a package of that kind is first built.  Eager imports made
#: every ``synthdetect detect`` pay for torch, scikit-learn and SciPy (about 6 of its 9 seconds, measured with
#: ``benchmarks/cli_latency.py``) although a photo needs none of them.
KINDS: LazyRegistry[ModelFactory] = LazyRegistry({
    "small-cnn": "synthdetect.models.torch_kinds",
    "ela-cnn": "synthdetect.models.ela_cnn",
    "small-pair": "synthdetect.models.pair",
    "clip-cascade": "synthdetect.models.clip_cascade",
    "onnx-classifier": "synthdetect.models.onnx_backend",
    "router": "synthdetect.models.router",
    "clip-head": "synthdetect.models.clip_onnx",
    "wild-stack": "synthdetect.models.clip_onnx",
    "handcrafted": "synthdetect.models.handcrafted",
    "efficientnet-lite0": "synthdetect.models.efficientnet_lite",
    "efficientnet-lite1": "synthdetect.models.efficientnet_lite",
    "efficientnet-lite2": "synthdetect.models.efficientnet_lite",
})
KIND_MODULES = KINDS.modules
register_kind = KINDS.register
import_all_kinds = KINDS.import_all


def model_kinds() -> list[str]:
    return sorted(KINDS.entries)


def check_kind(package: ModelPackage) -> None:
    """Refuse a package of a kind nothing registers, without importing the kind's module if it is known."""
    if package.kind not in KINDS:
        import_all_kinds()  # a kind registered elsewhere, or else so the error lists every kind there is
        if package.kind not in KINDS.entries:
            raise ModelPackageError(
                f"{package.name}: unknown model kind '{package.kind}' (known: {', '.join(model_kinds())})")


def build_model(package: ModelPackage) -> Model:
    check_kind(package)
    factory = KINDS.get(package.kind)
    if factory is None:
        raise ModelPackageError(f"{package.name}: {KIND_MODULES[package.kind]} registers no kind '{package.kind}'")
    return factory(package)
