"""ONNX export of torch model kinds and an ONNX Runtime path for packages that carry an ONNX file.

Why: on the small CPUs this tool runs on, ONNX Runtime runs the same graph
faster than eager torch (fused convolutions, no Python per layer), so a
package that carries ``model.onnx`` is served by ONNX Runtime unless the
environment asks for torch (``SYNTHDETECT_BACKEND=torch``).  Preprocessing is
the card's, exactly as :class:`~synthdetect.models.torch_kinds.TorchModel`
does it; ``tests/test_onnx_backend.py`` checks both paths agree.

Two ways in:

* ``synthdetect export MODEL --onnx --out DIR`` turns a torch package
  (``small-cnn``, ``ela-cnn``, ``small-pair``, ``efficientnet-lite*``) into one
  with both weight files; the kind stays the same and its loader picks the
  backend (the kind's ``TorchModel.onnx_class`` keeps its preprocessing);
* the ``onnx-classifier`` kind serves any ONNX image classifier (exported from
  another framework) with an input spec on its card, with no torch at all.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.models.base import Model, register_kind
from synthdetect.models.onnx_integer import exact_integer_source
from synthdetect.models.package import ModelPackage, ModelPackageError, staged_package, write_package

BACKEND_ENV = "SYNTHDETECT_BACKEND"
BACKENDS = ("onnxruntime", "torch")
ONNX_FILE = "model.onnx"
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


def preferred_backend(card: dict[str, Any]) -> str:
    """``SYNTHDETECT_BACKEND`` if set, else the card's ``runtime.backend``, else onnxruntime."""
    # stripped: "torch " (from an env file) was "unknown inference backend 'torch '"
    choice = (os.environ.get(BACKEND_ENV) or "").strip() or (card.get("runtime") or {}).get("backend") or "onnxruntime"
    choice = {"onnx": "onnxruntime", "ort": "onnxruntime"}.get(choice.lower(), choice.lower())
    if choice not in BACKENDS:
        raise ModelPackageError(f"unknown inference backend '{choice}' (one of {', '.join(BACKENDS)})")
    return choice


def default_threads() -> int:
    """Threads for one session: the CPUs this process may use (scan workers decode on the others)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: More inference threads than this is a typing slip, not a setting: ONNX Runtime starts every one of them
#: (SYNTHDETECT_THREADS=100000 held 17 GB and 32,000 threads on a 2-core machine before it was stopped).
MAX_THREADS = 1024


def threads_from_environment() -> int:
    """SYNTHDETECT_THREADS (0 or unset: not set)."""
    value = os.environ.get("SYNTHDETECT_THREADS", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"SYNTHDETECT_THREADS must be a whole number of threads, not {value!r}")
    if int(value) > MAX_THREADS:
        raise ValueError(f"SYNTHDETECT_THREADS={value} is more than {MAX_THREADS} threads "
                         f"(this process may use {default_threads()} CPUs)")
    return int(value)


def make_session(path: str | Path, threads: int | None = None, *, float_activations: bool = False):
    """The one way synthdetect opens an ONNX Runtime session (shipped models, the CLIP encoder, ONNX peers).

    ``float_activations``: run a dynamically quantised graph on its dequantised weights (onnx_float)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None and not 0 <= threads <= MAX_THREADS:
        raise ValueError(f"{threads} inference threads: use 1 to {MAX_THREADS} (0 or None: the default)")
    options.intra_op_num_threads = threads or threads_from_environment() or default_threads()
    options.inter_op_num_threads = 1
    # No spin-waiting: during a scan the decode workers need the cores the idle threads would burn.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if float_activations:
        from synthdetect.models.onnx_float import make_float_session

        return make_float_session(path, options)
    # int8 weights are re-stored as uint8 so the integer products are exact on AVX2-only CPUs too (onnx_integer)
    return ort.InferenceSession(exact_integer_source(path), sess_options=options, providers=["CPUExecutionProvider"])


def resized_input(image: LoadedImage, spec: dict[str, Any]) -> np.ndarray:
    """The card's input size as uint8 HWC, resized as TorchModel does (parity between backends)."""
    from synthdetect.models.torch_kinds import resize_to_input  # pure PIL; the same resize for both backends

    return np.asarray(resize_to_input(image.rgb, tuple(spec["size"]), spec.get("resample", "bicubic")))


def normalised_batch(arrays: Sequence[np.ndarray], spec: dict[str, Any]) -> np.ndarray:
    return normalise(np.stack(arrays), spec.get("mean", [0.5, 0.5, 0.5]), spec.get("std", [0.5, 0.5, 0.5]))


def preprocess_numpy(images: Sequence[LoadedImage], spec: dict[str, Any]) -> np.ndarray:
    """Resize to the card's input and normalise to float32 NCHW, as TorchModel does."""
    return normalised_batch([resized_input(im, spec) for im in images], spec)


def normalise(arrays: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 NHWC -> normalised float32 NCHW (same arithmetic order as ``images_to_tensor``)."""
    x = arrays.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean_a) / std_a)


def logits_to_log_odds(raw: np.ndarray, output: dict[str, Any] | None) -> np.ndarray:
    """One logit per image from a graph that returns either one logit or one per class."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 1 or raw.shape[-1] == 1:
        return raw.reshape(-1)
    output = output or {}
    ai, human = output.get("ai_index", 1), output.get("human_index", 0)
    return raw[:, ai] - raw[:, human]


_DYNAMIC_QUANT_OP = b"DynamicQuantizeLinear"


def scan_model_file(path: Path, *, digest: bool = True) -> tuple[str | None, bool]:
    """sha256 of the file (None without ``digest``) and whether its graph quantises activations at run time,
    in one read.

    Dynamic INT8 quantisation takes each activation's scale from the whole
    batch, so an image's score would depend on its batch-mates: such models
    must run one image per call.  Op types are plain strings in the protobuf,
    so a byte search finds them without parsing the whole graph.
    """
    hasher = hashlib.sha256() if digest else None
    found, tail = False, b""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            if hasher is not None:
                hasher.update(chunk)
            found = found or _DYNAMIC_QUANT_OP in tail + chunk
            tail = chunk[-len(_DYNAMIC_QUANT_OP):]
    return (hasher.hexdigest() if hasher is not None else None), found


def one_image_per_run(path: str | Path, session) -> str | None:
    """Why the graph at ``path`` must be run on one image at a time, or None.

    A graph exported with a batch dimension of 1 refuses a batch of two.  A dynamically quantised graph
    (``DynamicQuantizeLinear``: ONNX Runtime's ``quantize_dynamic``) takes each activation's int8 scale from the
    whole batch, so an image's score would change with its batch-mates."""
    if session.get_inputs()[0].shape[:1] == [1]:
        return "the graph's batch dimension is 1"
    if scan_model_file(Path(path), digest=False)[1]:  # the package loader has checked the file's sha256 already
        return "dynamic INT8 quantisation: activation scales are set per batch"
    return None


def card_batch_size(card: dict[str, Any]) -> int:
    """The card's ``runtime.batch_size`` (default: Model's).  Checked at load: 0 or -3 made every image fail
    with "range() arg 3 must not be zero", 'x' was "invalid literal for int()" naming no model, 2.5 ran as 2."""
    value = (card.get("runtime") or {}).get("batch_size", Model.batch_size)
    if isinstance(value, float) and value.is_integer():  # 8.0, as some JSON writers put it
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelPackageError(f"{card.get('name', 'model')}: runtime.batch_size on the card must be a whole "
                                f"number at least 1, not {value!r}")
    return value


def check_class_indices(name: str, output: dict[str, Any] | None, shape: Sequence[Any]) -> None:
    """Refuse at load an ``output.ai_index``/``human_index`` that is not a class of the graph.

    Checked per batch, 5 of 2 classes failed every image with an IndexError, "1" (a string) with numpy's
    indexing message, and -1 or -2 quietly picked a class counted from the end (-2: the human score as AI)."""
    if not output:
        return
    classes = shape[-1] if len(shape) > 1 and isinstance(shape[-1], int) else None
    if classes == 1:
        return  # one logit: the indices are not used
    for key in ("ai_index", "human_index"):
        value = output.get(key, 1 if key == "ai_index" else 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (classes and value >= classes):
            where = f" of the graph's {classes} classes" if classes else ""
            raise ModelPackageError(f"{name}: output.{key} must be a class index{where} (0 to "
                                    f"{classes - 1 if classes else 'n-1'}), not {value!r}")
    if output.get("ai_index", 1) == output.get("human_index", 0):
        raise ModelPackageError(f"{name}: output.ai_index and output.human_index name the same class")


class OnnxModel(Model):
    """A package model served by ONNX Runtime from the ONNX file on its card."""

    def __init__(self, card: dict[str, Any], onnx_path: str | Path, threads: int | None = None):
        super().__init__(card)
        self.onnx_path = Path(onnx_path)
        if not isinstance(card.get("input"), dict) or "size" not in card["input"]:  # was "KeyError: 'input'"
            raise ModelPackageError(f"{self.name}: the card has no input.size ([width, height] the graph takes)")
        self.session = make_session(self.onnx_path, threads)
        self.input_spec = card["input"]
        self.input_size = tuple(self.input_spec["size"])
        self.output_spec = card.get("output")
        check_class_indices(self.name, self.output_spec, self.session.get_outputs()[0].shape)
        self.input_name = self.session.get_inputs()[0].name
        #: Why images go through one per run (whatever the card's runtime.batch_size says), or None.
        self.one_per_run = one_image_per_run(self.onnx_path, self.session)
        self.batch_size = 1 if self.one_per_run else card_batch_size(card)

    def prepare(self, image: LoadedImage) -> np.ndarray:
        return resized_input(image, self.input_spec)

    def batch(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        return normalised_batch(prepared, self.input_spec)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self.input_name: batch})
        return logits_to_log_odds(out, self.output_spec)

    def logits_prepared(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        if self.one_per_run and len(prepared) > 1:  # whoever calls, not only score(), which keeps to batch_size
            return np.concatenate([self.forward(self.batch([one])) for one in prepared])
        return self.forward(self.batch(prepared))


@register_kind("onnx-classifier")
def _load_onnx_classifier(package: ModelPackage) -> Model:
    return OnnxModel(package.card, package.file("onnx"))


# -- export ---------------------------------------------------------------------------------
def export_module(module, path: str | Path, input_size: Sequence[int], opset: int = DEFAULT_OPSET) -> Path:
    """Write ``module`` as ONNX with a dynamic batch axis.

    The TorchScript-based exporter is used on purpose: it needs neither the
    ``onnx`` nor the ``onnxscript`` package, and for plain CNNs it writes the
    same graph as the newer exporter.
    """
    import torch

    path = Path(path)
    module = module.eval()
    example = torch.zeros(2, 3, int(input_size[1]), int(input_size[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return path


def parity(torch_model, onnx_model: OnnxModel, images: Sequence[LoadedImage]) -> dict[str, float]:
    """Largest difference between the two backends' logits and probabilities on ``images``."""
    a = np.asarray(torch_model.logits(images), dtype=np.float64)
    b = np.asarray(onnx_model.logits(images), dtype=np.float64)
    pa, pb = torch_model.calibration(a), onnx_model.calibration(b)
    return {"images": len(images), "max_abs_logit_diff": float(np.max(np.abs(a - b))),
            "max_abs_p_ai_diff": float(np.max(np.abs(pa - pb)))}


def parity_images(input_size: Sequence[int], n: int = 16, seed: int = 0) -> list[LoadedImage]:
    """Deterministic smooth-plus-noise images at a few sizes, so resizing is exercised too."""
    from PIL import Image

    from synthdetect.images import load_image

    rng = np.random.default_rng(seed)
    out = []
    w, h = int(input_size[0]), int(input_size[1])
    for i in range(n):
        scale = (1, 2, 3)[i % 3]
        size = (w * scale + i % 5, h * scale + i % 7)
        yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
        base = np.stack([(xx * (i + 1)) % 256, (yy * (i + 3)) % 256, ((xx + yy) * 2) % 256], -1)
        noise = rng.integers(0, 40, size=base.shape)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        out.append(load_image(Image.fromarray(arr, "RGB"), name=f"parity-{i}"))
    return out


def torch_opset_range() -> tuple[int, int]:
    """The opsets the installed torch's exporter writes (its own constants; 7 to 20 where they are not found)."""
    try:
        from torch.onnx import _constants
    except ImportError:  # pragma: no cover - a torch that moved them
        return 7, 20
    return (int(getattr(_constants, "ONNX_MIN_OPSET", 7)),
            int(getattr(_constants, "ONNX_MAX_OPSET", getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))))


def export_package(name: str, out: str | Path, *, opset: int = DEFAULT_OPSET, tolerance: float = 1e-4) -> ModelPackage:
    """Export a torch package to a new package that also carries ``model.onnx``.

    The parity of the two backends on generated images is measured and
    written on the card; an export that disagrees more than ``tolerance``
    (in probability) is refused.
    """
    from synthdetect.models import find_package, load_package_model
    from synthdetect.models.torch_kinds import TorchModel

    # A NaN tolerance refused every export as disagreeing ("max |p_ai diff| 2.65e-08 > nan"); the command line
    # also refuses a negative one (the API keeps it: a caller may force a refusal).
    if not isinstance(tolerance, (int, float)) or math.isnan(tolerance):
        raise ModelPackageError(f"tolerance must be a number at least 0, not {tolerance!r}")
    low, high = torch_opset_range()
    if not low <= opset <= high:  # torch raised "Unsupported onnx_opset_version" or wrote a graph ORT rejects
        raise ModelPackageError(f"opset {opset}: this torch exports ONNX opsets {low} to {high}")
    source = find_package(name)
    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = "torch"
    try:
        model = load_package_model(source)  # the card found, which may be named other than model.json
    except (ValueError, ImportError) as exc:  # a library the kind needs is missing: one line, as for detect
        raise ModelPackageError(f"{source.name}: {exc}") from None
    finally:
        if previous is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = previous
    if not isinstance(model, TorchModel):
        hint = ("export the models a router routes to, one by one" if source.kind == "router" else
                "only the torch kinds small-cnn, ela-cnn, small-pair and efficientnet-lite* export")
        raise ModelPackageError(f"{source.name}: kind '{source.kind}' has no torch module to export ({hint})")
    out = Path(out).expanduser()  # as a model path is: '--out=~/x' must not make a folder named '~'
    if out.resolve() == source.root.resolve():
        raise ModelPackageError(f"{out}: choose an output directory other than the source package")
    card = {k: v for k, v in source.card.items() if k not in ("files", "created_with")}
    # The graph is written and checked in a scratch folder first: a refused export must not replace the
    # model.onnx of a package already in ``out`` (its card would then list another file's sha256).
    with tempfile.TemporaryDirectory(prefix="synthdetect-export-") as scratch:
        try:  # an opset torch cannot write (99) or ONNX Runtime cannot run (5): one line, not a traceback
            onnx_path = export_module(model.module, Path(scratch) / ONNX_FILE, model.input_size, opset)
            # the class the kind's loader serves the ONNX file with, so the kind's own preprocessing is compared
            onnx_model = type(model).onnx_class(card, onnx_path)
        except Exception as exc:  # torch and onnxruntime raise RuntimeError, ValueError and their own types
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip().replace(scratch, "")
            reason = reason if len(reason) <= 300 else reason[:300] + "..."
            raise ModelPackageError(f"{source.name}: ONNX export at opset {opset} failed ({reason})") from None
        report = parity(model, onnx_model, parity_images(model.input_size))
        if not report["max_abs_p_ai_diff"] <= tolerance:  # NaN logits must not pass
            raise ModelPackageError(
                f"{source.name}: ONNX export disagrees with torch (max |p_ai diff| "
                f"{report['max_abs_p_ai_diff']:.2e} > {tolerance:g}); not written")
        # Settings the source card gave its runtime (batch_size) stay; where it came from is an absolute path,
        # since a relative one ("tiny") says nothing once the package is moved or read from another folder.
        card["runtime"] = {**(source.card.get("runtime") or {}), "backend": "onnxruntime", "onnx_opset": opset,
                           "exported_from": str(source.root.resolve()), "parity": report}
        try:
            # Written beside ``out`` and renamed into place: stopped after the graph was copied, the package
            # already in ``out`` had a model.onnx its card did not list (sha256 mismatch, refused at load).
            with staged_package(out) as folder:
                folder.mkdir(parents=True, exist_ok=True)
                files: dict[str, Path] = {"onnx": Path(shutil.copyfile(onnx_path, folder / ONNX_FILE))}
                if "weights" in source.card.get("files", {}):
                    weights = source.file("weights")
                    files["weights"] = Path(shutil.copyfile(weights, folder / weights.name))
                package = write_package(folder, card, files)
        except OSError as exc:  # a file where the folder should be, a read-only disk: one line, not a traceback
            raise ModelPackageError(f"{out}: cannot write the exported package ({exc.strerror or exc})") from None
    return ModelPackage(root=out, card=package.card)
