"""Make an INT8 ONNX model's integer matrix products exact on every x86 CPU.

Dynamically quantised models (the CLIP encoder, the Organika peer) multiply uint8 activations by int8 weights
(``MatMulInteger`` / ``ConvInteger``).  On CPUs with AVX-512 VNNI, ONNX Runtime accumulates those products
exactly.  On AVX2-only CPUs it pairs them with ``vpmaddubsw``, whose int16 sums saturate: measured on a
2-core AMD EPYC (2026-12-04), a 197x768 by 768x768 product was wrong in 99.99% of its entries (relative error
0.19), and the shipped wild-v2 moved three sample photos' p_ai from 0.347 / 0.089 / 0.110 to 0.454 / 0.332 /
0.188, enough to turn `human` verdicts into `uncertain`.  Its thresholds were fitted on the exact products.

Storing the weights as uint8 shifted by 128, with their zero points shifted by the same 128, leaves every
difference ``w - zero_point`` and so every product unchanged, and ONNX Runtime's uint8 x uint8 kernels widen to
16 bits before multiplying, so they cannot saturate.  The rewrite is done in memory when a session is made; the
file on disk (hash-checked) is untouched.  ONNX Runtime has no session option for this, hence the rewrite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Integer ops whose input 1 is the weight and input 3 its zero point (ONNX spec, both ops).
INTEGER_OPS = ("MatMulInteger", "ConvInteger")
_INT8 = 3  # onnx.TensorProto.INT8, named here so the module imports without onnx


def _is_int8_initializer(name: str, inits: dict) -> bool:
    return name in inits and inits[name].data_type == _INT8


def has_int8_weights(model) -> bool:
    inits = {init.name: init for init in model.graph.initializer}
    return any(node.op_type in INTEGER_OPS and len(node.input) > 1 and _is_int8_initializer(node.input[1], inits)
               for node in model.graph.node)


def shift_int8_weights_to_uint8(model) -> int:
    """Rewrite ``model`` in place; returns how many integer ops now take uint8 weights."""
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    shifted: dict[str, str] = {}  # int8 initializer -> its uint8 twin (weights or zero points may be shared)

    def uint8_twin(name: str) -> str:
        if name not in shifted:
            values = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            twin = numpy_helper.from_array(values.astype(np.uint8), f"{name}__uint8")
            model.graph.initializer.append(twin)
            shifted[name] = twin.name
        return shifted[name]

    changed = 0
    for node in model.graph.node:
        if node.op_type not in INTEGER_OPS or len(node.input) < 2:
            continue
        weight = node.input[1]
        if not _is_int8_initializer(weight, inits):
            continue
        zero_point = node.input[3] if len(node.input) > 3 and node.input[3] else None
        if zero_point is not None and not _is_int8_initializer(zero_point, inits):
            continue  # a zero point computed at run time cannot be shifted here; leave the op as it is
        node.input[1] = uint8_twin(weight)
        if zero_point is None:  # absent means 0, which becomes 128
            name = f"{weight}__uint8_zero_point"
            if name not in inits:
                model.graph.initializer.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), name))
                inits[name] = model.graph.initializer[-1]
            while len(node.input) < 4:
                node.input.append("")
            node.input[3] = name
        else:
            node.input[3] = uint8_twin(zero_point)
        changed += 1
    drop_initializers_no_longer_read(model.graph, shifted)
    return changed


def drop_initializers_no_longer_read(graph, names) -> None:
    """Remove those of ``names`` (initializers a rewrite replaced) that no node reads any more; other initializers
    stay, read or not, as the model had them (an unread one may still be a graph input's default)."""
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used or init.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def exact_integer_source(path: str | Path) -> str | bytes:
    """What to hand ``ort.InferenceSession``: the path itself, or the rewritten model's bytes when it has int8
    weights in integer ops."""
    import onnx

    model = onnx.load(str(path))
    if shift_int8_weights_to_uint8(model) == 0:
        return str(path)
    return model.SerializeToString()
