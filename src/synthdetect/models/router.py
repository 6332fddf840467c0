"""The ``router`` kind: send each image to the model made for its size.

``default`` is a router package: its card lists routes in order; the first
whose size condition matches the image judges it.  A route with no model
answers ``uncertain`` with its stated reason instead of forcing a model onto
images it never saw.  A route may carry its own ``calibration`` and
``decision`` band: a model calibrated on its training data (cifake-cnn on
CIFAKE) needs another scale and band where the router sends it images of
another kind (thumbnails of real-world photos and art).  ``synthdetect
calibrate-route`` fits them.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from synthdetect.evaluate.calibration import Calibration
from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage, weights_fingerprint


class Route:
    def __init__(self, spec: dict[str, Any]):
        self.max_short_side: int | None = spec.get("max_short_side")
        self.min_short_side: int | None = spec.get("min_short_side")
        self.model_name: str | None = spec.get("model")
        self.reason: str = spec.get("reason", "no model for this image")
        self.calibration: dict[str, Any] | None = spec.get("calibration")
        self.decision: dict[str, Any] | None = spec.get("decision")
        self.fitted_for: dict[str, str] | None = (spec.get("calibrated_on") or {}).get("model_weights")

    def matches(self, image: LoadedImage) -> bool:
        short = image.short_side
        if self.max_short_side is not None and short > self.max_short_side:
            return False
        if self.min_short_side is not None and short < self.min_short_side:
            return False
        return True


class RouterModel(Model):
    def __init__(self, card: dict[str, Any]):
        super().__init__(card)
        from synthdetect.models import load_model  # late: the registry imports this module

        self.routes = [Route(spec) for spec in card["routes"]]
        self.models: dict[str, Model] = {}
        named = [r for r in self.routes if r.model_name]
        for route in named:
            shared = [r for r in named if r.model_name == route.model_name]
            if len(shared) > 1 and any(r.calibration or r.decision for r in shared):
                raise ValueError(f"router {self.name}: {route.model_name} is on two routes and one recalibrates "
                                 "it; verdicts name the model, not the route, so each may have one calibration")
            if route.model_name not in self.models:
                self.models[route.model_name] = as_routed(load_model(route.model_name), route)

    def route(self, image: LoadedImage) -> tuple[Model | None, str | None]:
        for route in self.routes:
            if route.matches(image):
                if route.model_name is None:
                    return None, route.reason
                model = self.models[route.model_name]
                return model, model.out_of_domain(image)
        return None, "no route of the default model matches this image size"

    def ready(self) -> None:
        for model in self.models.values():
            model.ready()

    def out_of_domain(self, image: LoadedImage) -> str | None:
        model, reason = self.route(image)
        return reason if model is None or reason else None

    def logits(self, images: Sequence[LoadedImage]) -> np.ndarray:  # pragma: no cover - Detector routes first
        raise TypeError("a router is not scored directly; the Detector routes each image to a model")


def as_routed(model: Model, route: Route) -> Model:
    """``model`` with the route's calibration and band (same weights, no copy of them), or ``model`` itself."""
    if route.calibration is None and route.decision is None:
        return model
    if route.fitted_for is not None and weights_fingerprint(model.card) != route.fitted_for:
        raise ValueError(f"the route calibration for {model.name} was fitted for other weights than those "
                         f"installed; fit it again: synthdetect calibrate-route DATA --router ROUTER --write")
    routed = copy.copy(model)
    routed.card = dict(model.card)
    if route.calibration is not None:
        routed.calibration = Calibration.from_dict(route.calibration)
        routed.card["calibration"] = route.calibration
    if route.decision is not None:
        routed.card["decision"] = route.decision
        routed.ai_at_or_above = route.decision.get("ai_at_or_above")
        routed.human_below = route.decision.get("human_below")
    return routed


@register_kind("router")
def _load_router(package: ModelPackage) -> Model:
    return RouterModel(package.card)
