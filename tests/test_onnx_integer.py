"""Integer products of INT8 ONNX models are exact after the uint8 re-store, on any x86 CPU.

On AVX2-only CPUs ONNX Runtime's uint8 x int8 kernel saturates (a 768-wide product was wrong in 99.99% of its
entries on a 2-core AMD EPYC); the expected values here are computed in int64 numpy, so these tests fail there
without the rewrite and pass everywhere with it.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synthdetect.models.onnx_integer import exact_integer_source, has_int8_weights, shift_int8_weights_to_uint8


def _session(source) -> ort.InferenceSession:
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def _matmul_model(weight: np.ndarray, zero_point: np.ndarray | None, shared: bool = False) -> onnx.ModelProto:
    """Y = MatMulInteger(A, W, 128, zp), twice on the same weight when ``shared``."""
    inputs = ["A", "W", "azp"] + (["zp"] if zero_point is not None else [])
    nodes = [helper.make_node("MatMulInteger", inputs, ["Y"])]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.INT32, None)]
    if shared:
        nodes.append(helper.make_node("MatMulInteger", inputs, ["Y2"]))
        outputs.append(helper.make_tensor_value_info("Y2", TensorProto.INT32, None))
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(np.array(128, np.uint8), "azp")]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(zero_point, "zp"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("A", TensorProto.UINT8, None)], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("zero_point, shared", [(True, False), (False, False), (True, True)])
def test_matmul_integer_is_exact_after_the_rewrite(tmp_path, zero_point: bool, shared: bool):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 768), dtype=np.uint8)  # full-range activations, as DynamicQuantizeLinear gives
    w = rng.integers(-128, 128, (768, 64), dtype=np.int8)
    zp = rng.integers(-5, 6, (64,), dtype=np.int8) if zero_point else None
    exact = (a.astype(np.int64) - 128) @ (w.astype(np.int64) - (zp.astype(np.int64) if zp is not None else 0))
    path = tmp_path / "mm.onnx"
    onnx.save(_matmul_model(w, zp, shared), path)
    source = exact_integer_source(path)
    assert isinstance(source, bytes)
    rewritten = onnx.load_from_string(source)
    assert not has_int8_weights(rewritten)
    inits = {i.name: i for i in rewritten.graph.initializer}
    for node in rewritten.graph.node:  # weight and zero point (128 where there was none) are uint8, stored once
        assert inits[node.input[1]].data_type == inits[node.input[3]].data_type == TensorProto.UINT8
    assert "W" not in inits and len(inits) == 3
    for y in _session(source).run(None, {"A": a}):
        np.testing.assert_array_equal(y, exact)


def test_conv_integer_is_exact_after_the_rewrite():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (1, 16, 8, 8), dtype=np.uint8)
    w = rng.integers(-128, 128, (4, 16, 3, 3), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["X", "W", "xzp"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, None)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(128, np.uint8), "xzp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert shift_int8_weights_to_uint8(model) == 1
    y = _session(model.SerializeToString()).run(None, {"X": x})[0]
    xs, ws = x.astype(np.int64) - 128, w.astype(np.int64)
    exact = np.zeros((1, 4, 6, 6), dtype=np.int64)
    for i in range(6):
        for j in range(6):
            exact[0, :, i, j] = np.tensordot(ws, xs[0, :, i:i + 3, j:j + 3], axes=([1, 2, 3], [0, 1, 2]))
    np.testing.assert_array_equal(y, exact)


def test_a_model_without_int8_weights_is_loaded_from_its_path(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert exact_integer_source(path) == str(path)
