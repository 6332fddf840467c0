"""EXIF: the camera that took the picture, when and with what; the software that last wrote it.

A real camera leaves a consistent set of tags (make, model, capture time,
exposure); when they are all there this is *weak* ``human`` evidence -- EXIF
is trivial to copy onto any file.  An editor in ``Software`` means edited,
not generated; a generator there is strong ``ai``.  Missing EXIF is no
evidence at all (most web images have it stripped) and yields no record.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from PIL import Image

from synthdetect.evidence import clipped, register_probe
from synthdetect.evidence.metadata import editor_named_in, generator_named_in, raw_profile
from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

MAKE, MODEL, SOFTWARE, DATETIME = 0x010F, 0x0110, 0x0131, 0x0132
EXIF_IFD = 0x8769
DATETIME_ORIGINAL, EXPOSURE_TIME, FNUMBER, ISO, FOCAL_LENGTH, LENS_MAKE, LENS_MODEL = (
    0x9003, 0x829A, 0x829D, 0x8827, 0x920A, 0xA433, 0xA434)
_EXPOSURE_TAGS = (EXPOSURE_TIME, FNUMBER, ISO, FOCAL_LENGTH)
_DATETIME = re.compile(r"^\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}")


def _clean(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text if text and text.isprintable() else None


#: ComfyUI's WebP saver writes its node graphs as ``workflow:{...}`` in Make and ``prompt:{...}`` in Model
#: (:mod:`synthdetect.evidence.genparams` reads them); such a value names no camera.
_KEY_JSON_ENVELOPE = re.compile(r"^\w{1,40}:\s*[\[{]")


def _camera_field(value: Any) -> str | None:
    text = _clean(value)
    return None if text is None or _KEY_JSON_ENVELOPE.match(text) else text


def _number(value: Any) -> float | None:
    try:
        if isinstance(value, tuple):
            value = value[0]
        number = float(value)  # ints, floats and Pillow's IFDRational alike
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    # NaN from 0/0 rationals, infinity from x/0, and negative values are no setting a camera records
    return number if math.isfinite(number) and number >= 0 else None


def parse_exif(image: LoadedImage) -> tuple[Image.Exif, dict] | None:
    """The file's EXIF (IFD0, Exif sub-IFD), or None when it has none or it cannot be read.

    Unreadable EXIF is reported as absent, never as a signal, by every probe that uses it.
    """
    exif_bytes = image.info.get("exif") or raw_profile(image, "exif")  # a PNG from ImageMagick keeps it as text
    try:
        if exif_bytes:
            exif = Image.Exif()
            exif.load(exif_bytes)
        elif image.format == "TIFF" and image.raw:
            exif = _tiff_tags(image.raw)  # a TIFF's EXIF is its own first IFD: Pillow puts none of it in ``info``
        else:
            return None
        return exif, exif.get_ifd(EXIF_IFD)
    except Exception:  # noqa: BLE001 - malformed EXIF of any kind means "no EXIF"
        return None


def _tiff_tags(raw: bytes) -> Image.Exif:
    import io

    with Image.open(io.BytesIO(raw)) as im:
        exif = im.getexif()
        exif.get_ifd(EXIF_IFD)  # read the sub-IFD while the file is still open
        return exif


def read_exif(image: LoadedImage) -> dict[str, Any] | None:
    """The camera-relevant EXIF tags by name, or None when the file carries no EXIF."""
    parsed = parse_exif(image)
    if parsed is None:
        return None
    exif, sub = parsed
    tags = {
        "make": _camera_field(exif.get(MAKE)), "model": _camera_field(exif.get(MODEL)),
        "software": _clean(exif.get(SOFTWARE)),
        "datetime": _clean(exif.get(DATETIME)), "datetime_original": _clean(sub.get(DATETIME_ORIGINAL)),
        "lens_make": _clean(sub.get(LENS_MAKE)), "lens_model": _clean(sub.get(LENS_MODEL)),
        "exposure_time": _number(sub.get(EXPOSURE_TIME)), "f_number": _number(sub.get(FNUMBER)),
        "iso": _number(sub.get(ISO)), "focal_length": _number(sub.get(FOCAL_LENGTH)),
    }
    return {k: v for k, v in tags.items() if v is not None}


def camera_name(make: str | None, model: str | None) -> str:
    """'Canon' + 'Canon EOS 5D' -> 'Canon EOS 5D' (models often repeat the make)."""
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(filter(None, (make, model)))


def _valid_time(text: str | None) -> bool:
    if not text or not _DATETIME.match(text):
        return False
    try:
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return False
    return 1990 <= moment.year <= datetime.now().year + 1


def camera_consistency(tags: dict[str, Any]) -> list[str]:
    """Why these tags do not look like a camera's own record (empty list: consistent)."""
    problems = []
    missing = [k for k in ("make", "model") if not tags.get(k)]
    if missing:
        problems.append(f"no camera {'/'.join(missing)}")
    if not _valid_time(tags.get("datetime_original") or tags.get("datetime")):
        problems.append("no valid capture time")
    if not any(tags.get(k) for k in ("exposure_time", "f_number", "iso", "focal_length")):
        problems.append("no exposure settings")
    return problems


def _settings_shown(tags: dict[str, Any]) -> list[str]:
    """Exposure settings as a reason shows them.  A file can hold any finite number in these tags (a DOUBLE tag of
    5e-324 s crashed the probe with OverflowError and lost the camera record; 1e300 printed 300 digits), so values no
    camera records are written in short scientific form rather than as 1/N s, f/N.N or ISO N."""
    settings = []
    exposure = tags.get("exposure_time")
    if exposure:
        if 1e-6 <= exposure < 1:
            settings.append(f"1/{round(1 / exposure)}s")
        else:
            settings.append(f"{exposure}s" if 1 <= exposure < 1e5 else f"{exposure:.3g}s")
    if tags.get("f_number"):
        settings.append(f"f/{tags['f_number']:.1f}" if tags["f_number"] < 1e4 else f"f/{tags['f_number']:.3g}")
    if tags.get("iso"):
        settings.append(f"ISO {tags['iso']:.0f}" if tags["iso"] < 1e7 else f"ISO {tags['iso']:.3g}")
    return settings


@register_probe("exif")
def probe_exif(image: LoadedImage) -> list[Evidence]:
    tags = read_exif(image)
    if not tags:
        return []
    found: list[Evidence] = []
    software = tags.get("software")
    for field_name, key in (("Software", "software"), ("Make", "make"), ("Model", "model")):
        if generator := generator_named_in(tags.get(key)):  # the reason quotes the field that names it
            found.append(Evidence("exif", "ai", "strong",
                                  f"EXIF {field_name} names the generator {generator} ('{clipped(tags[key])}')",
                                  {"tags": tags, "generator": generator, "field": field_name}))
            return found
    camera = camera_name(tags.get("make"), tags.get("model"))
    problems = camera_consistency(tags)
    if camera and not problems:
        when = tags.get("datetime_original") or tags.get("datetime")
        settings = _settings_shown(tags)
        lens = tags.get("lens_model")
        detail = f"camera EXIF: {clipped(camera)}, captured {clipped(when)}"
        detail += f", {' '.join(settings)}" if settings else ""
        detail += (f", lens {clipped(lens)}" if lens else "") + " (weak: EXIF can be copied)"
        found.append(Evidence("exif", "human", "weak", detail, {"tags": tags}))
    elif camera:
        found.append(Evidence("exif", "none", "info", f"EXIF names {clipped(camera)} but {', '.join(problems)}",
                              {"tags": tags, "problems": problems}))
    editor = editor_named_in(software)
    if editor:
        found.append(Evidence("exif", "edited", "info",
                              f"EXIF Software '{clipped(software)}': edited in {editor} "
                              f"(says nothing about how it was made)",
                              {"software": software, "editor": editor}))
    return found
