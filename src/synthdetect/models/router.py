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
import threading
from typing import Any, Sequence

import numpy as np

from synthdetect.evaluate.calibration import Calibration
from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, build_model, check_kind, register_kind
from synthdetect.models.package import ModelPackage, ModelPackageError, weights_fingerprint


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
    """Routes images to the models its card names.  Each routed model's card (with the route's calibration and
    band) is read, hash-checked and matched to the route at load; its weights and libraries load when an image is
    first routed to it, so a detector that only ever sees photos never imports torch for the thumbnail model."""

    def __init__(self, card: dict[str, Any]):
        super().__init__(card)
        from synthdetect.models import adapter_for, find_package  # late: the registry imports this module

        if not card.get("routes"):  # a KeyError here read "could not be loaded: KeyError: 'routes'"
            raise ValueError(f"router {self.name}: its card lists no routes, so it could judge no image "
                             "('routes': a list of {max_short_side and/or min_short_side, model or reason})")
        self.routes = [Route(spec) for spec in card["routes"]]
        self._route_of: dict[str, Route] = {}  # routed model name -> its route
        self._packages: dict[str, ModelPackage] = {}  # not built yet
        self._built: dict[str, Model] = {}
        #: routed model name -> its card as routed; what scan fingerprints and draft sizes read
        self.member_cards: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        named = [r for r in self.routes if r.model_name]
        for route in named:
            name = route.model_name
            shared = [r for r in named if r.model_name == name]
            if len(shared) > 1 and any(r.calibration or r.decision for r in shared):
                raise ValueError(f"router {self.name}: {name} is on two routes and one recalibrates "
                                 "it; verdicts name the model, not the route, so each may have one calibration")
            if name in self._route_of:
                continue
            self._route_of[name] = route
            adapter = adapter_for(name)
            if adapter is not None:  # no package card to read: load it now
                self._built[name] = as_routed(adapter(), route)
                self.member_cards[name] = self._built[name].card
            else:
                self._packages[name] = package = find_package(name)
                check_kind(package)  # its module, and the libraries that brings, load with its first image
                self.member_cards[name] = routed_card(package.card, route)
        self._by_model_name = {card["name"]: name for name, card in self.member_cards.items()}

    def member(self, name: str) -> Model:
        """The model routed as ``name`` (a route's ``model``), built on first use."""
        model = self._built.get(name)
        if model is None:
            with self._lock:  # the server's worker threads may route their first images at once
                model = self._built.get(name)
                if model is None:
                    try:
                        model = as_routed(build_model(self._packages[name]), self._route_of[name])
                    except ModelPackageError:
                        raise
                    except Exception as exc:  # a library missing, weights unreadable: say which model
                        why = " ".join(str(exc).split())  # one line, whatever the library wrote
                        raise ModelPackageError(f"{name} (routed by {self.name}) could not be loaded: "
                                                f"{type(exc).__name__}: {why}") from exc
                    self._built[name] = model
        return model

    def model_named(self, model_name: str) -> Model | None:
        """The routed model whose card is named ``model_name`` (what verdicts record), or None."""
        name = self._by_model_name.get(model_name)
        return self.member(name) if name is not None else None

    def route(self, image: LoadedImage) -> tuple[Model | None, str | None]:
        for route in self.routes:
            if route.matches(image):
                if route.model_name is None:
                    return None, route.reason
                model = self.member(route.model_name)
                return model, model.out_of_domain(image)
        return None, f"no route of {self.name} matches this image size ({image.size[0]}x{image.size[1]} px)"

    def ready(self) -> None:
        for name in self._route_of:
            self.member(name).ready()

    def out_of_domain(self, image: LoadedImage) -> str | None:
        model, reason = self.route(image)
        return reason if model is None or reason else None

    def logits(self, images: Sequence[LoadedImage]) -> np.ndarray:  # pragma: no cover - Detector routes first
        raise TypeError("a router is not scored directly; the Detector routes each image to a model")


def routed_card(card: dict[str, Any], route: Route) -> dict[str, Any]:
    """``card`` with the route's calibration and band; refused if the route was fitted for other weights."""
    if route.fitted_for is not None and weights_fingerprint(card) != route.fitted_for:
        raise ValueError(f"the route calibration for {card['name']} was fitted for other weights than those "
                         f"installed; fit it again: synthdetect calibrate-route DATA --router ROUTER --write")
    routed = dict(card)
    if route.calibration is not None:
        routed["calibration"] = route.calibration
    if route.decision is not None:
        routed["decision"] = route.decision
    return routed


def as_routed(model: Model, route: Route) -> Model:
    """``model`` with the route's calibration and band (same weights, no copy of them), or ``model`` itself."""
    if route.calibration is None and route.decision is None:
        return model
    routed = copy.copy(model)
    routed.card = routed_card(model.card, route)
    if route.calibration is not None:
        routed.calibration = Calibration.from_dict(route.calibration)
    if route.decision is not None:
        routed.ai_at_or_above = route.decision.get("ai_at_or_above")
        routed.human_below = route.decision.get("human_below")
    return routed


@register_kind("router")
def _load_router(package: ModelPackage) -> Model:
    return RouterModel(package.card)
