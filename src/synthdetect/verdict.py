"""The Verdict: the one result object every surface returns (schema ``synthdetect.verdict/1``).

Like an ultralytics ``Results``, it renders itself (``to_dict``, ``to_json``,
``pipeline()``) so that the CLI, the REST service and the scan database never
format verdicts their own way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

SCHEMA = "synthdetect.verdict/1"
Label = Literal["ai", "human", "uncertain"]

#: Evidence strengths, weakest first.  Only ``decisive`` evidence overrides a model.
STRENGTHS = ("info", "weak", "moderate", "strong", "decisive")
#: Which way a piece of evidence points.
SIGNALS = ("ai", "human", "edited", "none", "unverified", "tampered")


@dataclass
class Evidence:
    """One finding of one probe.

    ``signal`` says which way it points (``ai``, ``human``, ``edited``...),
    ``strength`` how much it proves; absence of a signal is never ``ai``.
    """

    kind: str
    signal: str
    strength: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.strength not in STRENGTHS:
            raise ValueError(f"unknown evidence strength '{self.strength}' (one of {STRENGTHS})")
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown evidence signal '{self.signal}' (one of {SIGNALS})")

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "signal": self.signal, "strength": self.strength, "detail": self.detail}
        if self.data:
            out["data"] = json_safe(self.data)
        return out


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: NaN and infinities become null (``json.dumps`` would write the invalid ``NaN``),
    NumPy scalars and arrays plain numbers and lists (``json.dumps`` refuses them), tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # a NumPy scalar or array, without importing NumPy
        return json_safe(value.tolist())
    return value


@dataclass
class Verdict:
    file: str
    label: Label | None
    p_ai: float | None
    sha256: str | None = None
    evidence: list[Evidence] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    error_kind: str | None = None
    image: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def scores(self) -> list[dict[str, Any]]:
        """Pipeline-style ``[{"label", "score"}]``, highest first; empty for an error."""
        if self.p_ai is None or not math.isfinite(self.p_ai):
            return []
        # ordered by p_ai itself, not the rounded scores: at p_ai 0.4999996 both round to 0.5 and "ai" came first
        ai, human = {"label": "ai", "score": round(self.p_ai, 6)}, {"label": "human", "score": round(1 - self.p_ai, 6)}
        return [ai, human] if self.p_ai >= 0.5 else [human, ai]

    def pipeline(self) -> list[dict[str, Any]]:
        return self.scores

    def to_dict(self) -> dict[str, Any]:
        """The schema's JSON object: strict JSON (no NaN or Infinity, no NumPy types) whatever a model or probe gave."""
        return json_safe({
            "schema": SCHEMA,
            "file": self.file,
            "sha256": self.sha256,
            "label": self.label,
            "p_ai": None if self.p_ai is None else round(self.p_ai, 6),
            "scores": self.scores,
            "reasons": self.reasons,
            "evidence": [e.to_dict() for e in self.evidence],
            "models": self.models,
            "image": self.image,
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
            "error": self.error,
            "error_kind": self.error_kind,
        })

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"allow_nan": False, **kwargs})

    def __repr__(self) -> str:
        if self.error:
            return f"Verdict({self.file!r}, error={self.error!r})"
        p_ai = "None" if self.p_ai is None else f"{self.p_ai:.3f}"
        return f"Verdict({self.file!r}, label={self.label!r}, p_ai={p_ai})"

    @classmethod
    def failed(cls, file: str, error: str, kind: str, timing_ms: dict[str, float] | None = None) -> "Verdict":
        return cls(file=file, label=None, p_ai=None, error=error, error_kind=kind, timing_ms=timing_ms or {})
