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
LABEL_COLOURS = {"ai": "#b3261e", "human": "#1b6e2e", "uncertain": "#8a5a00", None: "#555555"}
TITLES = {
    "gradcam": "Grad-CAM: regions pushing toward {target}",
    "occlusion": "Occlusion: red raises p_ai, blue lowers it",
    "ela": "Error-level analysis (JPEG q=90)",
}


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


def overlay(image: np.ndarray, name: str, values: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """The map blended over the image (ELA is shown as is), enlarged for small images."""
    height, width = image.shape[:2]
    scale = display_scale((width, height))
    size = (width * scale, height * scale)
    base = Image.fromarray(image).resize(size, Image.Resampling.NEAREST)
    if name == "ela":  # per-pixel error levels: enlarge without smoothing them away
        return Image.fromarray(values).resize(size, Image.Resampling.NEAREST)
    colours = Image.fromarray(colourise(name, values)).resize(size, Image.Resampling.BILINEAR)
    if name == "occlusion":
        # Let the image show through where the map is near zero, so "no effect" looks unmarked.
        strength = np.abs(values) / (float(np.abs(values).max()) or 1.0)
    else:
        strength = np.clip(values, 0.0, 1.0)
    mask = Image.fromarray((np.clip(strength, 0, 1) * alpha * 255).astype(np.uint8)).resize(
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


def figure(explanation: "Explanation", dpi: int = 100) -> Image.Image:
    """One picture: the original, each available overlay, and the verdict with its first reasons."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = explanation.maps()
    panels = [("original", None)] + [(name, values) for name, values in maps.items()]
    fig = Figure(figsize=(3.6 * len(panels), 4.9), dpi=dpi)
    FigureCanvasAgg(fig)
    verdict = explanation.verdict
    label = verdict.label if verdict.ok else None
    head = f"{label.upper()}  p_ai {verdict.p_ai:.3f}" if verdict.p_ai is not None else (label or "error").upper()
    model = f"  (model: {explanation.model})" if explanation.model else ""
    fig.suptitle(drawable(f"{head}{model}"), color=LABEL_COLOURS.get(label, "#555555"), fontsize=15, fontweight="bold")
    lines = verdict.reasons[:2] if verdict.ok else [verdict.error or ""]
    lines += [n for n in explanation.notes if n.partition(": ")[2] not in lines][:2]  # no reason said twice
    width = max(70, 40 * len(panels))
    wrapped = [part for line in lines for part in textwrap.wrap(line, width)][:5]
    fig.text(0.5, 0.02, drawable("\n".join(wrapped)), ha="center", va="bottom", fontsize=8.5)
    for index, (name, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        ax.set_axis_off()
        if values is None:
            ax.imshow(explanation.image, interpolation="nearest")
            ax.set_title(original_title(explanation), fontsize=10)
        else:
            ax.imshow(np.asarray(overlay(explanation.image, name, values)), interpolation="nearest")
            target = "AI" if explanation.target == "ai" else explanation.target
            ax.set_title(TITLES[name].format(target=target), fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.84, bottom=0.2, wspace=0.04)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
