"""A router card that routes no image, or not every image, says so with the router's name."""

from __future__ import annotations

import json

import pytest

from badinputs import natural_image
from synthdetect import Detector
from synthdetect.models import BUILTIN_DIR


def _router(tmp_path, routes):
    card = json.loads((BUILTIN_DIR / "default" / "model.json").read_text())
    card["name"], card["routes"] = "thumbs-only", routes
    (tmp_path / "model.json").write_text(json.dumps(card))
    return str(tmp_path)


def test_an_image_no_route_takes_is_uncertain_with_the_routers_name_and_its_size(tmp_path):
    small_route = json.loads((BUILTIN_DIR / "default" / "model.json").read_text())["routes"][0]
    detector = Detector.load(_router(tmp_path, [small_route]), use_evidence=False)
    verdict = detector(natural_image(100, 80))
    assert verdict.label == "uncertain" and verdict.p_ai is None
    assert verdict.reasons[0] == "no route of thumbs-only matches this image size (100x80 px)"  # said "default"
    assert detector(natural_image(40, 32)).models[0]["model"] == "cifake-cnn"


@pytest.mark.parametrize("routes", [[], None])
def test_a_router_card_without_routes_is_refused_in_one_plain_line(tmp_path, routes):
    path = _router(tmp_path, routes)
    if routes is None:
        card = json.loads((tmp_path / "model.json").read_text())
        del card["routes"]
        (tmp_path / "model.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="router thumbs-only: its card lists no routes"):
        Detector.load(path)
