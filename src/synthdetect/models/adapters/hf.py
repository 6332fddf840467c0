"""``hf:ORG/NAME`` and ``hf:/local/dir``: a transformers image-classification model as a synthdetect model.

Preprocessing is the model's own ``preprocessor_config.json`` run by the PIL
backend of its image processor (``backend="pil"``), so no torchvision is
needed and the result equals ``transformers.pipeline("image-classification")``
given the same processor.  Loading honours ``HF_HUB_OFFLINE=1``: a hub name
then resolves only from the local cache.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from synthdetect.images import LoadedImage
from synthdetect.messages import first_line
from synthdetect.models.adapters.base import AdapterModel, adapter_card, local_path, split_options
from synthdetect.models.adapters.labels import (
    AdapterError, multi_class_mapping, parse_label_overrides, single_output_mapping,
)

PREFIX = "hf"
OPTIONS = ("labels", "positive", "revision")
_PROCESSOR_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                   "do_normalize", "image_mean", "image_std", "do_convert_rgb")


def _looks_like_path(target: str) -> bool:
    return target.startswith(("/", "./", "../", "~", "\\")) or (len(target) > 1 and target[1] == ":")


def resolve_source(target: str) -> str:
    """A local directory (checked here, for a clear error) or a hub repository id."""
    path = local_path(target)
    if path.exists() or _looks_like_path(target):
        if not path.is_dir():
            raise AdapterError(f"{PREFIX}:{target}: no such directory" if not path.exists()
                               else f"{PREFIX}:{target}: expected a model directory, got a file")
        for required in ("config.json", "preprocessor_config.json"):
            if not (path / required).is_file():
                why = "not a Hugging Face model directory" if required == "config.json" else \
                    "the preprocessing the model was published with is unknown"
                raise AdapterError(f"{PREFIX}:{target}: no {required} ({why})")
        return str(path)
    if target.count("/") != 1:
        raise AdapterError(f"{PREFIX}:{target}: not a local directory nor a hub id of the form ORG/NAME")
    return target


class HFModel(AdapterModel):
    def __init__(self, card: dict[str, Any], mapping, processor: Any, module: Any):
        super().__init__(card, mapping)
        self.processor = processor
        self.module = module.eval()

    def raw_outputs(self, images: Sequence[LoadedImage]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[im.rgb for im in images], return_tensors="pt")
        with torch.inference_mode():
            return self.module(**inputs).logits.float().numpy()


_OFFLINE_HINT = (" (HF_HUB_OFFLINE is set: only the local cache is searched; download it once with internet access, "
                 "or point hf: at a local directory)")


def hub_offline() -> bool:
    import os

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def in_local_cache(repo_id: str, revision: str | None) -> bool:
    """Whether the hub id's config is in the local Hugging Face cache (a file lookup, no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - cannot tell: let transformers decide
        return True


def _load_error(target: str, exc: Exception, not_local: str = "") -> AdapterError:
    first = first_line(exc) or type(exc).__name__
    hint = _OFFLINE_HINT if hub_offline() else ""
    return AdapterError(f"{PREFIX}:{target}: cannot load the model: {not_local}{first}{hint}")


def load_hf(spec: str) -> HFModel:
    target, options = split_options(spec, OPTIONS, PREFIX)
    source = resolve_source(target)
    try:
        import transformers
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ImportError as exc:
        raise AdapterError(f"{PREFIX}:{target}: needs transformers (pip install 'synthdetect[hf]'): {exc}") from exc
    transformers.utils.logging.disable_progress_bar()
    revision = options.get("revision")
    if revision and local_path(target).is_dir():  # transformers ignores it for a folder; the card would claim it
        raise AdapterError(f"{PREFIX}:{target}: revision is for hub ids; a local directory holds one version")
    kwargs = {"revision": revision} if revision else {}
    not_local = ""
    if source == target and not in_local_cache(target, revision):
        # perhaps a mistyped local folder: say so before (offline) or beside (online) the hub's own error
        not_local = f"no local folder '{target}'; as a hub id it needs network"
        if hub_offline():
            raise AdapterError(f"{PREFIX}:{target}: cannot load the model: {not_local}, and it is not in the local "
                               f"Hugging Face cache{_OFFLINE_HINT}")
        not_local += ": "
    try:
        # backend="pil": the slow, numpy/PIL processor; the fast one needs torchvision.
        processor = AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs)
        module = AutoModelForImageClassification.from_pretrained(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - safetensors, torch and transformers raise many types for bad files
        raise _load_error(target, exc, not_local) from exc
    config = module.config
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    where = f"{PREFIX}:{target}"
    overrides = parse_label_overrides(options.get("labels"), where)
    if config.num_labels == 1:
        mapping = single_output_mapping("sigmoid_logit", options.get("positive"), labels, where, overrides)
    elif getattr(config, "problem_type", None) == "multi_label_classification":
        raise AdapterError(f"{where}: multi-label heads (independent sigmoids per class) are not supported")
    else:
        mapping = multi_class_mapping("logits", labels, overrides, where, positive=options.get("positive"))
    settings = processor.to_dict()
    preprocessing = {"processor": type(processor).__name__,
                     **{k: settings[k] for k in _PROCESSOR_KEYS if k in settings}}
    card = adapter_card(
        f"{PREFIX}:{target}", PREFIX, source=source, mapping=mapping, preprocessing=preprocessing,
        extra={"architecture": (config.architectures or [type(module).__name__])[0],
               "revision": revision or getattr(config, "_commit_hash", None),
               "created_with": {"transformers": transformers.__version__}},
    )
    model = HFModel(card, mapping, processor, module)
    check_processor_fits(model, where)
    return model


def check_processor_fits(model: HFModel, where: str) -> None:
    """One grey image through processor and model at load: a ``preprocessor_config.json`` whose size the model
    refuses is one error now, not the same error for every image."""
    from PIL import Image

    probe = Image.new("RGB", (64, 48), (128, 128, 128))
    try:
        import torch

        with torch.inference_mode():
            model.module(**model.processor(images=[probe], return_tensors="pt"))
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, it would raise it for every image
        first = first_line(exc) or type(exc).__name__
        raise AdapterError(f"{where}: the model refuses what its preprocessor_config.json produces: {first}") from None
