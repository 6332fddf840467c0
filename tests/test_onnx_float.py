"""A dynamically quantised ONNX model, dequantised, computes the float network its int8 file approximates.

The models here are written with ``onnx.helper`` and quantised by ONNX Runtime's own ``quantize_dynamic``, so the
pattern matched is the one real quantised models (the CLIP encoder, the Organika peer) carry.  The reference is
numpy with the dequantised weights ``(w - zero_point) * scale`` read back from the quantised file.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synthdetect.models.onnx_float import NotDynamicQuantized, dequantize_dynamic, make_float_session

RNG = np.random.default_rng(7)
KERNEL = RNG.normal(size=(6, 3, 3, 3)).astype(np.float32)
KERNEL_BIAS = RNG.normal(size=6).astype(np.float32)
DENSE = RNG.normal(size=(6 * 5 * 5, 4)).astype(np.float32) / 10
DENSE_BIAS = RNG.normal(size=4).astype(np.float32)


def _float_model(path) -> None:
    """y = Flatten(Conv3x3(x)) @ W + b, for (n, 3, 5, 5) inputs."""
    nodes = [helper.make_node("Conv", ["x", "K", "KB"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["m"]),
             helper.make_node("Add", ["m", "B"], ["y"])]
    inits = [numpy_helper.from_array(a, n) for a, n in ((KERNEL, "K"), (KERNEL_BIAS, "KB"), (DENSE, "W"),
                                                         (DENSE_BIAS, "B"))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned onnxruntime reads (onnx 1.23 writes a newer one)
    onnx.save(model, str(path))


def _dequantised_weight(model: onnx.ModelProto, op_type: str) -> np.ndarray:
    """The float weight the quantised file stands for, read from the file itself."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == op_type)
    w, zero = inits[node.input[1]].astype(np.float32), inits[node.input[3]].astype(np.float32)
    scale = inits[node.input[1].replace("_quantized", "_scale")]  # per tensor, or per MatMul column: broadcasts
    return (w - zero) * scale


def _reference(x: np.ndarray, kernel: np.ndarray, dense: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n, c, 5, 5, 3, 3
    conv = np.einsum("nchwij,ocij->nohw", windows, kernel) + KERNEL_BIAS[None, :, None, None]
    return conv.reshape(len(x), -1) @ dense + DENSE_BIAS


@pytest.fixture(params=[("QInt8", False), ("QUInt8", False), ("QInt8", True)], ids=["int8", "uint8", "per-channel"])
def quantised(request, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type, per_channel = request.param
    _float_model(tmp_path / "float.onnx")
    quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"), weight_type=getattr(QuantType, weight_type),
                     per_channel=per_channel, op_types_to_quantize=["Conv", "MatMul"])
    return tmp_path / "q.onnx"


def _run(session, x):
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_dequantised_model_is_the_float_network_of_the_quantised_weights(quantised):
    model = onnx.load(str(quantised))
    assert {n.op_type for n in model.graph.node} >= {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    session = make_float_session(quantised, ort.SessionOptions())
    assert session.synthdetect_rewritten == 2
    x = RNG.normal(size=(5, 3, 5, 5)).astype(np.float32)
    want = _reference(x, _dequantised_weight(model, "ConvInteger"), _dequantised_weight(model, "MatMulInteger"))
    got = _run(session, x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the int8 run differs from that network by its rounding of the activations, which the float run has not
    int8 = _run(ort.InferenceSession(str(quantised), providers=["CPUExecutionProvider"]), x)
    assert np.abs(int8 - want).max() > 100 * np.abs(got - want).max()


def test_dequantised_model_has_no_integer_ops_and_no_inline_float_weights(quantised):
    graph = onnx.load_from_string(dequantize_dynamic(quantised).model_bytes).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}
    placeholders = [i for i in graph.initializer if i.data_location == TensorProto.EXTERNAL]
    assert len(placeholders) == 2  # the weights travel as external initializers, not in the bytes


def test_an_input_scores_the_same_alone_and_among_others(quantised):
    session = make_float_session(quantised, ort.SessionOptions())
    int8 = ort.InferenceSession(str(quantised), providers=["CPUExecutionProvider"])
    x = RNG.normal(size=(4, 3, 5, 5)).astype(np.float32)
    loud = np.concatenate([x[:1], 50 * x[1:]])  # batch-mates that widen a per-batch quantisation range
    np.testing.assert_allclose(_run(session, x[:1])[0], _run(session, loud)[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(_run(int8, x[:1])[0], _run(int8, loud)[0], atol=1e-3)  # what the int8 file does


def test_an_integer_op_outside_the_dynamic_pattern_is_refused(tmp_path):
    """A MatMulInteger fed a uint8 graph input (static quantisation) has no per-batch scale to undo."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "W"], ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [2, 2])],
        [numpy_helper.from_array(np.ones((3, 2), np.int8), "W")])
    path = tmp_path / "static.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned onnxruntime reads (onnx 1.23 writes a newer one)
    onnx.save(model, str(path))
    with pytest.raises(NotDynamicQuantized, match="not quantised per batch"):
        dequantize_dynamic(path)
