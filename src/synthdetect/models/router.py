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
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdetect.evaluate.calibration import Calibration
from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, build_model, check_kind, register_kind
from synthdetect.models.package import CARD_FILE, ModelPackage, ModelPackageError, weights_fingerprint


#: what a route may say; anything else is refused, since a misspelt "max_short_side" made the route take every image
ROUTE_KEYS = ("max_short_side", "min_short_side", "model", "reason", "calibration", "decision", "calibrated_on",
              "note", "description")


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

    def __init__(self, card: dict[str, Any], root: Path | None = None):
        super().__init__(card)
        from synthdetect.models import adapter_for, find_package  # late: the registry imports this module

        if not card.get("routes"):  # a KeyError here read "could not be loaded: KeyError: 'routes'"
            raise ValueError(f"router {self.name}: its card lists no routes, so it could judge no image "
                             "('routes': a list of {max_short_side and/or min_short_side, model or reason})")
        for i, spec in enumerate(card["routes"]):
            unknown = sorted(set(spec) - set(ROUTE_KEYS))
            if unknown:
                raise ValueError(f"router {self.name}: routes[{i}] has unknown key(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(ROUTE_KEYS)})")
        self.routes = [Route(spec) for spec in card["routes"]]
        for i, route in enumerate(self.routes):
            low, high = route.min_short_side, route.max_short_side
            if low is not None and high is not None and low > high:  # every image fell through to "no route"
                raise ValueError(f"router {self.name}: routes[{i}] takes no image (min_short_side {low} is above "
                                 f"max_short_side {high})")
            first, last = span(route)
            if first > last:
                raise ValueError(f"router {self.name}: routes[{i}] takes no image (no whole number of pixels is "
                                 f"a short side from {low if low is not None else 1} to {high})")
            if shadowed(route, self.routes[:i]):  # its model silently judged nothing; an earlier one judged instead
                raise ValueError(f"router {self.name}: routes[{i}] is never reached: the routes before it take every "
                                 "image size it would (the first route that matches an image judges it)")
            # A recalibrated model judged by its own card's band: thresholds chosen on another p_ai scale
            if route.model_name and route.calibration is not None and route.decision is None:
                raise ValueError(f"router {self.name}: routes[{i}] recalibrates {route.model_name} without a "
                                 "decision band of its own; the model's thresholds (and the FPR its card claims for "
                                 "them) were chosen on its own calibration (synthdetect calibrate-route fits both)")
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
                self._packages[name] = package = find_package(route_model_ref(name, root))
                if package.kind == "router":  # it would fail every image it got (or recurse, routed to itself)
                    raise ValueError(f"router {self.name}: its route to {name} names a router; a route must name "
                                     "a model that judges images (list that router's routes here instead)")
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


def span(route: Route) -> tuple[float, float]:
    """The whole-pixel short sides ``route`` takes, first and last (inf: no limit)."""
    return (math.ceil(route.min_short_side) if route.min_short_side is not None else 1,
            math.floor(route.max_short_side) if route.max_short_side is not None else math.inf)


def shadowed(route: Route, earlier: Sequence[Route]) -> bool:
    """Whether every whole-pixel short side ``route`` takes is taken by a route before it."""
    low, high = span(route)
    for start, end in sorted(span(r) for r in earlier):
        if start > low:
            break
        low = max(low, end + 1)
        if low > high or low == math.inf:  # an open-ended earlier route takes all from here on
            return True
    return low > high


def route_model_ref(name: str, root: Path | None) -> str:
    """Where a route's model is: a relative path is read beside the router's card (``../tiny`` in
    ``routers/r/model.json`` is ``routers/tiny``) when it is there, else from the working directory as before; it
    worked in one directory and was an "unknown model" in every other.  Shipped names and prefixed models stay."""
    from synthdetect.models import adapter_for, shipped_package_dir

    if root is None or adapter_for(name) is not None or shipped_package_dir(name) is not None:
        return name
    path = Path(name).expanduser()
    beside = root / path
    return str(beside) if not path.is_absolute() and beside.exists() else name


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
    try:
        return RouterModel(package.card, package.root)
    except ValueError as exc:  # the card's name alone did not say which file: a copy of default is "default" too
        raise ValueError(f"{package.root / CARD_FILE}: {exc}") from None
