"""``keras:/path/model.h5`` or ``.keras``: a Keras 3 classifier run on the torch backend.

Keras files know their input shape and final activation but not the pixel
scaling nor the class names, so those come from an optional sidecar
(``model.h5.json``; see :mod:`.sidecar`) or the name options; the defaults
(RGB, NHWC, ``x/255``, bilinear resize to the model's input size) are what
most published Keras CNNs use and are written onto the card.  ``ela_quality``
in the sidecar reproduces the ELA input of the published Keras ELA-CNNs.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from typing import Any, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.messages import first_line
from synthdetect.models.adapters.base import AdapterModel, adapter_card, local_path, require_file, split_options
from synthdetect.models.adapters.labels import AdapterError, OutputMapping
from synthdetect.models.adapters.onnx import check_against_graph, output_mapping
from synthdetect.models.adapters.preprocess import ArrayPreprocess, assumed_scaling, preprocess_from_spec
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
        if getattr(exc, "name", None) and exc.name.split(".")[0] != "keras" and importlib.util.find_spec("keras"):
            # keras is there; the backend KERAS_BACKEND names is not (tensorflow, jax)
            raise AdapterError(
                f"keras is installed but cannot import its backend '{os.environ['KERAS_BACKEND']}' "
                f"(KERAS_BACKEND; {exc}); unset KERAS_BACKEND to use torch, which synthdetect installs") from exc
        raise AdapterError(f"keras models need keras (pip install 'synthdetect[keras]'): {exc}") from exc
    return keras


# Layers that leave values unchanged at inference, so the activation before them is the output's.
PASS_THROUGH = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                "GaussianNoise", "AlphaDropout", "ActivityRegularization", "Identity", "Flatten"}
SOFTMAX_LIKE = {"softmax"}
SIGMOID_LIKE = {"sigmoid", "hard_sigmoid"}
LOGIT_LIKE = {"linear", "log_softmax"}  # log_softmax differs from logits by a per-row constant: same log-odds
UNKNOWN = "unknown"


def final_activation(model: Any) -> str:
    """The activation on the model's output, or ``'unknown'``.

    A ``Softmax()`` layer has no ``.activation`` attribute, so reading only
    that attribute called it linear and the scores were softmaxed twice.
    """
    layer = model
    while getattr(layer, "layers", None):  # a nested model: its own last layer decides
        layers = [item for item in layer.layers if type(item).__name__ != "InputLayer"]
        while layers and type(layers[-1]).__name__ in PASS_THROUGH:
            layers.pop()
        if not layers:
            return UNKNOWN
        layer = layers[-1]
    name = type(layer).__name__
    if name == "Softmax":
        return "softmax"
    if name in ("ReLU", "LeakyReLU", "PReLU", "ELU"):
        return name.lower()
    activation = getattr(layer, "activation", None)
    if activation is None:
        return UNKNOWN
    return getattr(activation, "__name__", UNKNOWN)


def default_output_kind(n_outputs: int, activation: str) -> str | None:
    """What the outputs are, when the activation says so with confidence; None when it does not."""
    if n_outputs == 1:
        if activation in SIGMOID_LIKE:
            return "sigmoid_probability"
        return "sigmoid_logit" if activation in LOGIT_LIKE else None
    if activation in SOFTMAX_LIKE:
        return "probabilities"
    return "logits" if activation in LOGIT_LIKE else None


def probe_outputs(module: Any, preprocess: ArrayPreprocess) -> np.ndarray:
    """The model's outputs on four fixed probe images (three of noise, one grey), one row per probe."""
    from PIL import Image

    rng = np.random.default_rng(0)
    probes = [Image.fromarray(rng.integers(0, 256, (preprocess.height, preprocess.width, 3), dtype=np.uint8))
              for _ in range(3)] + [Image.new("RGB", (preprocess.width, preprocess.height), (128, 128, 128))]
    out = module(preprocess(probes), training=False)
    out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    return np.asarray(out, dtype=np.float64).reshape(len(probes), -1)


def output_count(module: Any, preprocess: ArrayPreprocess, out_shape: tuple, where: str) -> int:
    """How many scores the model gives per image: its output shape's last axis, or a probe's when that is None.

    A custom last layer that does not state its output size gave ``(None, None)``, and ``int(None)`` a traceback.
    """
    if len(out_shape) != 2:
        raise AdapterError(f"{where}: expected one row of scores per image (None, K), the model gives {out_shape}")
    if out_shape[-1] is not None:
        return int(out_shape[-1])
    try:
        return int(probe_outputs(module, preprocess).shape[1])
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, it cannot be used
        raise AdapterError(f"{where}: its output shape {out_shape} does not say how many scores it gives, and a "
                           f"probe batch failed ({first_line(exc) or type(exc).__name__})") from exc


def probe_output_kind(module: Any, preprocess: ArrayPreprocess, where: str, activation: str) -> str:
    """Run a few probe images to tell probabilities from logits when the last layer does not say.

    Rows in [0, 1] summing to 1 on every probe are probabilities; anything
    else could be logits or something else entirely, so it is refused rather
    than guessed.
    """
    out = probe_outputs(module, preprocess)
    if out.shape[1] > 1 and np.all((out >= 0) & (out <= 1)) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        return "probabilities"
    raise AdapterError(f"{where}: cannot tell whether the outputs are logits or probabilities (last activation "
                       f"'{activation}'); state \"output\" in the sidecar")


class KerasModel(AdapterModel):
    def __init__(self, card: dict[str, Any], mapping: OutputMapping, module: Any, preprocess: ArrayPreprocess):
        super().__init__(card, mapping)
        self.module = module
        self.preprocess = preprocess

    def raw_outputs(self, images: Sequence[LoadedImage]) -> np.ndarray:
        out = self.module(self.preprocess([im.rgb for im in images]), training=False)
        # On the torch backend this is a torch tensor; numpy's __array__ path warns about its copy keyword.
        return out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)


def only_shape(shape: Any, side: str, where: str) -> tuple:
    """The shape of a model's one input or output (Keras gives a list or dict of them for several)."""
    shapes = list(shape.values()) if isinstance(shape, dict) else shape if isinstance(shape, list) else [shape]
    if len(shapes) != 1:
        raise AdapterError(f"{where}: expected one image input and one output, the model has {len(shapes)} "
                           f"{side}s {shapes}")
    return tuple(shapes[0])


def load_keras(spec: str) -> KerasModel:
    target, options = split_options(spec, OPTIONS, PREFIX)
    path = require_file(local_path(target), PREFIX, SUFFIXES)
    where = f"{PREFIX}:{target}"
    sidecar, sidecar_path = read_sidecar(path, options.get("sidecar"), PREFIX, required=False)
    keras = import_keras()
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        # Keras itself answers "File not found" for a file that is there but truncated or not a .keras archive
        raise AdapterError(f"{where}: not a loadable Keras model (not a .keras zip archive: truncated, or another "
                           "format renamed)")
    try:
        module = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - keras raises many types for unreadable files
        raise AdapterError(f"{where}: not a loadable Keras model ({first_line(exc) or type(exc).__name__})") from exc
    in_shape, out_shape = (only_shape(shape, side, where) for side, shape in
                           (("input", module.input_shape), ("output", module.output_shape)))
    if len(in_shape) != 4 or in_shape[-1] != 3:
        raise AdapterError(f"{where}: expected an RGB channels-last input (None, H, W, 3), the model takes {in_shape}")
    defaults = {"layout": "NHWC", "height": in_shape[1], "width": in_shape[2], "rescale": 1.0 / 255.0}
    preprocess = preprocess_from_spec(sidecar.get("input", {}), {k: v for k, v in defaults.items() if v}, where)
    check_against_graph(preprocess, defaults, list(in_shape), where)  # not a Keras error for every image
    n_outputs = output_count(module, preprocess, out_shape, where)
    activation = final_activation(module)
    if n_outputs == 1 and activation in SOFTMAX_LIKE:
        # Dense(1, activation="softmax"), a common slip in published Keras detectors, outputs 1.0 for every image:
        # read as a probability (as a sidecar may state) it called every image AI with p_ai 1.000
        raise AdapterError(f"{where}: its one output goes through a softmax, which is 1.0 for every image, so the "
                           "model cannot tell images apart (a Dense(1) layer needs a sigmoid)")
    kind = sidecar.get("output") or default_output_kind(n_outputs, activation)
    output_from = "sidecar" if sidecar.get("output") else "final activation"
    if kind is None:
        kind = probe_output_kind(module, preprocess, where, activation) if n_outputs > 1 else None
        output_from = "probe batch (rows in [0, 1] summing to 1)"
        if kind is None:
            raise AdapterError(f"{where}: cannot tell whether the one output is a logit or a probability (last "
                               f"activation '{activation}'); state \"output\" in the sidecar")
    mapping = output_mapping(sidecar, options, n_outputs, where,
                             default_multi=kind if n_outputs > 1 else "logits",
                             default_single=kind if n_outputs == 1 else "sigmoid_logit")
    assumed = assumed_scaling(sidecar.get("input", {}), preprocess, where)
    card = adapter_card(
        sidecar.get("name") or f"{PREFIX}:{target}", PREFIX, source=str(path), mapping=mapping,
        preprocessing={**preprocess.describe(), "stated_in": str(sidecar_path) if sidecar_path else "defaults",
                       **({"assumed": assumed} if assumed else {})},
        extra={"final_activation": activation, "output_from": output_from, "backend": keras.backend.backend(),
               "created_with": {"keras": keras.__version__}},
    )
    if assumed:
        card["description"] += f"; {assumed}"
    from synthdetect.models.package import sha256_file

    card["sha256"] = sha256_file(path)
    model = KerasModel(card, mapping, module, preprocess)
    model.batch_size = sidecar.get("batch_size", model.batch_size)
    return model
