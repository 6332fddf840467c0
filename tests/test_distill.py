"""Distillation: combining teachers, the soft/hard target mix, and proof that the student learns the soft labels.

The tiny case: the training sources carry flipped labels and the teachers'
soft labels contradict every one of them (the teachers are right).  A
student trained with ``alpha=1`` must rank held-out images like the
teachers, one trained with ``alpha=0`` must not; the only difference between
the two runs is the weight on the soft labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from test_autopilot import make_dataset

from synthdetect.images import LoadedImage
from synthdetect.models import load_model
from synthdetect.models.base import Model, register_kind
from synthdetect.models.package import ModelPackage, write_package
from synthdetect.train.datasets import open_dataset
from synthdetect.train.distill import (
    DistillError, combine_soft_labels, distill_targets, fit_soft_member, run_distillation, train_student,
)

BRIGHTNESS_KIND = "test-brightness-teacher"


class BrightnessTeacher(Model):
    """log-odds of AI = sign * (mean brightness - 128) / 16: a transparent stand-in for a trained specialist."""

    def logits(self, images: Sequence[LoadedImage]) -> np.ndarray:
        sign = float(self.card["sign"])
        return np.array([sign * (np.asarray(im.rgb, dtype=np.float64).mean() - 128.0) / 16.0 for im in images])


@register_kind(BRIGHTNESS_KIND)
def _load_brightness(package: ModelPackage) -> Model:
    return BrightnessTeacher(package.card)


FLAKY_KIND = "test-flaky-teacher"


class FlakyTeacher(BrightnessTeacher):
    """Raises on a batch holding an image brighter than ``fails_above``, as an adapter may on a shape it cannot take."""

    def logits(self, images: Sequence[LoadedImage]) -> np.ndarray:
        if any(np.asarray(im.rgb, dtype=np.float64).mean() > float(self.card["fails_above"]) for im in images):
            raise RuntimeError("cannot take this image")
        return super().logits(images)


@register_kind(FLAKY_KIND)
def _load_flaky(package: ModelPackage) -> Model:
    return FlakyTeacher(package.card)


def write_teacher(root: Path, name: str, sign: float, sources: list[str] | None = None, kind: str = BRIGHTNESS_KIND,
                  **extra) -> Path:
    card = {"name": name, "version": "0.0.1", "kind": kind, "sign": sign, **extra,
            "calibration": {"method": "identity"}, "input": {"min_side": 8, "max_aspect": 4.0},
            "decision": {"ai_at_or_above": 0.8, "human_below": 0.2},
            "training": {"split": {"train": {"sources": sources or []}}}}
    write_package(root, card, {})
    return root


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return open_dataset(make_dataset(tmp_path_factory.mktemp("distill-data"), sources=4, per_class=8))


# -- targets -------------------------------------------------------------------------------------


def test_combine_max_and_mean_ignore_teachers_that_did_not_judge():
    matrix = np.array([[0.9, 0.1, np.nan, np.nan],
                       [0.2, 0.3, 0.6, np.nan],
                       [0.1, np.nan, 0.2, np.nan]])
    np.testing.assert_allclose(combine_soft_labels(matrix, "max"), [0.9, 0.3, 0.6, np.nan])
    np.testing.assert_allclose(combine_soft_labels(matrix, "mean"), [0.4, 0.2, 0.4, np.nan])
    with pytest.raises(DistillError):
        combine_soft_labels(matrix, "median")


def test_targets_mix_soft_and_hard_by_alpha():
    soft = np.array([0.9, 0.2, np.nan])
    hard = np.array([0, 1, 1])
    np.testing.assert_allclose(distill_targets(soft, hard, 1.0), [0.9, 0.2, 1.0])
    np.testing.assert_allclose(distill_targets(soft, hard, 0.0), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(distill_targets(soft, hard, 0.25), [0.225, 0.8, 1.0])
    with pytest.raises(DistillError):
        distill_targets(soft, hard, 1.5)


# -- the student learns the soft labels ----------------------------------------------------------


def _student_gap(records, targets, out: Path) -> float:
    """Trained student's mean raw logit on held-out AI images minus that on held-out human images."""
    from synthdetect.images import load_image
    from synthdetect.train.registry import TrainRequest
    from synthdetect.train.splits import split_records
    from synthdetect.train.trainer import TrainConfig

    split = split_records(records, "source", holdout_sources=["s3"], val_fraction=0.25, seed=0)
    assert {r.source for r in split.train} == {"s0", "s1"}
    config = TrainConfig(epochs=15, patience=15, batch_size=16, lr=1e-2, seed=0, threads=1)
    request = TrainRequest(train=split.train, val=split.val, test=split.test, out=out, name="student",
                           config=config, options={"input_size": 16, "width": 8, "max_short_side": 0})
    by_ref = {r.ref: t for r, t in zip(records, targets)}
    package, _ = train_student("small-cnn", request, np.array([by_ref[r.ref] for r in split.train]))
    model = load_model(str(package.root))
    logits = model.logits([load_image(r.ref) for r in split.test])
    labels = np.array([r.label for r in split.test])
    return float(logits[labels == 1].mean() - logits[labels == 0].mean())


@pytest.mark.slow
def test_student_follows_soft_labels_that_contradict_hard_labels(records, tmp_path):
    """Training sources s0, s1 carry flipped (wrong) labels; the teachers know better; s2 validates, s3 tests."""
    from dataclasses import replace

    noisy = [replace(r, label=1 - r.label) if r.source in ("s0", "s1") else r for r in records]
    hard = np.array([r.label for r in noisy], dtype=float)
    teachers_say = np.array([r.label for r in records], dtype=float) * 0.9 + 0.05  # confident and right
    train = np.array([r.source in ("s0", "s1") for r in noisy])
    assert np.all((teachers_say[train] > 0.5) != (hard[train] > 0.5))  # contradicting every training label
    gap_soft = _student_gap(noisy, distill_targets(teachers_say, hard, 1.0), tmp_path / "soft")
    gap_hard = _student_gap(noisy, distill_targets(teachers_say, hard, 0.0), tmp_path / "hard")
    print(f"held-out logit gap AI - human: alpha=1 {gap_soft:.3f}, alpha=0 {gap_hard:.3f}")
    assert gap_soft > 0.5, "with alpha=1 the student should learn the teachers' soft labels"
    assert gap_hard < gap_soft - 0.5, "with alpha=0 the student should learn the (flipped) hard labels"


def test_soft_linear_head_is_the_hard_head_when_targets_are_hard_and_flips_with_them():
    """Duplicated-row weighting is exact cross-entropy: hard targets reproduce train/wild.py's head."""
    from types import SimpleNamespace

    from synthdetect.train.wild import HANDCRAFTED, MemberSpec, fit_member

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    x = rng.normal(size=(60, 5)) + y[:, None] * np.array([1.5, 0, 0, 0, -1.0])
    data = SimpleNamespace(labels=y, global_feats={HANDCRAFTED: x}, crop_feats={HANDCRAFTED: [r[None] for r in x]},
                           groups=np.array(["a"] * 60))
    idx = np.arange(60)
    spec = MemberSpec(HANDCRAFTED, "global")
    hard_head = fit_member(data, idx, spec)
    soft_head = fit_soft_member(data, idx, y.astype(float), spec)
    np.testing.assert_allclose(soft_head.coef, hard_head.coef, rtol=1e-3, atol=1e-4)
    flipped = fit_soft_member(data, idx, 1.0 - y, spec)
    assert flipped.coef[0] < 0 < hard_head.coef[0]


def test_cached_soft_labels_equal_the_detector_path(records, tmp_path):
    """A linear-head teacher scored from the feature cache gives the Detector's calibrated p_ai."""
    from synthdetect.train.distill import cached_soft_labels, score
    from synthdetect.train.registry import TrainRequest
    from synthdetect.train.splits import split_records
    from synthdetect.train.wild_trainers import train_handcrafted

    records = open_dataset(make_dataset(tmp_path / "d", per_class=4, size=40))  # linear heads need >= 32 px
    split = split_records(records, "source", holdout_sources=["s3"], val_fraction=0.25, seed=0)
    cache = tmp_path / "cache"
    package = train_handcrafted(TrainRequest(train=split.train, val=split.val, test=split.test,
                                             out=tmp_path / "teacher", name="hc-teacher",
                                             options={"cache": str(cache)}))
    teacher = load_model(str(package.root))
    subset = split.test[::2]
    fast = cached_soft_labels(teacher, subset, cache)
    served = score(teacher, subset, "served").p_ai
    assert np.isfinite(served).all()
    np.testing.assert_allclose(fast, served, rtol=1e-6, atol=1e-9)
    assert cached_soft_labels(load_model(str(write_teacher(tmp_path / "b", "b", 1.0))), subset) is None


# -- the whole run -------------------------------------------------------------------------------


@pytest.mark.slow
def test_distillation_run_writes_student_report_beside_teachers(records, tmp_path):
    teachers = [write_teacher(tmp_path / f"t{i}", f"teacher-{i}", sign, sources)
                for i, (sign, sources) in enumerate([(1.0, ["s0"]), (0.5, ["s1"]), (-1.0, ["s3"])])]
    out = tmp_path / "distilled"
    result = run_distillation([str(t) for t in teachers], "small-cnn", records, out, alpha=0.5, combine="max",
                              holdout_sources=["s3"], val_fraction=0.25, input_size=16, epochs=3, threads=1,
                              options={"width": 4})
    roles = [(r["model"], r["role"]) for r in result.rows]
    assert roles == [("teacher-0", "teacher"), ("teacher-1", "teacher"), ("teacher-2", "teacher"),
                     ("teachers combined (max)", "ensemble"), ("distilled-small-cnn", "student")]
    assert all(r["n_scored"] == 16 for r in result.rows)
    # the teacher validated on the held-out source is flagged
    assert result.rows[2]["saw_held_out_sources"] == "s3" and result.rows[0]["saw_held_out_sources"] == "no"
    # soft labels on disk are the max of the teachers' calibrated p_ai, mixed 50/50 with the labels
    with open(out / "soft_labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result.summary["split"]["train"]
    for row in rows:
        votes = [float(row[f"p_ai:teacher-{i}"]) for i in range(3)]
        assert float(row["soft"]) == pytest.approx(max(votes), abs=1e-6)
        assert float(row["target"]) == pytest.approx(0.5 * max(votes) + 0.5 * int(row["label"]), abs=1e-5)
    card = json.loads((out / "student" / "model.json").read_text())
    assert card["distillation"]["alpha"] == 0.5 and len(card["distillation"]["teachers"]) == 3
    assert card["training"]["split"]["train"]["ai"] == sum(int(r["label"]) for r in rows)  # hard counts, not targets
    assert len(result.summary["student_vs_teachers"]) == 4
    assert (out / "comparison.csv").exists() and (out / "reports" / "student" / "report.html").exists()
    page = (out / "report.html").read_text()
    assert "Student vs teachers" in page and "teacher-2" in page


def test_distill_rejects_unknown_student(records, tmp_path):
    teacher = write_teacher(tmp_path / "t", "t", 1.0)
    with pytest.raises(DistillError, match="cannot learn from soft labels"):
        run_distillation([str(teacher)], "router", records, tmp_path / "o")


def test_cli_distill_rejects_unknown_combination(records, tmp_path):
    from typer.testing import CliRunner

    from synthdetect.cli import app

    manifest = Path(records[0].ref).parents[2] / "manifest.csv"
    teacher = write_teacher(tmp_path / "t", "t", 1.0)
    result = CliRunner().invoke(app, ["distill", str(manifest), "--teacher", str(teacher), "--combine", "median",
                                      "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown combination 'median'" in result.output


def test_saw_held_out_is_unknown_when_the_teacher_card_records_no_sources(tmp_path):
    from types import SimpleNamespace

    from synthdetect.train.distill import UNKNOWN_SOURCES, Teacher, _metrics_row

    silent = Teacher("t", "t", SimpleNamespace(card={"training": {"split": {"train": {"n": 10, "ai": 5, "human": 5}}}}))
    told = Teacher("u", "u", SimpleNamespace(card={"training": {"split": {"train": {"sources": ["s1"]}}}}))
    assert silent.saw_held_out(["s1"]) is None and told.saw_held_out(["s1", "s2"]) == ["s1"]
    predictions = SimpleNamespace(records=[], seconds=0.0)
    row = _metrics_row("t", "teacher", predictions, {"n_scored": 0}, None, silent.saw_held_out(["s1"]))
    assert row["saw_held_out_sources"] == UNKNOWN_SOURCES == "unknown (card records no sources)"


def test_a_router_teacher_is_as_large_as_the_models_it_routes_to(tmp_path):
    """A router's own card lists no weights: the comparison showed it as 0.000 MB beside the student."""
    from synthdetect.train.distill import load_teachers

    member = tmp_path / "member"
    weights = member / "weights.bin"
    member.mkdir()
    weights.write_bytes(b"\0" * 50_000)
    card = {"name": "member", "version": "0.0.1", "kind": BRIGHTNESS_KIND, "sign": 1.0,
            "calibration": {"method": "identity"}, "input": {"min_side": 8, "max_aspect": 4.0},
            "decision": {"ai_at_or_above": 0.8, "human_below": 0.2}}
    write_package(member, card, {"weights": weights})
    router = tmp_path / "router"
    write_package(router, {"name": "router", "version": "0.0.1", "kind": "router",
                           "routes": [{"model": str(member)}]}, {})
    by_label = {t.label: t for t in load_teachers([str(member), str(router)])}
    assert by_label["member"].size_bytes == 50_000
    assert by_label["router"].size_bytes == 50_000


def test_a_teacher_that_raises_on_some_images_loses_its_vote_there_not_the_run(records, tmp_path):
    """One image a teacher could not take ended the distillation with a traceback after all the scoring before."""
    from synthdetect.train.distill import score

    brightness = np.array([np.asarray(load_model_input(r), dtype=np.float64).mean() for r in records])
    cut = float(np.median(brightness[brightness > 128]))  # about half the (bright) AI images fail
    flaky = load_model(str(write_teacher(tmp_path / "flaky", "flaky", 1.0, kind=FLAKY_KIND, fails_above=cut)))
    predictions = score(flaky, records, "flaky")
    failing = brightness > cut
    assert failing.any() and (~failing).any()
    assert np.isnan(predictions.p_ai[failing]).all() and np.isfinite(predictions.p_ai[~failing]).all()
    assert all(predictions.errors[i].endswith(": model failed (RuntimeError: cannot take this image)")
               for i in np.flatnonzero(failing))
    assert [k == "model_error" for k in predictions.error_kinds] == failing.tolist()
    broken = load_model(str(write_teacher(tmp_path / "broken", "broken", 1.0, kind=FLAKY_KIND, fails_above=-1)))
    with pytest.raises(DistillError, match="broken fails on every image"):
        score(broken, records[:3], "broken")


def load_model_input(record):
    from synthdetect.images import load_image

    return load_image(record.ref).rgb


def test_teacher_report_folders_are_never_shared():
    from synthdetect.train.distill import _report_dirs

    dirs = _report_dirs(["a/b", "a_b", "student", "x#2", "x_2", "ok"])
    assert dirs == {"a/b": "a_b", "a_b": "a_b-2", "student": "student-2", "x#2": "x_2", "x_2": "x_2-2", "ok": "ok"}


def test_a_refused_distillation_leaves_no_output_folder(tmp_path):
    from typer.testing import CliRunner

    from synth_data import write_manifest
    from synthdetect.cli import app

    manifest = write_manifest(tmp_path / "d", {"s0": (4, 4), "s1": (4, 4)}, size=16)  # two sources: the split refuses
    teacher = write_teacher(tmp_path / "t", "t", 1.0)
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["distill", str(manifest), "--teacher", str(teacher), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()  # an empty OUT was left behind
