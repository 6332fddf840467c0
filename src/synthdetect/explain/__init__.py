"""Why did the detector say that?  Grad-CAM, occlusion and ELA for one image, through ``Detector``.

>>> from synthdetect import Detector
>>> from synthdetect.explain import explain
>>> ex = explain(Detector.load("default"), "photo.png")   # doctest: +SKIP
>>> ex.occlusion.shape, ex.verdict.label                   # doctest: +SKIP
((32, 32), 'ai')
>>> ex.save("why.png"); ex.save_maps("why")                # doctest: +SKIP

The verdict comes from the same ``Detector`` call every surface uses, and the
maps explain the model the detector routed the image to.  When no model
judges an image (the ``default`` router answers ``uncertain`` for sizes it has
no model for) only ELA is drawn and ``notes`` says why.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from synthdetect.atomic import write_atomically
from synthdetect.explain import render
from synthdetect.images import ImageSource, LoadedImage, describe_source, load_image
from synthdetect.messages import first_line
from synthdetect.verdict import Verdict

METHODS = ("gradcam", "occlusion", "ela")
_log = logging.getLogger(__name__)
#: Larger images are explained on a downscaled copy: occlusion costs one model call per window.
DEFAULT_MAX_SIDE = 512
#: Below this largest change of p_ai the occlusion map is called flat: no single region's detail moves the answer.
OCCLUSION_FLAT_SHIFT = 0.01


@dataclass(frozen=True)
class MapFailure:
    """A map whose code raised.  ``note`` is the one line the explanation shows; ``error`` and ``traceback`` are the
    whole story for a log.  The service shows its clients neither, as their text can name the server's files
    ("Load model from /srv/models/pkg/model.onnx failed")."""

    method: str
    note: str
    error_type: str
    error: str
    traceback: str


@dataclass
class Explanation:
    """A verdict plus the maps behind it, as arrays (``gradcam``, ``occlusion``, ``ela``) and pictures."""

    verdict: Verdict
    image: np.ndarray
    model: str | None = None
    target: str = "ai"
    gradcam: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    ela: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    #: The largest change of the model's p_ai that blurring any one occlusion window caused (None: no map).
    #: The map's colours are relative to its own extreme; this says whether that extreme matters at all.
    occlusion_shift: float | None = None
    #: The maps whose code raised (their notes are among ``notes``), for whoever logs the details.
    failures: list[MapFailure] = field(default_factory=list)

    def maps(self) -> dict[str, np.ndarray]:
        """The maps that could be made, in display order."""
        return {name: getattr(self, name) for name in METHODS if getattr(self, name) is not None}

    def overlay(self, name: str) -> Image.Image:
        values = self.maps().get(name)
        if values is None:
            prefixes = (name, "no model map") if name in ("gradcam", "occlusion") else (name,)
            reason = next((n for n in self.notes if n.startswith(prefixes)), f"no {name} map was made")
            from synthdetect.explain.maps import ExplainUnavailable

            raise ExplainUnavailable(reason)
        strength = render.occlusion_strength(self.occlusion_shift) if name == "occlusion" else 1.0
        return render.overlay(self.image, name, values, strength=strength)

    def figure(self) -> Image.Image:
        return render.figure(self)

    def save(self, path: str | Path) -> Path:
        """The composite figure (original, overlays, verdict), in the format the suffix names (.png, .jpg, .webp...)."""
        path = Path(path)
        write_picture(self.figure(), path, image_format_for(path))
        return path

    def save_maps(self, stem: str | Path) -> dict[str, Path]:
        """One PNG per overlay beside ``stem``: ``STEM.gradcam.png`` and so on."""
        written = {}
        for name, path in map_paths(stem, self.maps()).items():
            write_picture(self.overlay(name), path, "PNG")
            written[name] = path
        return written

    def to_dict(self) -> dict:
        shift = None if self.occlusion_shift is None else round(self.occlusion_shift, 6)
        return {"verdict": self.verdict.to_dict(), "model": self.model, "target": self.target,
                "maps": sorted(self.maps()), "occlusion_p_ai_shift": shift, "notes": self.notes}


def map_paths(stem: str | Path, names: Sequence[str]) -> dict[str, Path]:
    """Where ``save_maps`` writes each named map: ``STEM.<name>.png``."""
    stem = Path(stem)
    return {name: stem.with_name(f"{stem.name}.{name}.png") for name in names}


def write_picture(picture: Image.Image, path: Path, fmt: str) -> None:
    """Save whole or not at all (``synthdetect.atomic``): an encoder error, a full disk or Ctrl-C leaves the
    earlier file (or none), never a truncated picture."""
    write_atomically(path, lambda stream: picture.save(stream, format=fmt), binary=True)


def image_format_for(path: Path) -> str:
    """The Pillow format a file name asks for; a ValueError naming the suffix when Pillow cannot write it."""
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE or not _writes_colour(fmt):
        raise ValueError(f"{path}: cannot write a '{path.suffix or '(no suffix)'}' image; use .png, .jpg or .webp")
    return fmt


def _writes_colour(fmt: str) -> bool:
    """Whether Pillow's ``fmt`` writer takes an RGB picture (XBM, MSP and Palm take 1-bit or palette images only)."""
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except (OSError, ValueError, KeyError):
        return False
    return True


def check_output_path(path: Path) -> None:
    """Refuse an output the figure could not be written to, before any map is computed."""
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name such as {path / 'why.png'}")
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise ValueError(f"{path}: folder {path.parent} {what}")
    image_format_for(path)
    try:
        check_writable(path.parent)
    except OSError as exc:
        raise ValueError(f"{path}: cannot write in the folder {path.parent} ({exc.strerror or exc})") from None


def check_writable(folder: Path) -> None:
    """An OSError if no file can be created in ``folder`` (read-only, no permission), so a command can refuse it
    before any map is computed.

    Tried, not judged from permission bits, which root and read-only mounts ignore: a batch into /sys/kernel
    computed every map and then failed every picture with "Permission denied".
    """
    with tempfile.TemporaryFile(dir=folder):
        pass


def _working_copy(image: LoadedImage, max_side: int, min_side: int = 1) -> tuple[LoadedImage, str | None]:
    """``image`` scaled to ``max_side`` on its long side, but never below ``min_side`` on its short side.

    The floor is the smallest side the explained model judges: an 8x2000 strip became a 2x512 copy, so a model
    that refuses anything under 8 px had its maps made on an image it would never have scored.
    """
    width, height = image.size
    scale = max(max_side / max(width, height), min(1.0, min_side / max(1, min(width, height))))
    if scale >= 1:
        return image, None
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image.rgb.resize(size, Image.Resampling.LANCZOS)
    note = f"maps computed on a {size[0]}x{size[1]} copy of the {width}x{height} image"
    return replace(image, rgb=small, raw=None, notes=[]), note


def affordable_grid(size: tuple[int, int], grid: int, model_ms: float | None, budget_s: float | None) -> int | None:
    """The finest occlusion grid (at most ``grid``) whose model calls fit in ``budget_s``; None if none does.

    The cost of one call is the model time measured for the verdict, so a
    32 px CNN gets the full grid and a slow full-size model a coarser one.
    """
    from synthdetect.explain.maps import occlusion_calls  # torch only when explaining

    if budget_s is None or not model_ms:
        return grid
    def fits(candidate: int) -> bool:
        return occlusion_calls(size[1], size[0], candidate) * model_ms / 1000 <= budget_s

    if fits(grid):
        return grid
    # A grid finer than the long side has the same 2-pixel windows: trying each of `--grid 1000000000`'s values
    # one by one took minutes before the map began.
    return next((candidate for candidate in range(min(grid - 1, max(size)), 1, -1) if fits(candidate)), None)


def warm_call_ms(model: "Model", image: LoadedImage, spend_s: float | None = None,  # noqa: F821
                 batch: int = 1) -> float:
    """Milliseconds per image that ``model.logits`` takes on ``batch`` copies of ``image`` in one call, now that
    the model is loaded.

    The occlusion map sends its copies ``batch`` at a time, so this is what each window costs: timed one at a
    time, a CNN whose call costs more than its images (140 ms a call, 8 ms an image in a batch of 16, on a busy
    machine) had its --grid 64 map cut to 10x10 "to fit 60 s", though the whole grid took 2 s.  The fastest of
    up to three calls (stopping once ``spend_s`` is spent): on a busy machine one call of a 32 px CNN measured
    anywhere from 13 to 410 ms.
    """
    copies = [replace(image, raw=None, notes=[])] * max(1, batch)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < 3 and (not times or spend_s is None or time.perf_counter() - started < spend_s):
        begin = time.perf_counter()
        model.logits(copies)
        times.append((time.perf_counter() - begin) * 1000 / len(copies))
    return min(times)


def p_ai_shift(model: "Model", scores: Sequence[float]) -> float:  # noqa: F821
    """The largest change of calibrated p_ai among occlusion ``scores`` (raw logits, the unoccluded image first)."""
    if len(scores) < 2:
        return 0.0
    p = np.asarray(model.calibration(np.asarray(scores, dtype=np.float64)), dtype=np.float64)
    shifts = np.abs(p[1:] - p[0])
    return float(np.nanmax(shifts)) if np.isfinite(shifts).any() else 0.0


def _own_p_ai(verdict: Verdict, model: "Model | None") -> float | None:  # noqa: F821
    """The explained model's own calibrated p_ai as the verdict records it, or None."""
    if model is None:
        return None
    return next((float(entry["p_ai"]) for entry in verdict.models or ()
                 if entry.get("model") == model.name and entry.get("p_ai") is not None), None)


def gradcam_direction(verdict: Verdict, model: "Model | None" = None) -> tuple[bool, str | None]:  # noqa: F821
    """Whether Grad-CAM explains the AI logit, from the verdict's label (not p_ai >= 0.5), and a note if unclear.

    Thresholds are the model's own: ``cifake-cnn`` 1.1.0 said ``human`` below 0.897,
    so a human verdict at p_ai 0.89 must be explained toward human.

    When provenance decided the verdict (its p_ai is then 1 or 0, not the model's), the map explains the model's
    own answer: a model that said human (p_ai 0.003) had its faint AI evidence scaled to full brightness under
    an "AI" headline, as if it had found AI regions.
    """
    own = _own_p_ai(verdict, model)
    if verdict.ok and own is not None and verdict.p_ai is not None and abs(verdict.p_ai - own) > 1e-6:
        from synthdetect.fusion import thresholds

        ai_at, human_below = thresholds(model)  # the verdict's own rule (a one-threshold card included)
        alone = "ai" if own >= ai_at else "human" if own < human_below else "uncertain"
        toward_ai = alone == "ai" or (alone == "uncertain" and own >= 0.5)
        if alone == verdict.label:  # provenance and the model agree: nothing to say
            return toward_ai, None
        side = "AI" if toward_ai else "human"
        return toward_ai, (f"the verdict {verdict.label} is not {model.name}'s: alone it says {alone} "
                           f"(p_ai {own:.3f}), so Grad-CAM shows regions pushing it toward {side}")
    if verdict.ok and verdict.label in ("ai", "human"):
        return verdict.label == "ai", None
    if verdict.p_ai is None:
        return True, f"verdict {verdict.label or 'error'}: Grad-CAM shows regions pushing toward AI"
    toward_ai = verdict.p_ai >= 0.5
    return toward_ai, (f"verdict {verdict.label}: Grad-CAM shows regions pushing toward "
                       f"{'AI' if toward_ai else 'human'} (p_ai {verdict.p_ai:.3f} "
                       f"{'>=' if toward_ai else '<'} 0.5)")


def explain_loaded(
    detector: "Detector",  # noqa: F821 - imported lazily to keep this module import-light
    image: LoadedImage,
    *,
    methods: Sequence[str] = METHODS,
    grid: int = 8,
    max_side: int = DEFAULT_MAX_SIDE,
    occlusion_budget_s: float | None = 60.0,
    verdict: Verdict | None = None,
    progress: bool = False,
) -> Explanation:
    """Explain an image already decoded with ``load_image`` (the server decodes once and calls this).

    Occlusion costs one model call per window; ``occlusion_budget_s`` caps
    the estimated time (None: no cap) by coarsening the grid, or skips the map
    with a note saying how long it would take.  ``progress``: a bar on stderr while the occlusion map is made.
    """
    from synthdetect.explain.maps import (  # torch only when explaining
        ExplainUnavailable, ela_map, gradcam_map, occlusion_batch, occlusion_calls, occlusion_map)

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown explanation method(s): {', '.join(sorted(unknown))} (known: {', '.join(METHODS)})")
    verdict = verdict or detector.judge_loaded([(image.source, image)])[0]
    model, reason = detector.model_for(image)
    min_side = int((model.card.get("input") or {}).get("min_side", 8)) if model is not None else 1
    work, note = _working_copy(image, max_side, min_side)
    toward_ai, direction_note = gradcam_direction(verdict, model)
    # What loading did to the picture (an animation's first frame, alpha flattened onto a background) is what
    # every map shows: say so beside the maps, not only in the verdict's JSON.
    result = Explanation(verdict=verdict, image=np.asarray(work.rgb), model=model.name if model else None,
                         target="ai" if toward_ai else "human", notes=[*image.notes, *([note] if note else [])])
    if model is None:
        result.notes.append(f"no model map: {reason or 'no model judges this image'}")
    elif not verdict.ok:
        # The model failed on the image: there is no answer to explain, and a Grad-CAM "toward AI" under an
        # error headline would show evidence for a verdict never given (the service answers such images as detect).
        result.notes.append(f"no model map: no verdict to explain ({verdict.error})")
        model = None
    for name in methods:
        try:
            if name == "ela":
                ela = ela_map(image)
                result.ela = ela if work is image else np.asarray(Image.fromarray(ela).resize(work.size))
            elif model is not None and name == "gradcam":
                pixels = np.asarray(work.rgb)
                if (pixels == pixels[:1, :1]).all():
                    # Scaled to its own peak, the map of a flat picture (a card may accept them) painted the model's
                    # zero-padded edges at full strength as "regions pushing toward" the verdict.
                    raise ExplainUnavailable("the image is one colour: no region differs from another, and "
                                             "Grad-CAM would show only the model's own edge effects")
                result.gradcam = gradcam_map(model, work, toward_ai=toward_ai)
                if direction_note:
                    result.notes.append(direction_note)
                if not result.gradcam.any():
                    result.notes.append(f"Grad-CAM is flat: no region moved the logit toward {result.target}")
            elif model is not None and name == "occlusion":
                model_ms = verdict.timing_ms.get("model")
                chosen = affordable_grid(work.size, grid, model_ms, occlusion_budget_s)
                if chosen != grid:
                    # The verdict's model time may include loading the model (its first call) and preparing
                    # the full-size image: before coarsening the map, time warm calls on the copy it is made of.
                    batch = min(occlusion_batch(model), occlusion_calls(work.size[1], work.size[0], grid))
                    model_ms = warm_call_ms(model, work, occlusion_budget_s / 20, batch=batch)
                    chosen = affordable_grid(work.size, grid, model_ms, occlusion_budget_s)
                if chosen is None:
                    calls = occlusion_calls(work.size[1], work.size[0], 2)
                    raise ExplainUnavailable(
                        f"skipped: even a 2x2 grid needs {calls} images scored by {model.name} at about "
                        f"{model_ms / 1000:.1f} s each, over the {occlusion_budget_s:g} s budget")
                if chosen != grid:
                    result.notes.append(f"occlusion on a {chosen}x{chosen} grid to fit {occlusion_budget_s:g} s "
                                        f"({model.name} takes about {model_ms / 1000:.2f} s per image)")
                scores: list[float] = []
                result.occlusion = occlusion_map(model, work, grid=chosen, progress=progress, scores=scores)
                unusable = int(np.count_nonzero(~np.isfinite(np.asarray(scores, dtype=np.float64))))
                if scores and not np.isfinite(scores[0]):
                    result.occlusion = None
                    raise ExplainUnavailable(f"{model.name} gave no usable score for the image itself")
                result.occlusion_shift = p_ai_shift(model, scores)
                if unusable:  # captum's difference is NaN there, shown as "no effect": say so instead of "flat"
                    result.notes.append(f"occlusion: {unusable} of {len(scores) - 1} blurred copies got no usable "
                                        f"score from {model.name}; their windows show as no effect")
                elif result.occlusion_shift < OCCLUSION_FLAT_SHIFT:
                    result.notes.append(f"occlusion is flat: blurring any one region moved {model.name}'s p_ai by "
                                        f"{render.shift_text(result.occlusion_shift)}")
        except ExplainUnavailable as exc:
            result.notes.append(f"{name} unavailable: {exc}")
        except Exception as exc:  # noqa: BLE001 - a model that fails on the perturbed batches costs that map only
            # The note says what failed; the traceback is for -v (a warning put it on every user's screen,
            # and in the service's log as many lines without the request id: the service logs the failure itself).
            _log.debug("%s: %s map failed", image.source, name, exc_info=True)
            said = "unavailable" if isinstance(exc, ImportError) else f"failed: {type(exc).__name__}"
            note = f"{name} {said}: {first_line(exc, 300)}"[:300]
            result.notes.append(note)
            result.failures.append(MapFailure(name, note, type(exc).__name__, str(exc), traceback.format_exc()))
    return result


def explain(
    detector: "Detector",  # noqa: F821
    source: ImageSource,
    *,
    name: str | None = None,
    methods: Sequence[str] = METHODS,
    grid: int = 8,
    max_side: int = DEFAULT_MAX_SIDE,
    occlusion_budget_s: float | None = 60.0,
    progress: bool = False,
) -> Explanation:
    """Judge ``source`` with ``detector`` and explain the answer; raises ``ImageLoadError`` for bad input."""
    image = load_image(source, detector.limits, name=name or describe_source(source))
    return explain_loaded(detector, image, methods=methods, grid=grid, max_side=max_side,
                          occlusion_budget_s=occlusion_budget_s, progress=progress)


def __getattr__(name: str):
    # ExplainUnavailable lives with the torch-based maps; importing it lazily keeps `synthdetect --help` light.
    if name == "ExplainUnavailable":
        from synthdetect.explain.maps import ExplainUnavailable

        return ExplainUnavailable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Explanation", "MapFailure", "ExplainUnavailable", "explain", "explain_loaded", "check_output_path",
           "check_writable", "METHODS"]
