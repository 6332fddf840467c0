"""The ``router`` kind: send each image to the model made for its size.

``default`` is a router package: its card lists routes in order; the first
whose size condition matches the image judges it.  A route with no model
answers ``uncertain`` with its stated reason instead of forcing a model onto
images it never saw.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage


class Route:
    def __init__(self, spec: dict[str, Any]):
        self.max_short_side: int | None = spec.get("max_short_side")
        self.min_short_side: int | None = spec.get("min_short_side")
        self.model_name: str | None = spec.get("model")
        self.reason: str = spec.get("reason", "no model for this image")

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
        for route in self.routes:
            if route.model_name and route.model_name not in self.models:
                self.models[route.model_name] = load_model(route.model_name)

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


@register_kind("router")
def _load_router(package: ModelPackage) -> Model:
    return RouterModel(package.card)
