"""Turn explanation maps into pictures: overlays on the image and one composite figure.

Matplotlib's object API (``Figure`` + Agg canvas) is used instead of pyplot so
figures can be drawn from the server's worker threads without global state.
"""

from __future__ import annotations

import functools
import io
import textwrap
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    from synthdetect.explain import Explanation

#: Small images (CIFAKE is 32 px) are enlarged for viewing; maps stay at image resolution.
MIN_DISPLAY_SIDE = 256
#: ...but never past this long side: a 512x1 strip enlarged by its short side alone would be 131072x256.
MAX_DISPLAY_SIDE = 2048
#: A change of p_ai this large (from blurring one region) is drawn at full strength; smaller ones fade in
#: proportion.  The colours are scaled to the map's own extreme, so without this a map whose largest effect moved
#: p_ai by 0.0003 was painted as boldly as one that moved it by 0.3 (on a human verdict, a bright red "raises p_ai"
#: patch over an artist's work that changed nothing).
OCCLUSION_FULL_SHIFT = 0.05
LABEL_COLOURS = {"ai": "#b3261e", "human": "#1b6e2e", "uncertain": "#8a5a00", None: "#555555"}
TITLES = {
    "gradcam": "Grad-CAM: regions pushing toward {target}",
    "occlusion": "Occlusion: red raises p_ai, blue lowers it",
    "ela": "Error-level analysis (JPEG q=90)",
}


def occlusion_strength(shift: float | None) -> float:
    """How strongly to draw an occlusion map whose largest p_ai change is ``shift`` (1.0 when unknown)."""
    if shift is None or not np.isfinite(shift):
        return 1.0
    return float(np.clip(shift / OCCLUSION_FULL_SHIFT, 0.0, 1.0))


def shift_text(shift: float) -> str:
    """A p_ai change in words: 'at most 0.034', 'less than 0.001' (three decimals as p_ai is printed elsewhere)."""
    return "less than 0.001" if shift < 0.001 else f"at most {shift:.3f}"


def display_scale(size: tuple[int, int]) -> int:
    """Whole-pixel enlargement: the short side up to MIN_DISPLAY_SIDE, the long side within MAX_DISPLAY_SIDE."""
    wanted = -(-MIN_DISPLAY_SIDE // max(1, min(size)))
    allowed = MAX_DISPLAY_SIDE // max(1, max(size))
    return max(1, min(wanted, allowed))


def colourise(name: str, values: np.ndarray) -> np.ndarray:
    """A map as HxWx3 uint8 colours: Grad-CAM on ``inferno``, signed occlusion on a centred ``RdBu_r``."""
    from matplotlib import colormaps

    if name == "ela":
        return values
    if name == "occlusion":
        limit = float(np.abs(values).max()) or 1.0
        rgba = colormaps["RdBu_r"]((values / limit + 1.0) / 2.0)
    else:
        rgba = colormaps["inferno"](np.clip(values, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, name: str, values: np.ndarray, alpha: float = 0.55,
            strength: float = 1.0) -> Image.Image:
    """The map blended over the image (ELA is shown as is), enlarged for small images.

    ``strength`` (0-1) scales the blend: an occlusion map whose effects are negligible fades toward the image.
    """
    height, width = image.shape[:2]
    scale = display_scale((width, height))
    size = (width * scale, height * scale)
    base = Image.fromarray(image).resize(size, Image.Resampling.NEAREST)
    if name == "ela":  # per-pixel error levels: enlarge without smoothing them away
        return Image.fromarray(values).resize(size, Image.Resampling.NEAREST)
    colours = Image.fromarray(colourise(name, values)).resize(size, Image.Resampling.BILINEAR)
    if name == "occlusion":
        # Let the image show through where the map is near zero, so "no effect" looks unmarked.
        weight = np.abs(values) / (float(np.abs(values).max()) or 1.0)
    else:
        weight = np.clip(values, 0.0, 1.0)
    weight = np.clip(weight, 0, 1) * alpha * float(np.clip(strength, 0.0, 1.0))
    mask = Image.fromarray((weight * 255).astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR
    )
    return Image.composite(colours, base, mask)


def original_title(explanation: "Explanation") -> str:
    """The first panel's title: the image's own size, and the size shown when the maps used a smaller copy."""
    shown = f"{explanation.image.shape[1]}x{explanation.image.shape[0]}"
    image = explanation.verdict.image or {}
    size = f"{image.get('width')}x{image.get('height')}"
    return f"original {size} (shown {shown})" if image.get("width") and size != shown else f"original {shown}"


@functools.cache
def _drawable_codepoints() -> frozenset[int]:
    """What the figure's fonts can draw: matplotlib falls back along ``font.sans-serif``, and its default, DejaVu
    Sans, has no CJK and no emoji."""
    from matplotlib import font_manager, ft2font, rcParams

    paths = set()
    for family in rcParams["font.sans-serif"]:
        try:
            paths.add(font_manager.findfont(font_manager.FontProperties(family=[family]), fallback_to_default=False))
        except ValueError:  # that family is not installed
            continue
    paths = paths or {font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))}
    return frozenset(code for path in paths for code in ft2font.FT2Font(path).get_charmap())


def drawable(text: str) -> str:
    """``text`` with each character the font lacks written as ``\\uXXXX``: a file name or note in Chinese showed as
    empty boxes (and a matplotlib warning per glyph); the escape can still be read back."""
    codepoints = _drawable_codepoints()
    return "".join(c if ord(c) in codepoints or c in "\n\t" else
                   (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}") for c in text)


#: The figure's layout in inches: the verdict title, the row of panels, and the caption under them (at least).
TITLE_AREA_IN, PANELS_IN, TEXT_AREA_IN = 0.784, 3.136, 0.98
#: One caption line at 8.5 pt, and the most lines drawn (notes are one line each, cut at 300 characters).
CAPTION_LINE_IN, MAX_CAPTION_LINES = 0.155, 24


def caption(explanation: "Explanation", width: int = 70) -> list[str]:
    """The figure's text, wrapped to ``width``: every reason, then every note not already said by a reason."""
    verdict = explanation.verdict
    lines = list(verdict.reasons) if verdict.ok else [verdict.error or ""]
    lines += [n for n in explanation.notes if n not in lines and n.partition(": ")[2] not in lines]
    wrapped = [part for line in lines for part in textwrap.wrap(line, width, break_on_hyphens=False)]
    if len(wrapped) > MAX_CAPTION_LINES:
        hidden = len(wrapped) - MAX_CAPTION_LINES + 1
        wrapped = wrapped[: MAX_CAPTION_LINES - 1] + [f"... {hidden} more lines not shown"]
    return wrapped


def figure(explanation: "Explanation", dpi: int = 100) -> Image.Image:
    """One picture: the original, each available overlay, and the verdict with its reasons and notes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = explanation.maps()
    panels = [("original", None)] + [(name, values) for name, values in maps.items()]
    wrapped = caption(explanation, width=max(70, 40 * len(panels)))
    # The text area grows with the caption (0.98 in held five lines): a figure dropped every note past the
    # second, so a coarsened or flat occlusion map, or a failed Grad-CAM, went unsaid in the picture.
    text_in = max(TEXT_AREA_IN, 0.25 + CAPTION_LINE_IN * len(wrapped))
    height = TITLE_AREA_IN + PANELS_IN + text_in
    fig = Figure(figsize=(3.6 * len(panels), height), dpi=dpi)
    FigureCanvasAgg(fig)
    verdict = explanation.verdict
    label = verdict.label if verdict.ok else None
    head = f"{label.upper()}  p_ai {verdict.p_ai:.3f}" if verdict.p_ai is not None else (label or "error").upper()
    model = f"  (model: {explanation.model})" if explanation.model else ""
    fig.suptitle(drawable(f"{head}{model}"), color=LABEL_COLOURS.get(label, "#555555"), fontsize=15, fontweight="bold",
                 y=1 - 0.1 / height, va="top")
    fig.text(0.5, 0.098 / height, drawable("\n".join(wrapped)), ha="center", va="bottom", fontsize=8.5)
    for index, (name, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        ax.set_axis_off()
        if values is None:
            ax.imshow(explanation.image, interpolation="nearest")
            ax.set_title(original_title(explanation), fontsize=10)
        else:
            ax.imshow(np.asarray(explanation.overlay(name)), interpolation="nearest")
            target = "AI" if explanation.target == "ai" else explanation.target
            title = TITLES[name].format(target=target)
            if name == "occlusion" and explanation.occlusion_shift is not None:
                title += f"\nblurring one region moves p_ai by {shift_text(explanation.occlusion_shift)}"
            ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - TITLE_AREA_IN / height, bottom=text_in / height, wspace=0.04)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
