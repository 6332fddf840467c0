"""The three maps an explanation is made of: Grad-CAM, occlusion and ELA.

Grad-CAM and occlusion come from captum rather than hand-written hooks, so
the attribution code is the same one the rest of the field checks and uses.
Grad-CAM needs gradients and therefore a torch model; occlusion only calls
``Model.logits`` and so works for every model kind, ONNX included.
"""

from __future__ import annotations

import copy
import math
import threading
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from synthdetect.images import LoadedImage
from synthdetect.models.base import Model
from synthdetect.models.torch_kinds import TorchModel


class ExplainUnavailable(RuntimeError):
    """A map cannot be made for this model or image; ``str()`` says why in one line."""


def _captum_attr() -> Any:
    try:
        import captum.attr as attr
    except ImportError as exc:  # pragma: no cover - captum is in the explain/serve/test extras
        raise ExplainUnavailable("explanations need captum: pip install 'synthdetect[explain]'") from exc
    return attr


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size`` = (width, height)."""
    if values.shape[::-1] == tuple(size):
        return values.astype(np.float32)
    return np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


# -- Grad-CAM -----------------------------------------------------------------------------------

# captum registers forward hooks on the explained layer; the server runs detection on the same
# module in other threads, whose forwards would fire those hooks.  Grad-CAM therefore runs on a
# private copy of the module, one at a time per model.
_PRIVATE_MODULES: "weakref.WeakKeyDictionary[TorchModel, tuple[torch.nn.Module, threading.Lock]]" = (
    weakref.WeakKeyDictionary()
)
_PRIVATE_LOCK = threading.Lock()


def _private_module(model: TorchModel) -> tuple[torch.nn.Module, threading.Lock]:
    with _PRIVATE_LOCK:
        entry = _PRIVATE_MODULES.get(model)
        if entry is None:
            private = copy.deepcopy(model.module).eval()
            if getattr(private, "tta_hflip", False):
                private.tta_hflip = False  # one pass per map: Grad-CAM averages the mirrored map itself
            entry = (private, threading.Lock())
            _PRIVATE_MODULES[model] = entry
        return entry


def gradcam_layer(module: torch.nn.Module, name: str | None = None) -> torch.nn.Module:
    """The layer Grad-CAM looks at: the card's ``explain.gradcam_layer``, else the last Conv2d."""
    if name:
        try:
            return module.get_submodule(name)
        except AttributeError as exc:
            raise ExplainUnavailable(f"card names Grad-CAM layer '{name}', which the model does not have") from exc
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ExplainUnavailable("Grad-CAM needs a convolutional layer and this model has none")
    return convs[-1]


_TWINS: "weakref.WeakKeyDictionary[Model, TorchModel | None]" = weakref.WeakKeyDictionary()


def torch_twin(model: Model) -> TorchModel | None:
    """``model`` itself if it is a torch model, else the same package loaded with torch when it has torch weights.

    A small-cnn package exported to ONNX is served by ONNX Runtime, which has
    no gradients; its card still lists the torch weights the ONNX file was
    exported from, so Grad-CAM can explain the same network.
    """
    if isinstance(model, TorchModel):
        return model
    onnx_path = getattr(model, "onnx_path", None)
    if onnx_path is None or "weights" not in model.card.get("files", {}):
        return None
    with _PRIVATE_LOCK:
        if model not in _TWINS:
            from synthdetect.models.base import build_model
            from synthdetect.models.package import load_package

            package = load_package(Path(onnx_path).parent)
            # Without its ONNX file the package can only be served by torch: a card's runtime.backend would lose
            # to SYNTHDETECT_BACKEND=onnxruntime, and the twin would have no gradients either.
            files = {role: entry for role, entry in package.card["files"].items() if role != "onnx"}
            package.card = {**package.card, "files": files}
            twin = build_model(package)
            _TWINS[model] = twin if isinstance(twin, TorchModel) else None
        return _TWINS[model]


def gradcam_map(model: Model, image: LoadedImage, toward_ai: bool = True) -> np.ndarray:
    """Grad-CAM of the model's logit (or its negation for ``toward_ai=False``), in [0, 1], image-sized.

    A single-logit model has one output; Grad-CAM keeps only positive
    evidence, so explaining a "human" answer means explaining ``-logit``.
    """
    model = torch_twin(model) or model
    if not isinstance(model, TorchModel):
        # An ONNX-served small-cnn without its torch weights was "kind 'small-cnn'", a torch kind; and "see the
        # occlusion map" pointed at a map that `--method gradcam` or the service's map=gradcam never made.
        if getattr(model, "onnx_path", None) is not None:
            why = (f"{model.name} runs on ONNX Runtime, which has none, and its package lists no torch weights "
                   "to load instead")
        else:
            why = f"{model.name} is kind '{model.card.get('kind', type(model).__name__)}'"
        raise ExplainUnavailable(f"Grad-CAM needs the gradients of a torch model; {why} (occlusion works for "
                                 "every model)")
    attr = _captum_attr()
    module, lock = _private_module(model)
    layer = gradcam_layer(module, (model.card.get("explain") or {}).get("gradcam_layer"))
    sign = 1.0 if toward_ai else -1.0

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return (sign * module(batch)).reshape(-1, 1)

    batch = model.preprocess([image])
    name = next((n for n, m in module.named_modules() if m is layer), type(layer).__name__)
    with lock, torch.enable_grad():
        try:
            cam = attr.LayerGradCam(forward, layer).attribute(batch, target=0, relu_attributions=True)
        except AssertionError as exc:  # captum asserts when the layer's forward hook never fired
            raise ExplainUnavailable(f"Grad-CAM layer '{name}' is not on {model.name}'s forward path ({exc}); "
                                     "name the layer to use in the card's explain.gradcam_layer") from exc
        if cam.dim() != 4:  # a card naming the Linear head: was "IndexError: tuple index out of range"
            raise ExplainUnavailable(f"Grad-CAM layer '{name}' of {model.name} gives no map of the image (its "
                                     "output has no height and width); name a convolution in the card's "
                                     "explain.gradcam_layer")
        values = cam[0].sum(0).detach().float().numpy()
        if getattr(model.module, "tta_hflip", False):  # the served logit averages the image and its mirror
            mirrored = attr.LayerGradCam(forward, layer).attribute(batch.flip(3), target=0, relu_attributions=True)
            values = (values + mirrored[0].sum(0).detach().float().numpy()[:, ::-1]) / 2
    peak = float(values.max())
    values = values / peak if peak > 0 else np.zeros_like(values)
    return np.clip(_resize_map(values, image.size), 0.0, 1.0)


# -- occlusion ----------------------------------------------------------------------------------


def occlusion_windows(height: int, width: int, grid: int = 8) -> tuple[tuple[int, int], tuple[int, int]]:
    """Window and stride so that about ``grid`` windows span each side, half-overlapping."""
    window = (max(2, math.ceil(height / grid)), max(2, math.ceil(width / grid)))
    stride = (max(1, window[0] // 2), max(1, window[1] // 2))
    return window, stride


def occlusion_calls(height: int, width: int, grid: int = 8) -> int:
    """Model calls an occlusion map costs: one per window plus the unoccluded image.

    Counted as captum's ``Occlusion`` places windows: ``ceil((side - window) / stride) + 1`` per side, the
    last one cut off at the edge, so every pixel is covered (a floor here undercounted 12 windows as 9).
    """
    (wh, ww), (sh, sw) = occlusion_windows(height, width, grid)
    return (math.ceil((height - wh) / sh) + 1) * (math.ceil((width - ww) / sw) + 1) + 1


def _progress_bar(total: int, model: Model):
    """tqdm (a captum dependency) counting scored images; captum's own bar counts batches against windows."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"occlusion ({model.name})", unit="image", leave=False)


def occlusion_batch(model: Model, batch_size: int = 16) -> int:
    """How many occluded copies go to ``model.logits`` in one call: ``batch_size``, or the model's own if smaller."""
    return max(1, min(batch_size, int(getattr(model, "batch_size", batch_size) or 1)))


def occlusion_map(model: Model, image: LoadedImage, grid: int = 8, batch_size: int = 16,
                  progress: bool = False, scores: list[float] | None = None) -> np.ndarray:
    """How much each region raises the AI log-odds: logit(image) - logit(region blurred), image-sized.

    Positive values pushed toward "AI", negative toward "human".  Regions are
    replaced by a blurred copy of themselves, not a flat colour, so the map
    asks "do the fine details here matter?", which is where generator traces live.

    Perturbed images go to the model at most ``model.batch_size`` at a time,
    as ``detect`` sends them: a fixed-batch-1 graph accepts nothing larger, and
    a dynamically quantised one would score each image against its batch-mates.
    ``progress`` shows a bar on stderr, counted in images scored: with a slow model the map takes minutes.
    ``scores``, when given, receives every logit the model returned, the unoccluded image's first (captum
    scores it before any window): the map alone says where, not how much p_ai actually moved.
    """
    attr = _captum_attr()
    batch_size = occlusion_batch(model, batch_size)
    width, height = image.size
    window, stride = occlusion_windows(height, width, grid)
    pixels = np.asarray(image.rgb, dtype=np.float32)
    blurred = np.asarray(image.rgb.filter(ImageFilter.GaussianBlur(radius=max(window) / 3)), dtype=np.float32)
    inputs = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    baseline = torch.from_numpy(blurred).permute(2, 0, 1)[None]

    bar = _progress_bar(occlusion_calls(height, width, grid), model) if progress else None

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if bar is not None:
            bar.update(len(batch))
        arrays = batch.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
        # raw=None: the original bytes no longer describe these pixels.
        variants = [replace(image, rgb=Image.fromarray(a), raw=None, notes=[]) for a in arrays]
        chunks = [np.asarray(model.logits(variants[start : start + batch_size]), dtype=np.float32).reshape(-1)
                  for start in range(0, len(variants), batch_size)]
        if scores is not None:
            scores.extend(float(x) for chunk in chunks for x in chunk)
        return torch.from_numpy(np.concatenate(chunks))

    try:
        with torch.no_grad():
            result = attr.Occlusion(forward).attribute(
                inputs, sliding_window_shapes=(3, *window), strides=(3, *stride), baselines=baseline,
                perturbations_per_eval=batch_size,
            )
    finally:
        if bar is not None:
            bar.close()
    return np.nan_to_num(result[0].mean(0).numpy().astype(np.float32))


# -- ELA ----------------------------------------------------------------------------------------


def ela_map(image: LoadedImage, quality: int = 90) -> np.ndarray:
    """Error-level analysis image (HxWx3 uint8) from the evidence module's ELA, so both show the same thing."""
    from synthdetect.evidence.ela import ela_image

    return np.asarray(ela_image(image, quality=quality).convert("RGB"), dtype=np.uint8)
