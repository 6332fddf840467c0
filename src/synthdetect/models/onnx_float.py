"""Run a dynamically quantised ONNX model with float32 activations instead of per-batch int8 ones.

A dynamically quantised model (ONNX Runtime's ``quantize_dynamic``: the CLIP encoder, the Organika peer) rounds
every activation to 256 levels whose scale is set by the batch at hand.  That rounding makes its output chaotic:
measured on the CLIP encoder (2026-12-04), Gaussian noise of 1e-5 on the normalised input (a hundredth of one
pixel level) moved an embedding to cosine 0.986-0.990 of itself, and wild-v2's p_ai on 40 wild-dev images by up
to 0.25 (median 0.013).  So a verdict could change with the CPU's instruction set, the ONNX Runtime build or the
image's batch-mates.

This module rebuilds the graph with the same weights, dequantised once (``(w - zero_point) * scale``, exactly the
values the integer kernels multiply by), and float32 matrix products in place of ``DynamicQuantizeLinear`` ->
``MatMulInteger``/``ConvInteger`` -> ``Cast`` -> ``Mul(scale)``.  The result is the network the int8 file
approximates: deterministic to float rounding, and the same for an image alone or in a batch.  ONNX Runtime's
quantisation tools convert float to int8 but have no converter back, hence this rewrite.

The float weights (4x the int8 file) are handed to ONNX Runtime as external initializers rather than serialised
into the model bytes: that halves the peak memory of building a session (2.2 GB against 1.2 GB for CLIP).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthdetect.models.onnx_integer import drop_initializers_no_longer_read

#: The float op that replaces each integer op; their attributes (pads, strides, group, ...) carry over.
FLOAT_OF = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}
_PLACEHOLDER = "synthdetect:external-initializer"


class NotDynamicQuantized(ValueError):
    """An integer op does not sit in the pattern ``quantize_dynamic`` writes, so it cannot be dequantised."""


@dataclass
class FloatGraph:
    """A dequantised model: graph bytes whose float weights are placeholders, and those weights."""

    model_bytes: bytes
    weights: dict[str, np.ndarray]
    rewritten: int


def _weight_scale_name(scale_mul, inits: dict) -> str:
    names = [name for name in scale_mul.input if name in inits]
    if scale_mul.op_type != "Mul" or len(names) != 1:
        raise NotDynamicQuantized(f"scale of {scale_mul.name or scale_mul.output[0]} is not activation x weight")
    return names[0]


def _per_channel(values: np.ndarray, op_type: str, weight_rank: int) -> np.ndarray:
    """Shape a scale or zero point to broadcast over the weight: per tensor, or per output column of a MatMul
    weight (what ``quantize_dynamic(per_channel=True)`` writes; it keeps ConvInteger per tensor)."""
    if values.size == 1:
        return values.reshape(())
    if op_type == "MatMulInteger" and values.ndim == 1:
        return values.reshape((1,) * (weight_rank - 1) + (-1,))
    raise NotDynamicQuantized(f"{op_type} with a {values.shape} scale or zero point is not supported")


def dequantize_dynamic(path: str | Path) -> FloatGraph:
    """The float32 version of the dynamically quantised model at ``path``; raises NotDynamicQuantized if an
    integer op is wired otherwise."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def only_consumer(name: str, op_type: str):
        users = consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type:
            raise NotDynamicQuantized(f"{name} feeds {[u.op_type for u in users]}, expected one {op_type}")
        return users[0]

    weights: dict[str, np.ndarray] = {}
    replaced: dict[int, Any] = {}  # id(final scale Mul) -> the float op that now writes its output
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type not in FLOAT_OF:
            continue
        quantize = producer.get(node.input[0])
        if quantize is None or quantize.op_type != "DynamicQuantizeLinear":
            raise NotDynamicQuantized(f"{node.op_type} {node.name}: its input is not quantised per batch")
        if node.input[1] not in inits or len(node.input) < 4 or node.input[3] not in inits:
            raise NotDynamicQuantized(f"{node.op_type} {node.name}: weight or its zero point is not a constant")
        cast = only_consumer(node.output[0], "Cast")
        rescale = only_consumer(cast.output[0], "Mul")
        scale_mul = producer.get(next(name for name in rescale.input if name != cast.output[0]))
        if scale_mul is None:
            raise NotDynamicQuantized(f"{node.op_type} {node.name}: no weight scale")
        scale_name = _weight_scale_name(scale_mul, inits)
        float_name = f"{node.input[1]}__float32"
        if float_name not in weights:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zero = _per_channel(numpy_helper.to_array(inits[node.input[3]]).astype(np.float32), node.op_type, w.ndim)
            scale = _per_channel(numpy_helper.to_array(inits[scale_name]).astype(np.float32), node.op_type, w.ndim)
            weights[float_name] = np.ascontiguousarray((w - zero) * scale, dtype=np.float32)
        float_op = helper.make_node(FLOAT_OF[node.op_type], [quantize.input[0], float_name], [rescale.output[0]],
                                    name=f"{node.name or node.output[0]}__float32")
        float_op.attribute.extend(node.attribute)
        replaced[id(rescale)] = float_op
        dropped.update((id(node), id(cast)))

    nodes = [replaced.get(id(node), node) for node in graph.node if id(node) not in dropped]
    outputs = {out.name for out in graph.output}
    while True:  # drop what only fed the integer ops: quantisers, their scales, now-unused constants
        used = {name for node in nodes for name in node.input} | outputs
        live = [node for node in nodes if any(out in used for out in node.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    kept_ids = {id(node) for node in nodes}
    replaced_inputs = {name for node in graph.node if id(node) not in kept_ids for name in node.input}
    del graph.node[:]
    graph.node.extend(nodes)
    drop_initializers_no_longer_read(graph, replaced_inputs)
    for name, values in weights.items():
        graph.initializer.append(_placeholder(name, values))
    return FloatGraph(model.SerializeToString(), weights, len(replaced))


def _placeholder(name: str, values: np.ndarray):
    """An initializer with no data of its own: ONNX Runtime takes its values from add_external_initializers."""
    from onnx import TensorProto

    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(values.shape))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", _PLACEHOLDER), ("offset", "0"), ("length", str(values.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def make_float_session(path: str | Path, options):
    """An ONNX Runtime session of the dequantised model; ``options`` is an ``ort.SessionOptions`` to extend."""
    import onnxruntime as ort

    dequantized = dequantize_dynamic(path)
    names = list(dequantized.weights)
    values = [ort.OrtValue.ortvalue_from_numpy(dequantized.weights[name]) for name in names]
    options.add_external_initializers(names, values)
    # Packing would copy every weight once more (the external buffers must stay); measured no faster for CLIP.
    options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(dequantized.model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    # ONNX Runtime reads external initializers in place: they must live as long as the session.
    session.synthdetect_float_weights = (dequantized.weights, values)
    session.synthdetect_rewritten = dequantized.rewritten
    return session
