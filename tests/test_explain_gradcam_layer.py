"""A map that cannot be made (a Grad-CAM layer off the forward path, a model failing on batches) costs that map
only, with a reason, never the whole explanation."""

from __future__ import annotations

import numpy as np
import torch

from synthdetect.api import Detector
from synthdetect.explain import explain
from synthdetect.models.base import Model
from synthdetect.models.torch_kinds import TorchModel

from test_explain import CARD, Redness, red_square_png


class RednessWithUnusedConv(Redness):
    """Redness plus a convolution the forward pass skips (an auxiliary head), registered last."""

    def __init__(self) -> None:
        super().__init__()
        self.aux_head = torch.nn.Conv2d(1, 1, 1)


def test_an_unused_last_convolution_leaves_occlusion_and_ela_and_says_why():
    detector = Detector(TorchModel(dict(CARD), RednessWithUnusedConv()), use_evidence=False)
    ex = explain(detector, red_square_png())  # the old code raised captum's AssertionError here
    assert ex.gradcam is None and ex.occlusion is not None and ex.ela is not None
    note, = [n for n in ex.notes if n.startswith("gradcam unavailable")]
    assert "'aux_head' is not on redness's forward path" in note and "explain.gradcam_layer" in note


def test_the_card_can_name_the_layer_that_is_used():
    card = {**CARD, "explain": {"gradcam_layer": "conv"}}
    ex = explain(Detector(TorchModel(card, RednessWithUnusedConv()), use_evidence=False), red_square_png(),
                 methods=["gradcam"])
    assert ex.gradcam is not None and ex.gradcam.max() > 0.5


class FailsOnBatches(Model):
    """Scores one image at a time but declares a larger batch: like an ONNX graph exported with batch 1 fixed."""

    batch_size = 16

    def logits(self, images):
        if len(images) > 1:
            raise RuntimeError("Got invalid dimensions for input: input for the following indices\n index: 0 Got: 16 "
                               "Expected: 1")
        return np.asarray([0.5])


def test_a_model_failing_on_the_occlusion_batches_costs_only_that_map():
    ex = explain(Detector(FailsOnBatches(dict(CARD)), use_evidence=False), red_square_png())  # the old code raised
    assert ex.verdict.ok and ex.occlusion is None and ex.ela is not None
    note, = [n for n in ex.notes if n.startswith("occlusion failed")]
    assert note == "occlusion failed: RuntimeError: Got invalid dimensions for input: input for the following indices"
