"""Map other people's class names onto ``ai``/``human`` and their outputs onto log-odds of AI.

Published detectors name their classes ``artificial``, ``FAKE``, ``by AI``,
``LABEL_0``...  The fusion layer needs one number, the log-odds that an image is
AI, so every adapter turns its model's raw output into that number here, with
the class mapping stated on the card.  A class we cannot place is an error,
never a guess: guessing the polarity of a detector flips every verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from synthdetect.models.package import ModelPackageError

AI, HUMAN = "ai", "human"

_AI_NAMES = {
    "ai", "artificial", "fake", "generated", "synthetic", "by ai", "ai generated", "ai-generated", "ai_generated",
    "aigenerated", "ai art", "ai image", "machine generated", "computer generated", "deepfake", "1_fake",
}
_HUMAN_NAMES = {
    "human", "real", "authentic", "natural", "nature", "genuine", "by human", "human made", "human-made",
    "human_made", "human art", "photo", "camera", "not ai", "not_ai", "0_real",
}
#: The output kinds an adapter may declare.
OUTPUT_KINDS = ("logits", "probabilities", "sigmoid_logit", "sigmoid_probability")
#: How far probabilities may stray outside [0, 1], or a softmax row's sum from 1: generous, so float16 heads pass.
PROBABILITY_TOLERANCE = 1e-2


class AdapterError(ModelPackageError):
    """An external model cannot be loaded or its outputs cannot be read as ai/human."""


def normalise_label(name: str) -> str | None:
    """``'AI-generated'`` -> ``'ai'``, ``'REAL'`` -> ``'human'``; None when the name says neither."""
    key = re.sub(r"[\s_\-]+", " ", str(name).strip().lower())
    if key in _AI_NAMES or key.replace(" ", "_") in _AI_NAMES or key.replace(" ", "") in _AI_NAMES:
        return AI
    if key in _HUMAN_NAMES or key.replace(" ", "_") in _HUMAN_NAMES or key.replace(" ", "") in _HUMAN_NAMES:
        return HUMAN
    return None


def parse_label_overrides(text: str | Mapping[str, str] | None, where: str = "") -> dict[str, str]:
    """``'LABEL_0:human,LABEL_1:ai'`` (or a dict) -> ``{'LABEL_0': 'human', 'LABEL_1': 'ai'}``."""
    if not text:
        return {}
    pairs = text.items() if isinstance(text, Mapping) else (
        item.rsplit(":", 1) if ":" in item else (item, "") for item in str(text).split(",") if item.strip()
    )
    out: dict[str, str] = {}
    for name, target in pairs:
        target = str(target).strip().lower()
        if target not in (AI, HUMAN):
            raise AdapterError(f"{where + ': ' if where else ''}label override '{name}:{target}': "
                               "the target must be 'ai' or 'human'")
        out[str(name).strip()] = target
    return out


@dataclass
class OutputMapping:
    """How one model's output vector becomes log-odds of AI.

    ``kind`` is one of:
    - ``logits``: C >= 2 scores fed to a softmax (HF, timm, most ONNX exports);
    - ``probabilities``: C >= 2 values that already went through a softmax (Keras ``softmax`` heads);
    - ``sigmoid_logit`` / ``sigmoid_probability``: one output before / after a sigmoid whose
      positive class is ``positive`` (``ai`` or ``human``): the stated polarity.
    """

    kind: str
    labels: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # ai/human for each entry of labels
    positive: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise AdapterError(f"unknown output kind '{self.kind}' (one of {', '.join(OUTPUT_KINDS)})")

    @property
    def single(self) -> bool:
        return self.kind.startswith("sigmoid")

    def log_odds(self, outputs: np.ndarray) -> np.ndarray:
        """Raw model outputs (N, C) -> log-odds of AI (N,), in float64.

        A NaN output stays NaN (the detector reports that no model judged the
        image); numpy's warnings about it are not the user's business.
        """
        out = np.asarray(outputs, dtype=np.float64)
        out = out.reshape(out.shape[0], -1)
        self.check_probabilities(out)
        with np.errstate(invalid="ignore"):
            return self._log_odds(out)

    def check_probabilities(self, out: np.ndarray) -> None:
        """Outputs declared as probabilities must be ones: logits read as probabilities give p_ai of 0 or 1."""
        if self.kind not in ("probabilities", "sigmoid_probability"):
            return
        rows = out[~np.isnan(out).any(axis=1)]  # an infinite "probability" is no probability; NaN stays NaN
        outside = (rows < -PROBABILITY_TOLERANCE) | (rows > 1 + PROBABILITY_TOLERANCE)
        bad = outside.any(axis=1)
        if self.kind == "probabilities":
            bad |= np.abs(rows.sum(axis=1) - 1.0) > PROBABILITY_TOLERANCE
        if bad.any():
            logits = "logits" if self.kind == "probabilities" else "sigmoid_logit"
            raise AdapterError(
                f"outputs declared '{self.kind}' are not probabilities (a row was "
                f"{np.array2string(rows[bad][0], precision=4, separator=', ')}); "
                f"if the model returns raw scores, state \"output\": \"{logits}\" in the sidecar"
            )

    def _log_odds(self, out: np.ndarray) -> np.ndarray:
        if self.single:
            if out.shape[1] != 1:
                raise AdapterError(f"expected one output per image for a sigmoid head, got {out.shape[1]}")
            z = out[:, 0]
            if self.kind == "sigmoid_probability":
                p = np.clip(z, 1e-12, 1 - 1e-12)  # a float32 sigmoid saturates at exactly 0 or 1
                z = np.log(p) - np.log1p(-p)
            return z if self.positive == AI else -z
        if out.shape[1] != len(self.classes):
            raise AdapterError(f"model gave {out.shape[1]} outputs per image but has {len(self.classes)} labels")
        ai = np.array([c == AI for c in self.classes])
        if self.kind == "logits":
            out = saturated_logits(out, ai)
            log_p = out - np.logaddexp.reduce(out, axis=1, keepdims=True)
        else:
            log_p = np.log(np.clip(out, 1e-12, None))
        # log P(ai) - log P(human), summing classes that map to the same side.
        return np.logaddexp.reduce(log_p[:, ai], axis=1) - np.logaddexp.reduce(log_p[:, ~ai], axis=1)

    def describe(self) -> dict[str, Any]:
        if self.single:
            return {"output": self.kind, "positive": self.positive}
        return {"output": self.kind, "labels": dict(zip(self.labels, self.classes))}


def saturated_logits(out: np.ndarray, ai: np.ndarray) -> np.ndarray:
    """Logits with a +inf entry replaced by softmax's limit: the classes at +inf share all the probability (0 in
    log space) and the others get none (-inf).  Computed as it stands, inf - inf made the row NaN, and an
    overflowing head that was certain of one side was reported as giving no score.  +inf on both an ai and a human
    class has no limit, and stays NaN."""
    top = np.isposinf(out)
    rows = top.any(axis=1)
    if not rows.any():
        return out
    out = out.copy()
    out[rows] = np.where(top[rows], 0.0, -np.inf)
    both = top[:, ai].any(axis=1) & top[:, ~ai].any(axis=1)
    out[both] = np.nan
    return out


def map_labels(labels: Sequence[str], overrides: Mapping[str, str] | None, where: str) -> list[str]:
    """ai/human for each model label; overrides win; an unplaceable label is a clear error."""
    overrides = dict(overrides or {})
    unknown_overrides = set(overrides) - {str(l) for l in labels} - {str(i) for i in range(len(labels))}
    if unknown_overrides:
        raise AdapterError(
            f"{where}: label override(s) {sorted(unknown_overrides)} name no class of this model "
            f"(its labels: {list(labels)})"
        )
    names = [str(l) for l in labels]
    for key in overrides:
        # '0' may be a class's name and another class's index (labels ["1", "0"]): reading it either way flips
        # the polarity of both classes, so it is refused rather than guessed
        if key in names and key.isdigit() and int(key) < len(names) and names[int(key)] != key:
            raise AdapterError(f"{where}: label override '{key}' is ambiguous: it is the name of class "
                               f"{names.index(key)} and the index of class '{names[int(key)]}' (labels "
                               f"{list(labels)}); rename the classes in the sidecar's labels or config.json's id2label")
    classes = []
    for index, label in enumerate(labels):
        stated = {overrides[key] for key in (str(label), str(index)) if key in overrides}
        if len(stated) > 1:  # by name and by index, differently: which one the user meant is unknown
            raise AdapterError(f"{where}: label overrides give class {index} ('{label}') both ai and human")
        classes.append(stated.pop() if stated else normalise_label(label))
    missing = [l for l, c in zip(labels, classes) if c is None]
    if missing:
        # no side in the example: one pasted as it stands ('LABEL_0:ai') would be a guess at the polarity
        example = ",".join(f"{name}:ai|human" for name in missing[:3]) + (",..." if len(missing) > 3 else "")
        raise AdapterError(
            f"{where}: cannot tell which class means AI: labels {list(labels)} include {missing}, "
            "which are not known names for ai/human; state which each one is, from the publisher's code or card, "
            f"after the model name: '?labels={example}'"
        )
    if AI not in classes or HUMAN not in classes:
        raise AdapterError(
            f"{where}: labels {list(labels)} map to {classes}; a detector needs at least one ai and one human class"
        )
    return classes


def multi_class_mapping(kind: str, labels: Sequence[str], overrides: Mapping[str, str] | None,
                        where: str, positive: str | None = None) -> OutputMapping:
    if positive:  # it would be ignored, and whoever wrote it believes it sets the polarity
        raise AdapterError(f"{where}: 'positive' is for one-output models; this one has {len(labels)} outputs, so "
                           "name its classes with labels (and '?labels=NAME:ai|human,...' where a name says neither)")
    labels = [str(l) for l in labels]
    return OutputMapping(kind=kind, labels=labels, classes=map_labels(labels, overrides, where))


def single_output_mapping(kind: str, positive: str | None, labels: Sequence[str] | None, where: str,
                          overrides: Mapping[str, str] | None = None) -> OutputMapping:
    """A one-output head: the positive class is stated, or read from a single label name.

    A label override (``?labels=fake:human``, ``0:ai`` or the sidecar's ``label_map``) states the polarity as
    surely as ``positive`` does; it was ignored here, so a publisher's misnamed class kept its wrong polarity.
    """
    if overrides:
        names = [str(l) for l in labels or []][:1]
        unknown = sorted(set(overrides) - set(names) - {"0"})
        if unknown:
            call = f"{names[0]!r} or '0'" if names else "'0'"
            raise AdapterError(f"{where}: label override(s) {unknown} name no class of this model (it has one "
                               f"output; call it {call})")
        stated = set(overrides.values())
        if len(stated) > 1:
            raise AdapterError(f"{where}: label overrides {dict(overrides)} give the one output both polarities")
        target = stated.pop()
        if positive is not None and normalise_label(positive) not in (None, target):
            raise AdapterError(f"{where}: positive '{positive}' contradicts the label override "
                               f"{dict(overrides)}; state the polarity once")
        if positive is None or normalise_label(positive) == target:  # else: 'positive' says neither, refused below
            positive = target
    if positive is None and labels and len(labels) == 1:
        positive = normalise_label(labels[0])
    if positive is not None:
        stated, positive = positive, normalise_label(positive) or str(positive).lower()
        if positive not in (AI, HUMAN):
            raise AdapterError(f"{where}: positive '{stated}' says neither ai nor human; "
                               "use positive=ai or positive=human")
    if positive not in (AI, HUMAN):
        raise AdapterError(
            f"{where}: the model has one sigmoid output and its polarity is not stated; "
            "say which class it scores with '?positive=ai' (or 'positive' in the sidecar JSON)"
        )
    return OutputMapping(kind=kind, labels=list(labels or []), positive=positive)
