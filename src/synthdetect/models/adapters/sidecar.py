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
        # utf-8-sig: the JSON standard's encoding, and Windows editors' byte-order mark is not an error
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: unreadable sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{path}: a sidecar must be a JSON object")
    if str(data.get("schema", "")).startswith("synthdetect.model/"):
        raise AdapterError(f"{path}: this is a synthdetect package card, not an adapter sidecar; "
                           "load the package directly")
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise AdapterError(f"{path}: unknown sidecar key(s) {unknown} (known: {', '.join(sorted(SIDECAR_KEYS))})")
    if "output" in data and data["output"] not in OUTPUT_KINDS:
        raise AdapterError(f"{path}: output must be one of {', '.join(OUTPUT_KINDS)}")
    check_types(data, path)
    if isinstance(data.get("labels"), dict):
        data["labels"] = labels_in_order(data["labels"], path)
    return data, path


def check_types(data: dict[str, Any], path: Path) -> None:
    """Each key's JSON type, so that a list where an object belongs is a one-line error naming the key, not a
    TypeError from deep inside loading (or, for ``batch_size``, every image failing later)."""
    expected = {"input": (dict, "an object"), "label_map": ((dict, str), "an object or 'name:ai,name:human'"),
                "labels": ((list, dict), "a list of class names in output order"),
                "positive": (str, "'ai' or 'human'"), "activations": (str, "a string"),
                "name": (str, "a string"), "description": (str, "a string"), "source": (str, "a string")}
    for key, (types, what) in expected.items():
        if key in data and not isinstance(data[key], types):
            raise AdapterError(f"{path}: {key} must be {what}, not {json.dumps(data[key])}")
    if isinstance(data.get("labels"), list) and not all(isinstance(item, str) for item in data["labels"]):
        raise AdapterError(f"{path}: labels must be class names (strings), not {json.dumps(data['labels'])}")
    if "name" in data and not data["name"].strip():
        raise AdapterError(f"{path}: name must not be empty")
    batch_size = data.get("batch_size", 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AdapterError(f"{path}: batch_size must be a positive whole number, not {json.dumps(batch_size)}")


def labels_in_order(labels: dict[str, Any], path: Path) -> list[str]:
    """``{"0": "fake", "1": "real"}`` -> ``["fake", "real"]``; keys must be the output indices 0..n-1."""
    try:
        indices = sorted(int(key) for key in labels)
    except ValueError:
        raise AdapterError(f"{path}: labels given as an object need output indices as keys (\"0\", \"1\", ...), "
                           f"not {sorted(labels)}") from None
    if indices != list(range(len(labels))):
        raise AdapterError(f"{path}: labels keys must be every output index from 0 to {len(labels) - 1}, "
                           f"not {indices}")
    names = [labels[key] for key in sorted(labels, key=int)]
    if not all(isinstance(name, str) for name in names):
        raise AdapterError(f"{path}: labels must be class names (strings), not {json.dumps(names)}")
    return names
