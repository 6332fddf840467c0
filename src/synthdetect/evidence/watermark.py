"""Invisible watermarks that Stable Diffusion reference code embeds: the dwtDct marks.

The CompVis/Stability scripts mark every output with the
``invisible-watermark`` library's ``dwtDct`` method: ``StableDiffusionV1``
(136 bits, SD 1.x/2.x scripts) or a fixed 48-bit message (SDXL, also in
diffusers).  The decoder is re-implemented here on PyWavelets and NumPy
because the library declares a GUI OpenCV build and torch as dependencies and
decodes one block at a time in Python; the tests check this decoder against
the library's own encoder (installed for tests only, without its
dependencies).

The method: RGB -> YUV, a one-level Haar DWT of the U channel, 4x4 blocks of
the approximation band; in each block the largest-magnitude coefficient
(excluding the DC position) carries one bit as ``(|c| mod 36) > 18``; bits
repeat over the blocks and are averaged by majority.

Decision: the mark is reported when bit accuracy reaches the threshold below.
Unmarked images decode near 50% (chance).  Measured on the 236 wild-dev real
photos of at least 256 px (``benchmarks/watermark_chance.py``, rerun
2026-12-05 on the wild-dev copy of that day), best over the four encoder
variants the probe tries: StableDiffusionV1 mean 0.518, p99 0.613, max 0.647;
SDXL mean 0.506, p99 0.625, max 0.646 (the maxima first published here,
0.640 and 0.667, no longer reproduce).  Flat fills, gradients, stripes and
checkerboards decode at most 0.55 and 0.56.  The thresholds
(0.80 of 136 bits, 0.85 of 48 bits) sit far above those maxima; the binomial
chance tail, times the four encoder variants tried, is reported with each finding.  A found mark is *strong*, not
decisive: it says the pixels went through the SD reference pipeline, and the mark can be copied onto another image.
Images under 256 px on a side are skipped (the library refuses them too, and
too few blocks carry each bit), and so are pixels decoded at a reduced scale.
An EXIF-oriented file is decoded on its own pixel grid, where the mark was written.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import pywt
from PIL import Image

from synthdetect.evidence import register_probe
from synthdetect.evidence.ela import _UNDO_ORIENT, stored_orientation
from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

SCALE = 36.0
BLOCK = 4
MIN_SIDE = 256
#: Rows decoded: the message repeats over the whole image, and 512 rows (a whole SD 1.x output) bound the cost.
MAX_ROWS = 512
MAX_COLS = 1024

SD_V1_BITS = np.unpackbits(np.frombuffer(b"StableDiffusionV1", dtype=np.uint8)).astype(bool)
SDXL_BITS = np.array([int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]], dtype=bool)
MARKS = {"StableDiffusionV1": SD_V1_BITS, "SDXL": SDXL_BITS}
#: Bit accuracy at or above which a mark is reported (see module docstring for how they were chosen).
THRESHOLDS = {"StableDiffusionV1": 0.80, "SDXL": 0.85}


def u_channel(rgb: np.ndarray, *, bgr_swapped: bool = False, float_encoder: bool = False) -> np.ndarray:
    """OpenCV's BGR->YUV U channel, ``0.492 (B - Y) + delta``, as the encoder saw it.

    (``cv2`` itself is not a runtime dependency; see the module docstring.)

    ``bgr_swapped`` reproduces encoders that passed RGB arrays where OpenCV
    expects BGR (diffusers' SDXL watermarker does), which swaps R and B.
    ``float_encoder``: encoders that marked float arrays (diffusers, Stability's
    ``sgm``) worked with OpenCV's float offset 0.5 instead of 128; decoding
    with the same offset keeps the quantisation grid the mark was written on.
    """
    if float_encoder:
        arr = rgb.astype(np.float32)
        r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
        if bgr_swapped:
            r, b = b, r
        return 0.492 * (b - (0.299 * r + 0.587 * g + 0.114 * b)) + 0.5
    # OpenCV's 8-bit path is 14-bit fixed point with an integer Y; reproducing it
    # exactly keeps the decoded bits identical to the library's decoder.
    arr = rgb.astype(np.int32)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    if bgr_swapped:
        r, b = b, r
    half = 1 << (_SHIFT - 1)
    y = (r * _FX_R + g * _FX_G + b * _FX_B + half) >> _SHIFT
    u = ((b - y) * _FX_U + (128 << _SHIFT) + half) >> _SHIFT
    return np.clip(u, 0, 255).astype(np.uint8)


_SHIFT = 14
_FX_R, _FX_G, _FX_B, _FX_U = (round(c * (1 << _SHIFT)) for c in (0.299, 0.587, 0.114, 0.492))


#: The encoder set-ups seen in released generators: (RGB passed as BGR?, float encoder?).
VARIANTS = {"bgr-uint8": (False, False), "rgb-as-bgr-uint8": (True, False),
            "bgr-float": (False, True), "rgb-as-bgr-float": (True, True)}


_HAAR = pywt.Wavelet("haar").dec_lo[0]  # 1/sqrt(2), exactly the coefficient PyWavelets uses


def haar_approximation(x: np.ndarray) -> np.ndarray:
    """The approximation band of ``pywt.dwt2(x, "haar")``, bit for bit, without computing the three detail bands.

    Rows first, then columns, in float64 as PyWavelets does: bits sit on exact
    .5 grid points, so the rounding must be the library's (``tests`` check
    equality with ``pywt.dwt2``).  Five times faster than the full transform,
    which was most of the probe's cost.
    """
    rows = x[0::2] * _HAAR + x[1::2] * _HAAR
    return rows[:, 0::2] * _HAAR + rows[:, 1::2] * _HAAR


def block_bits(channel: np.ndarray, full_width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bit, block number) of each 4x4 block of the Haar approximation band.

    Block numbers follow the encoder's row-major order over the *whole* image
    (``full_width`` when ``channel`` is a left crop), so a crop decodes the
    same message positions as the full image.
    """
    rows, cols = channel.shape
    rows, cols = rows // 4 * 4, cols // 4 * 4
    blocks_per_row = (full_width or cols) // 4 * 4 // 2 // BLOCK
    approx = haar_approximation(channel[:rows, :cols].astype(np.float64))
    h, w = approx.shape
    nb_r, nb_c = h // BLOCK, w // BLOCK
    blocks = approx[: nb_r * BLOCK, : nb_c * BLOCK].reshape(nb_r, BLOCK, nb_c, BLOCK).transpose(0, 2, 1, 3)
    magnitude = np.abs(blocks.reshape(nb_r * nb_c, BLOCK * BLOCK))
    pos = np.argmax(magnitude[:, 1:], axis=1) + 1
    values = np.take_along_axis(magnitude, pos[:, None], axis=1)[:, 0]
    numbers = (np.arange(nb_r)[:, None] * blocks_per_row + np.arange(nb_c)[None, :]).ravel()
    return (values % SCALE) > 0.5 * SCALE, numbers


def vote(decoded: tuple[np.ndarray, np.ndarray], length: int) -> np.ndarray:
    """Per-bit fraction of blocks reading 1 for a ``length``-bit message repeated over the blocks."""
    bits, numbers = decoded
    index = numbers % length
    ones = np.bincount(index, weights=bits.astype(np.float64), minlength=length)
    return ones / np.maximum(np.bincount(index, minlength=length), 1)


def decode_bits(channel: np.ndarray, length: int) -> np.ndarray:
    return vote(block_bits(channel), length)


def accuracy_of(votes: np.ndarray, message: np.ndarray) -> float:
    decoded = votes * 255 > 127  # the library's rounding of the vote
    return float(np.mean(decoded == message))


def bit_accuracy(rgb: np.ndarray, message: np.ndarray, *, bgr_swapped: bool = False, float_encoder: bool = False) -> float:
    u = u_channel(rgb, bgr_swapped=bgr_swapped, float_encoder=float_encoder)
    return accuracy_of(decode_bits(u, len(message)), message)


def chance_tail(accuracy: float, bits: int) -> float:
    """P(at least this many bits right by chance), for a fair coin per bit."""
    k = math.ceil(accuracy * bits - 1e-9)
    return float(sum(math.comb(bits, i) for i in range(k, bits + 1)) / 2**bits)


def scan_marks(rgb: np.ndarray, full_width: int | None = None) -> dict[str, dict[str, float]]:
    """Best bit accuracy for each known mark over the encoder variants (each variant decoded once).

    ``rgb`` may already be the top-left crop of a wider image whose width is ``full_width``.
    """
    full_width = full_width or rgb.shape[1]
    rgb = rgb[:MAX_ROWS, :MAX_COLS]
    decoded = {variant: block_bits(u_channel(rgb, bgr_swapped=swapped, float_encoder=floating), full_width)
               for variant, (swapped, floating) in VARIANTS.items()}
    out = {}
    for name, message in MARKS.items():
        best = max((accuracy_of(vote(bits, len(message)), message), variant) for variant, bits in decoded.items())
        out[name] = {"bit_accuracy": best[0], "encoder_variant": best[1], "bits": len(message),
                     "threshold": THRESHOLDS[name]}
    return out


#: JPEG quality at and below which the marks are gone.  Measured with the library's own encoder on 60 wild-dev
#: real photos as carriers: found after PNG 43/60 (SD 1.x) and 54/60 (SDXL), after JPEG quality 95 4/60 and
#: 18/60, after quality 90, 80 and 70 0/60 for both.
LOSSY_QUALITY = 90


@functools.lru_cache(maxsize=1)
def _reference_tables() -> dict[int, tuple[int, ...]]:
    """Pillow's own quantisation tables at LOSSY_QUALITY (natural order, as ``Image.quantization`` reports them)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", quality=LOSSY_QUALITY)
    return {k: tuple(v) for k, v in Image.open(io.BytesIO(buffer.getvalue())).quantization.items()}


def mark_can_survive(image: LoadedImage) -> bool:
    """False for a JPEG quantised at least as coarsely as quality LOSSY_QUALITY in every coefficient.

    Decoding costs ~35 ms per photo and cannot find a mark there, so the probe
    skips it (reading the tables parses only the header).  Tables from any encoder
    count, not just an estimated "quality": each coefficient must be as coarse.
    """
    if image.format != "JPEG" or image.raw is None:
        return True
    try:
        tables = Image.open(io.BytesIO(image.raw)).quantization
    except Exception:  # noqa: BLE001 - unreadable tables: decode rather than guess
        return True
    reference = _reference_tables()
    if 0 not in tables:  # no luma table: nothing to compare
        return True
    for index, table in tables.items():
        ref = reference.get(min(index, 1))
        if ref is None or len(table) != 64 or any(q < r for q, r in zip(table, ref)):
            return True
    return False


def _stored_size(image: LoadedImage) -> tuple[int, int]:
    """The decoded pixels' size on the file's own grid (before the EXIF orientation turned them)."""
    width, height = image.size
    return (height, width) if stored_orientation(image) in (5, 6, 7, 8) else (width, height)


#: Pillow modes without colour: a file stored so carries no mark, whatever it once held ("no watermark found"
#: would say it was looked for where none can be).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def why_not_decoded(image: LoadedImage) -> str | None:
    """Why the probe does not decode this image (None when it does): absence of a mark then says nothing."""
    if image.short_side < MIN_SIDE:
        return f"image is {image.short_side} px on its short side; the marks need at least {MIN_SIDE} px"
    if not mark_can_survive(image):
        return f"JPEG compressed at about quality {LOSSY_QUALITY} or coarser, which erases the marks"
    if image.original_mode in GREY_MODES:  # the marks live in the colour (U, V) planes, which grey pixels lack
        return f"a grey image ({image.original_mode}) has no colour, where the marks are written"
    if image.raw is not None and _stored_size(image) != tuple(image.original_size):
        # JPEG draft mode (scan) decoded fewer pixels than the file holds: scaling erases the marks
        stored_w, stored_h = image.original_size
        return (f"pixels decoded at {image.size[0]}x{image.size[1]}, not the file's {stored_w}x{stored_h}; "
                "scaling erases the marks")
    return None


def _crop_box(orientation: int, size: tuple[int, int], cols: int, rows: int) -> tuple[int, int, int, int]:
    """The box of the shown (EXIF-turned) image whose pixels are the file's top-left ``cols`` x ``rows``."""
    w, h = size  # shown size
    boxes = {1: (0, 0, cols, rows), 2: (w - cols, 0, w, rows), 3: (w - cols, h - rows, w, h),
             4: (0, h - rows, cols, h), 5: (0, 0, rows, cols), 6: (w - rows, 0, w, cols),
             7: (w - rows, h - cols, w, h), 8: (0, h - cols, rows, h)}
    return boxes[orientation]


def stored_corner(image: LoadedImage) -> tuple[Image.Image, int]:
    """(the file's own top-left MAX_COLS x MAX_ROWS pixels, the file's width).

    The encoder marked the pixels as the generator wrote them; an EXIF orientation (added by an editor or an
    upload) only says how to show them.  Decoding the turned pixels reads every block in the wrong place, so
    the crop is taken from the shown image and turned back.  Cropping first never copies a 12 MP array.
    """
    orientation = stored_orientation(image)
    width, height = _stored_size(image)
    cols, rows = min(width, MAX_COLS), min(height, MAX_ROWS)
    corner = image.rgb.crop(_crop_box(orientation, image.size, cols, rows))
    if orientation != 1:
        corner = corner.transpose(_UNDO_ORIENT[orientation])
    return corner, width


def marked_finding(name: str, result: dict[str, float]) -> Evidence:
    """The finding for a mark at or above its threshold.

    The chance figure is the binomial tail for one decode times the number of encoder variants tried: the probe
    keeps the best of them, so an unmarked image gets that many tries at matching by chance.
    """
    p = min(1.0, len(VARIANTS) * chance_tail(result["bit_accuracy"], int(result["bits"])))
    return Evidence(
        "watermark", "ai", "strong",
        f"invisible {name} dwtDct watermark: {result['bit_accuracy']:.0%} of {result['bits']} bits match "
        f"(threshold {result['threshold']:.0%}; chance of this on an unmarked image, best of {len(VARIANTS)} "
        f"encoder variants, ~{p:.0e})",
        {"mark": name, **result, "chance_probability": p, "variants_tried": len(VARIANTS)})


@register_probe("watermark")
def probe_watermark(image: LoadedImage) -> list[Evidence]:
    if why_not_decoded(image):
        return []
    corner, width = stored_corner(image)
    results = scan_marks(np.asarray(corner), full_width=width)
    return [marked_finding(name, result) for name, result in results.items()
            if result["bit_accuracy"] >= result["threshold"]]
