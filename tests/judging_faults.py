"""Faults injected into the judging loop of ``evaluate`` and ``compare``, and the two commands as the tests call them.

One place for what three audit files had each written: Ctrl-C, SIGTERM or a routed model that cannot load, raised
by ``Detector.detect`` from a given batch on (counted over the whole run, every model and perturbation).
"""

from __future__ import annotations

from typer.testing import CliRunner

from synthdetect.cli import app


def fail_detect_from_batch(monkeypatch, batch: int, error: BaseException) -> None:
    """``Detector.detect`` raises ``error`` at its ``batch``-th call and after (the run stops at the first)."""
    from synthdetect.api import Detector

    real, calls = Detector.detect, [0]

    def detect(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= batch:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", detect)


def run_evaluate(manifest, model, out, *extra):
    """``synthdetect evaluate`` in batches of 2, without the evidence probes."""
    return CliRunner().invoke(app, ["evaluate", str(model), str(manifest), "-o", str(out), "--batch-size", "2",
                                    "--no-evidence", *extra])


def run_compare(manifest, models, out, *extra):
    """``synthdetect compare`` of ``models`` in batches of 2."""
    args = ["compare", str(manifest), "-o", str(out), "--batch-size", "2", *extra]
    for model in models:
        args += ["--model", model]
    return CliRunner().invoke(app, args)
