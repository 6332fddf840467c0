"""``keras:/path/model.h5`` or ``.keras``: a Keras 3 classifier run on the torch backend.

Keras files know their input shape and final activation but not the pixel
scaling nor the class names, so those come from an optional sidecar
(``model.h5.json``; see :mod:`.sidecar`) or the name options; the defaults
(RGB, NHWC, ``x/255``, bilinear resize to the model's input size) are what
most published Keras CNNs use and are written onto the card.  ``ela_quality``
in the sidecar reproduces the ELA input of the published Keras ELA-CNNs.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.models.adapters.base import AdapterModel, adapter_card, local_path, require_file, split_options
from synthdetect.models.adapters.labels import AdapterError, OutputMapping
from synthdetect.models.adapters.onnx import output_mapping
from synthdetect.models.adapters.preprocess import ArrayPreprocess, preprocess_from_spec
from synthdetect.models.adapters.sidecar import read_sidecar

PREFIX = "keras"
OPTIONS = ("sidecar", "labels", "positive")
SUFFIXES = (".h5", ".hdf5", ".keras")


def import_keras() -> Any:
    """Keras with the torch backend (the one installed beside synthdetect), chosen before the first import."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        raise AdapterError(f"keras models need keras (pip install 'synthdetect[keras]'): {exc}") from exc
    return keras


def final_activation(model: Any) -> str:
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    return getattr(activation, "__name__", "linear")


def default_output_kind(n_outputs: int, activation: str) -> str:
    if n_outputs == 1:
        return "sigmoid_probability" if activation == "sigmoid" else "sigmoid_logit"
    return "probabilities" if activation == "softmax" else "logits"


class KerasModel(AdapterModel):
    def __init__(self, card: dict[str, Any], mapping: OutputMapping, module: Any, preprocess: ArrayPreprocess):
        super().__init__(card, mapping)
        self.module = module
        self.preprocess = preprocess

    def raw_outputs(self, images: Sequence[LoadedImage]) -> np.ndarray:
        out = self.module(self.preprocess([im.rgb for im in images]), training=False)
        # On the torch backend this is a torch tensor; numpy's __array__ path warns about its copy keyword.
        return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)


def load_keras(spec: str) -> KerasModel:
    target, options = split_options(spec, OPTIONS, PREFIX)
    path = require_file(local_path(target), PREFIX, SUFFIXES)
    where = f"{PREFIX}:{target}"
    sidecar, sidecar_path = read_sidecar(path, options.get("sidecar"), PREFIX, required=False)
    keras = import_keras()
    try:
        module = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - keras raises many types for unreadable files
        raise AdapterError(f"{where}: not a loadable Keras model ({str(exc).splitlines()[0][:200]})") from exc
    in_shape = tuple(module.input_shape)
    if len(in_shape) != 4 or in_shape[-1] != 3:
        raise AdapterError(f"{where}: expected an RGB channels-last input (None, H, W, 3), the model takes {in_shape}")
    defaults = {"layout": "NHWC", "height": in_shape[1], "width": in_shape[2], "rescale": 1.0 / 255.0}
    preprocess = preprocess_from_spec(sidecar.get("input", {}), {k: v for k, v in defaults.items() if v}, where)
    n_outputs = int(module.output_shape[-1])
    activation = final_activation(module)
    kind = default_output_kind(n_outputs, activation)
    mapping = output_mapping(sidecar, options, n_outputs, where,
                             default_multi=kind if n_outputs > 1 else "logits",
                             default_single=kind if n_outputs == 1 else "sigmoid_logit")
    card = adapter_card(
        sidecar.get("name") or f"{PREFIX}:{target}", PREFIX, source=str(path), mapping=mapping,
        preprocessing={**preprocess.describe(), "stated_in": str(sidecar_path) if sidecar_path else "defaults"},
        extra={"final_activation": activation, "backend": keras.backend.backend(),
               "created_with": {"keras": keras.__version__}},
    )
    from synthdetect.models.package import sha256_file

    card["sha256"] = sha256_file(path)
    return KerasModel(card, mapping, module, preprocess)
