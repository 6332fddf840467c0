"""``onnx:/path/model.onnx``: any ONNX image classifier, with a JSON sidecar stating its preprocessing and labels.

An ONNX file carries the graph but not how its inputs were prepared nor what
its outputs mean, so the sidecar (see :mod:`.sidecar`) is required.  Layout
and input size default to what the graph's input shape fixes.

A dynamically quantised graph runs one image per call, as published, unless
``?activations=float32`` (or ``"activations": "float32"`` in the sidecar)
asks for its weights dequantised and float32 activations (``onnx_float``):
then an image's score no longer depends on its batch-mates or on rounding,
and images are batched.  The scores are the float network's, close to the
int8 file's but not equal, so the card says which ran.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.messages import first_line
from synthdetect.models.adapters.base import AdapterModel, adapter_card, local_path, require_file, split_options
from synthdetect.models.adapters.labels import (
    AdapterError, OutputMapping, multi_class_mapping, parse_label_overrides, single_output_mapping,
)
from synthdetect.models.adapters.preprocess import ArrayPreprocess, assumed_scaling, preprocess_from_spec
from synthdetect.models.adapters.sidecar import read_sidecar
from synthdetect.models.onnx_float import NotDynamicQuantized

PREFIX = "onnx"
OPTIONS = ("sidecar", "labels", "positive", "activations")
ACTIVATIONS = ("as-published", "float32")


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def shape_defaults(shape: Sequence[Any]) -> dict[str, Any]:
    """Layout and size the graph's input shape already fixes (``[N,3,H,W]`` or ``[N,H,W,3]``)."""
    if len(shape) != 4:
        raise AdapterError(f"expected a 4-D image input, the graph's input has shape {list(shape)}")
    if _fixed(shape[1]) == 3:
        return {"layout": "NCHW", "height": _fixed(shape[2]), "width": _fixed(shape[3])}
    if _fixed(shape[3]) == 3:
        return {"layout": "NHWC", "height": _fixed(shape[1]), "width": _fixed(shape[2])}
    return {}


def check_against_graph(preprocess: ArrayPreprocess, fixed: dict[str, Any], shape: list[Any], where: str) -> None:
    """Refuse sidecar settings the graph contradicts at load, not as an ONNX Runtime traceback mid-batch."""
    if fixed.get("layout") and preprocess.layout != fixed["layout"]:
        raise AdapterError(f"{where}: sidecar input.layout '{preprocess.layout}' contradicts the graph's input "
                           f"shape {shape} ({fixed['layout']})")
    channels = _fixed(shape[1] if preprocess.layout == "NCHW" else shape[3])
    if channels is not None and channels != 3:
        raise AdapterError(f"{where}: the graph's input shape {shape} takes {channels} channel(s) in "
                           f"{preprocess.layout}; images are fed as RGB, 3 channels")
    for key in ("height", "width"):
        if fixed.get(key) and getattr(preprocess, key) != fixed[key]:
            raise AdapterError(f"{where}: sidecar input.size {[preprocess.height, preprocess.width]} contradicts "
                               f"the graph's input shape {shape} "
                               f"(fixed {fixed['height'] or '?'}x{fixed['width'] or '?'})")


def output_mapping(sidecar: dict[str, Any], options: dict[str, str], n_outputs: int | None, where: str,
                   default_multi: str = "logits", default_single: str = "sigmoid_logit") -> OutputMapping:
    """Shared by ONNX and Keras: sidecar labels/polarity plus name options -> mapping."""
    labels = sidecar.get("labels")  # a list in output order (read_sidecar turned {"0": ..., "1": ...} into one)
    n = n_outputs or (len(labels) if labels else None)
    positive = options.get("positive") or sidecar.get("positive")
    overrides = {**parse_label_overrides(sidecar.get("label_map"), where),
                 **parse_label_overrides(options.get("labels"), where)}
    if n == 1 or (n is None and positive):
        kind = sidecar.get("output", default_single)
        if not kind.startswith("sigmoid"):
            raise AdapterError(f"{where}: one output per image needs output sigmoid_logit or sigmoid_probability")
        return single_output_mapping(kind, positive, labels, where, overrides)
    if positive:  # it would be ignored, and whoever wrote it believes it sets the polarity
        raise AdapterError(f"{where}: 'positive' is for one-output models; this one has {n} outputs, so name "
                           "its classes with labels (and '?labels=NAME:ai|human,...' where a name says neither)")
    if not labels and n and options.get("labels"):
        labels = [str(i) for i in range(n)]  # '?labels=0:ai,1:human' names classes by index
    if not labels:
        raise AdapterError(f"{where}: the sidecar names no labels; add \"labels\": [...] in output order")
    if n is not None and len(labels) != n:
        raise AdapterError(f"{where}: the model has {n} outputs but the sidecar names {len(labels)} labels")
    kind = sidecar.get("output", default_multi)
    if kind.startswith("sigmoid"):
        raise AdapterError(f"{where}: {kind} needs one output per image, the model has {n}")
    return multi_class_mapping(kind, labels, overrides, where)


#: Ops that quantise activations with a scale taken from the whole batch, besides the DynamicQuantizeLinear that
#: ``quantize_dynamic`` writes: ONNX Runtime's optimiser fuses it into these when a graph is saved after optimising.
FUSED_DYNAMIC_QUANT_OPS = (b"DynamicQuantizeMatMul", b"DynamicQuantizeLSTM")


def fused_dynamic_quantisation(path: Path) -> str | None:
    """The first fused per-batch quantising op in the file, or None (a byte search, as scan_model_file does)."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return next((op.decode() for op in FUSED_DYNAMIC_QUANT_OPS if data.find(op) != -1), None)


#: Graph input types and the array type each is fed: preprocessing runs in float32 and the batch is cast at the end
#: (half-precision exports are common; ONNX Runtime refuses a float32 array for a float16 input).
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxModel(AdapterModel):
    def __init__(self, card: dict[str, Any], mapping: OutputMapping, session: Any, preprocess: ArrayPreprocess,
                 batch_size: int, fixed_batch: int | None = None):
        super().__init__(card, mapping)
        self.session = session
        self.preprocess = preprocess
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.batch_size = batch_size
        self.fixed_batch = fixed_batch
        self.input_dtype = INPUT_TYPES[session.get_inputs()[0].type]

    def raw_outputs(self, images: Sequence[LoadedImage]) -> np.ndarray:
        return self.run([im.rgb for im in images])

    def run(self, images: Sequence[Any], run_options: Any = None) -> np.ndarray:
        """PIL images -> the graph's raw outputs."""
        batch = self.preprocess(images).astype(self.input_dtype, copy=False)
        count = len(batch)
        if self.fixed_batch and count < self.fixed_batch:
            # a graph exported for exactly N images: fill with copies of the last, whose outputs are dropped
            batch = np.concatenate([batch, np.repeat(batch[-1:], self.fixed_batch - count, axis=0)])
        return np.asarray(self.session.run([self.output_name], {self.input_name: batch}, run_options)[0])[:count]


def load_onnx(spec: str) -> OnnxModel:
    from synthdetect.models.onnx_backend import make_session, scan_model_file

    target, options = split_options(spec, OPTIONS, PREFIX)
    path = require_file(local_path(target), PREFIX, [".onnx"])
    where = f"{PREFIX}:{target}"
    sidecar, sidecar_path = read_sidecar(path, options.get("sidecar"), PREFIX, required=True)
    activations = options.get("activations") or sidecar.get("activations") or "as-published"
    if activations not in ACTIVATIONS:
        raise AdapterError(f"{where}: activations '{activations}' is not one of {', '.join(ACTIVATIONS)}")
    sha256, dynamic_quant = scan_model_file(path)
    fused_op = fused_dynamic_quantisation(path) if path.stat().st_size else None
    if fused_op and activations == "float32":
        raise AdapterError(f"{where}: cannot run with float32 activations: the graph quantises activations inside "
                           f"{fused_op} (fused by ONNX Runtime's optimiser); use the file quantize_dynamic wrote")
    float_activations = dynamic_quant and activations == "float32"
    per_batch_scales = (dynamic_quant and not float_activations) or bool(fused_op)
    try:
        session = make_session(path, float_activations=float_activations)
    except NotDynamicQuantized as exc:
        raise AdapterError(f"{where}: cannot run with float32 activations ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise AdapterError(f"{where}: not a loadable ONNX model ({first_line(exc) or type(exc).__name__})") from exc
    if len(session.get_inputs()) != 1:  # ONNX Runtime would refuse every batch for the missing feed
        names = [item.name for item in session.get_inputs()]
        raise AdapterError(f"{where}: the graph has {len(names)} inputs {names}; only graphs whose one input is "
                           "the image batch are supported")
    graph_input = session.get_inputs()[0]
    if graph_input.type not in INPUT_TYPES:
        raise AdapterError(f"{where}: input '{graph_input.name}' is {graph_input.type}; only float inputs "
                           f"({', '.join(INPUT_TYPES)}) are supported")
    try:
        defaults = shape_defaults(graph_input.shape)
    except AdapterError as exc:
        raise AdapterError(f"{where}: {exc}") from None
    preprocess = preprocess_from_spec(sidecar.get("input", {}), {k: v for k, v in defaults.items() if v}, where)
    check_against_graph(preprocess, defaults, list(graph_input.shape), where)
    out_shape = session.get_outputs()[0].shape
    n_outputs = _fixed(out_shape[-1]) if len(out_shape) >= 2 else (1 if len(out_shape) == 1 else None)
    mapping = output_mapping(sidecar, options, n_outputs, where)
    if mapping.single and (op := final_normaliser(path, session.get_outputs()[0].name)):
        # as for Keras's Dense(1, activation="softmax"): read as a probability, every image was 'ai' at p_ai 1.000
        raise AdapterError(f"{where}: its one output goes through a {op}, which is "
                           f"{'1.0' if op == 'Softmax' else '0.0'} for every image, so the model cannot tell images "
                           "apart (a one-output head needs a sigmoid)")
    fixed_batch = _fixed(graph_input.shape[0])
    if fixed_batch == 1 or per_batch_scales:
        batch_size, why = 1, "dynamic INT8 quantisation" if per_batch_scales else "the graph's batch dimension is 1"
    elif fixed_batch:
        batch_size, why = fixed_batch, f"the graph's batch dimension is {fixed_batch}; shorter batches are padded"
    else:
        batch_size = int(sidecar.get("batch_size", AdapterModel.batch_size))
        why = "sidecar" if "batch_size" in sidecar else "default"
    runtime: dict[str, Any] = {"batch_size": batch_size, "why": why}
    if float_activations:
        runtime["activations"] = "float32: the int8 weights dequantised, activations not quantised"
    assumed = assumed_scaling(sidecar.get("input", {}), preprocess, where)
    card = adapter_card(
        sidecar.get("name") or f"{PREFIX}:{target}", PREFIX, source=str(path), mapping=mapping,
        preprocessing={**preprocess.describe(), **({"assumed": assumed} if assumed else {})},
        extra={"sidecar": str(sidecar_path), "input_name": graph_input.name, "input_type": graph_input.type,
               "sha256": sha256, "runtime": runtime},
    )
    if assumed:
        card["description"] += f"; {assumed}"
    model = OnnxModel(card, mapping, session, preprocess, batch_size, fixed_batch)
    check_graph_runs(model, where)
    return model


#: Ops that only reshape, copy or retype a tensor: a softmax before them still decides the output's values.
_PASS_THROUGH_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Dropout", "Cast"}


def final_normaliser(path: Path, output: str) -> str | None:
    """``Softmax`` or ``LogSoftmax`` when the graph's ``output`` comes out of one (past ops that only reshape it).

    Over one output per image those are constant (1.0 and 0.0), whatever the image.  Only one-output graphs are
    read, and without external weight files: most graphs have two or more outputs and are not parsed here."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - ONNX Runtime loaded it; a graph onnx cannot parse is simply not checked
        return None
    made_by = {name: node for node in graph.node for name in node.output}
    node = made_by.get(output)
    while node is not None and node.op_type in _PASS_THROUGH_OPS and node.input:
        node = made_by.get(node.input[0])
    return node.op_type if node is not None and node.op_type in ("Softmax", "LogSoftmax") else None


def check_graph_runs(model: OnnxModel, where: str) -> None:
    """One grey image through the graph at load, as ``hf:`` does: a graph whose input dimensions are symbolic
    but whose layers are not (a Gemm over a fixed-size flatten) refused the sidecar's size only at run time,
    with the same ONNX Runtime error as every image's failure."""
    from PIL import Image

    import onnxruntime

    probe = Image.new("RGB", (64, 48), (128, 128, 128))
    quiet = onnxruntime.RunOptions()
    quiet.log_severity_level = 4  # the error is raised as one line below; ORT's own log line would repeat it
    try:
        model.run([probe], quiet)
    except Exception as exc:  # noqa: BLE001 - whatever the graph raises, it would raise it for every image
        raise AdapterError(f"{where}: the graph refuses the input the sidecar describes "
                           f"({model.preprocess.height}x{model.preprocess.width} {model.preprocess.layout}): "
                           f"{first_line(exc) or type(exc).__name__}") from None
