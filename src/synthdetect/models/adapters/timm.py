"""``timm:NAME``, ``timm:/dir`` (timm's hub layout) or ``timm:/checkpoint.pth?arch=NAME``: a timm classifier.

timm is an optional extra and is imported only here, when such a name is
used: it depends on torchvision, which must be built for the same torch as
synthdetect (``pip install 'synthdetect[timm]'`` on a machine where that
holds).  Preprocessing is timm's own eval transform, rebuilt from the model's
pretrained cfg (input size, interpolation, crop_pct, crop_mode, mean, std) by
:func:`preprocess_from_data_config`, so the model sees what timm would feed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.messages import first_line
from synthdetect.models.adapters.base import AdapterModel, adapter_card, local_path, split_options
from synthdetect.models.adapters.labels import (
    AdapterError, OutputMapping, multi_class_mapping, parse_label_overrides, single_output_mapping,
)
from synthdetect.models.adapters.preprocess import ArrayPreprocess

PREFIX = "timm"
OPTIONS = ("arch", "num_classes", "labels", "positive")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TIMM_DEFAULT_CROP_PCT = 0.875  # timm.data.constants.DEFAULT_CROP_PCT
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess_from_data_config(config: Mapping[str, Any]) -> ArrayPreprocess:
    """timm ``resolve_data_config`` output (or a pretrained cfg) -> the same eval transform, without torchvision."""
    input_size = config.get("input_size") or (3, 224, 224)
    if len(input_size) != 3 or input_size[0] != 3:
        raise AdapterError(f"timm input_size {tuple(input_size)} is not an RGB (3, H, W) size")
    interpolation = config.get("interpolation") or "bilinear"
    if interpolation == "random":
        interpolation = "bilinear"  # timm's eval transform uses bilinear for 'random'
    crop_pct = config.get("crop_pct") or TIMM_DEFAULT_CROP_PCT
    return ArrayPreprocess(
        height=int(input_size[1]), width=int(input_size[2]), resample=str(interpolation),
        crop_pct=float(crop_pct), crop_mode=str(config.get("crop_mode") or "center"), rescale=1.0 / 255.0,
        mean=tuple(config.get("mean") or IMAGENET_MEAN), std=tuple(config.get("std") or IMAGENET_STD),
        channel_order="RGB", layout="NCHW",
    )


def read_hub_config(directory: Path) -> dict[str, Any]:
    """timm's ``config.json`` (architecture, num_classes, pretrained_cfg, label_names) from a local directory."""
    path = directory / "config.json"
    if not path.is_file():
        raise AdapterError(f"{PREFIX}:{directory}: no config.json (not a timm model directory)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path}: malformed config ({exc.msg})") from exc
    if "architecture" not in config:
        raise AdapterError(f"{path}: no 'architecture' (not a timm config; for transformers models use hf:)")
    return config


def import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:  # also torchvision failing to import inside timm
        raise AdapterError(
            f"timm models need the timm package, which could not be imported ({exc}); install it with "
            "pip install 'synthdetect[timm]' only where torchvision matches your torch build"
        ) from exc
    return timm


def head_mapping(n_outputs: int, labels: Sequence[str] | None, options: Mapping[str, str], where: str) -> OutputMapping:
    if n_outputs == 1:
        return single_output_mapping("sigmoid_logit", options.get("positive"), labels, where,
                                     parse_label_overrides(options.get("labels"), where))
    if not labels or len(labels) != n_outputs:
        if not options.get("labels"):
            have = f"labels {list(labels)}" if labels else "no label names"
            raise AdapterError(f"{where}: the model has {n_outputs} classes but {have}; state them with "
                               "'?labels=0:ai|human,1:ai|human' (class index or name, then the side its publisher "
                               "gives it)")
        labels = [str(i) for i in range(n_outputs)]
    return multi_class_mapping("logits", labels, parse_label_overrides(options.get("labels"), where), where,
                               positive=options.get("positive"))


class TimmModel(AdapterModel):
    def __init__(self, card: dict[str, Any], mapping: OutputMapping, module: Any, preprocess: ArrayPreprocess):
        super().__init__(card, mapping)
        self.module = module.eval()
        self.preprocess = preprocess

    def raw_outputs(self, images: Sequence[LoadedImage]) -> np.ndarray:
        import torch

        batch = torch.from_numpy(self.preprocess([im.rgb for im in images]))
        with torch.inference_mode():
            return self.module(batch).float().numpy()


def _load_state(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            return state[key]
    return state


def load_timm(spec: str) -> TimmModel:
    target, options = split_options(spec, OPTIONS, PREFIX)
    where = f"{PREFIX}:{target}"
    path = local_path(target)
    is_path = path.exists() or target.startswith(("/", "./", "../", "~"))
    if is_path and not path.exists():
        raise AdapterError(f"{where}: file not found")
    if "arch" in options and not (is_path and path.is_file()):
        named_by = "a model directory names it in config.json" if is_path else "the name is the architecture"
        raise AdapterError(f"{where}: 'arch' is for a bare checkpoint file; {named_by}")
    # options are checked before timm is imported, so a typo is not hidden behind a missing-timm error
    num_classes_option = options.get("num_classes")
    if num_classes_option is not None and not (num_classes_option.isdigit() and int(num_classes_option) > 0):
        raise AdapterError(f"{where}: num_classes must be a positive whole number, not '{num_classes_option}'")
    parse_label_overrides(options.get("labels"), where)
    labels: list[str] | None = None
    if is_path and path.is_dir():
        config = read_hub_config(path)
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise AdapterError(f"{where}: no weights ({' or '.join(WEIGHT_FILES)})")
        arch, num_classes, labels = config["architecture"], config.get("num_classes"), config.get("label_names")
        overlay = config.get("pretrained_cfg") or {}
    elif is_path:
        arch = options.get("arch")
        if not arch:
            raise AdapterError(f"{where}: a bare checkpoint needs its architecture: '?arch=NAME&num_classes=N'")
        weights, num_classes, overlay = path, options.get("num_classes"), {}
    else:
        arch, weights, num_classes, overlay = target, None, options.get("num_classes"), {}
    timm = import_timm()
    try:
        kwargs: dict[str, Any] = {"pretrained": weights is None}
        if num_classes:
            kwargs["num_classes"] = int(num_classes)
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        module = timm.create_model(arch, **kwargs)
        if weights is not None:
            module.load_state_dict(_load_state(weights))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise AdapterError(f"{where}: cannot build the timm model: {first_line(exc) or type(exc).__name__}") from exc
    data_config = timm.data.resolve_data_config({}, model=module)
    preprocess = preprocess_from_data_config(data_config)
    labels = labels or getattr(module, "pretrained_cfg", {}).get("label_names")
    mapping = head_mapping(module.num_classes, labels, options, where)
    card = adapter_card(f"{PREFIX}:{target}", PREFIX, source=str(weights or arch), mapping=mapping,
                        preprocessing={**preprocess.describe(), "timm_data_config": dict(data_config)},
                        extra={"architecture": arch, "created_with": {"timm": timm.__version__}})
    return TimmModel(card, mapping, module, preprocess)
