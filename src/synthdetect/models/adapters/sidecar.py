"""The small JSON file beside a Keras or ONNX model that states what the file itself cannot.

``model.onnx.json`` (or ``model.json`` beside ``model.onnx``)::

    {
      "input":  {"size": [224, 224], "resample": "bilinear", "rescale": "1/255",
                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "channel_order": "RGB", "layout": "NCHW", "ela_quality": null},
      "labels": ["artificial", "human"],        # output order; or "positive": "ai" for one output
      "label_map": {"LABEL_0": "ai"},           # optional, for names we cannot place
      "output": "logits",                       # logits | probabilities | sigmoid_logit | sigmoid_probability
      "batch_size": 16,                         # optional; dynamically quantised graphs run one at a time...
      "activations": "float32"                  # ...unless their weights are dequantised (ONNX only; see adapters.onnx)
    }
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthdetect.models.adapters.labels import OUTPUT_KINDS, AdapterError

SIDECAR_KEYS = {"input", "labels", "label_map", "output", "positive", "name", "description", "source", "batch_size",
                "activations"}


def sidecar_candidates(model_path: Path) -> list[Path]:
    return [model_path.with_name(model_path.name + ".json"), model_path.with_suffix(".json")]


def read_sidecar(model_path: Path, explicit: str | None, prefix: str, *,
                 required: bool) -> tuple[dict[str, Any], Path | None]:
    """The sidecar's settings and where they came from; ``{}`` when optional and absent."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise AdapterError(f"{prefix}:{model_path}: sidecar {path} not found")
    else:
        path = next((p for p in sidecar_candidates(model_path) if p.is_file()), None)
        if path is None:
            if required:
                names = " or ".join(p.name for p in sidecar_candidates(model_path))
                raise AdapterError(
                    f"{prefix}:{model_path}: needs a JSON sidecar ({names}) stating input size, normalisation "
                    "and label names"
                )
            return {}, None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: unreadable sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{path}: a sidecar must be a JSON object")
    if data.get("schema", "").startswith("synthdetect.model/"):
        raise AdapterError(f"{path}: this is a synthdetect package card, not an adapter sidecar; "
                           "load the package directly")
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise AdapterError(f"{path}: unknown sidecar key(s) {unknown} (known: {', '.join(sorted(SIDECAR_KEYS))})")
    if "output" in data and data["output"] not in OUTPUT_KINDS:
        raise AdapterError(f"{path}: output must be one of {', '.join(OUTPUT_KINDS)}")
    return data, path
