"""Audit of image loading and ``synthdetect inspect`` (session 23): damaged files of a known format, headers cut
short, EXIF orientation values that turn nothing, a file removed between its check and its read, and what
``inspect`` records of each file."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image
from rich.console import Console

import synthdetect.images as images
from synthdetect.evidence.commands import _render_table, inspect_file
from synthdetect.images import ImageLoadError, load_image


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def _error(source, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as caught:
        load_image(source, name="x", **kwargs)
    assert "\n" not in str(caught.value)
    return caught.value


BASE = Image.new("RGB", (64, 48), (10, 200, 30))


def test_a_damaged_file_of_a_known_format_is_corrupt_and_says_why_not_not_an_image():
    png = bytearray(_encode(BASE, "PNG"))
    png[29] ^= 0xFF  # the IHDR chunk's CRC
    error = _error(bytes(png))
    assert error.kind == "corrupt"  # was not_an_image: "not an image (unrecognised data)"
    assert "PNG" in str(error) and "checksum" in str(error)

    no_frame = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0) + b";"  # a screen, no image, the trailer
    error = _error(no_frame)
    assert error.kind == "corrupt" and "GIF" in str(error)

    # bytes no decoder recognises stay what they were
    assert _error(bytes(range(256)) * 4).kind == "not_an_image"
    assert "contains text" in str(_error(b"just some words\n" * 20))
    assert _error(b"%PDF-1.7\n" + bytes(200)).kind == "unsupported_format"


def test_a_file_cut_inside_its_header_is_truncated_not_corrupt():
    jpeg = _encode(BASE, "JPEG")
    error = _error(jpeg[:200])  # inside the Huffman tables: Pillow's "Truncated File Read" while opening
    assert error.kind == "truncated", str(error)
    assert _error(b"\x89PNG\r\n\x1a\n").kind == "truncated"  # a PNG signature and nothing after it
    # a whole header with the pixel data cut stays the same error as before
    assert _error(jpeg[:-2]).kind == "truncated"
    heic = _encode(BASE, "HEIF")  # libheif's "Unexpected end of file" was "corrupt image data"
    assert _error(heic[:-10]).kind == "truncated"


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_an_orientation_value_that_turns_nothing_is_not_recorded_as_applied(value):
    exif = Image.Exif()
    exif[0x0112] = value
    loaded = load_image(_encode(BASE, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (64, 48)
    assert loaded.orientation == 1 and not loaded.orientation_applied  # was the raw tag value, and True


def test_an_applied_orientation_is_still_recorded():
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_image(_encode(BASE, "JPEG", exif=exif.tobytes()))
    assert loaded.size == (48, 64) and loaded.orientation == 6


def test_a_file_removed_between_its_check_and_its_read_is_not_found(tmp_path, monkeypatch):
    gone = tmp_path / "gone.png"
    monkeypatch.setattr(images, "regular_file_size", lambda path, label: 100)  # it was there when checked
    error = _error(gone)
    assert error.kind == "not_found", str(error)  # was unreadable: "cannot read file (No such file or directory)"


def test_a_file_that_grew_past_the_limit_after_its_check_is_too_large(tmp_path, monkeypatch):
    path = tmp_path / "growing.png"
    path.write_bytes(_encode(BASE, "PNG") + bytes(5000))
    monkeypatch.setattr(images, "regular_file_size", lambda p, label: 10)
    error = _error(path, limits=images.LoadLimits(max_bytes=1000))
    assert error.kind == "too_large" and "1,000" in str(error)


def _gif(frames: int) -> bytes:
    first, *rest = [Image.new("RGB", (40, 30), (40 * i, 0, 0)) for i in range(frames)]
    return _encode(first, "GIF", save_all=True, append_images=rest)


def test_inspect_records_error_kind_frames_and_notes():
    good = inspect_file("anim.gif", ["exif"], source=_gif(3))
    assert good["error_kind"] is None
    assert good["image"]["frames"] == 3 and any("3 frames" in note for note in good["image"]["notes"])
    json.dumps(good)

    bad = inspect_file("empty.png", ["exif"], source=b"")
    assert bad["error_kind"] == "empty" and bad["error"].startswith("empty.png: ")

    alpha = inspect_file("alpha.png", ["exif"], source=_encode(Image.new("RGBA", (20, 20), (1, 2, 3, 0)), "PNG"))
    assert any("alpha composited" in note for note in alpha["image"]["notes"])


def test_inspect_table_shows_the_notes_under_the_file_line():
    out = io.StringIO()
    result = inspect_file("anim.gif", ["exif"], source=_gif(2))
    _render_table([result], Console(file=out, width=120, color_system=None))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("anim.gif  GIF 40x30")
    assert "2 frames; judged the first" in lines[1]


def test_a_float_image_with_a_nan_or_inf_pixel_keeps_the_scale_of_the_rest():
    import numpy as np

    values = np.tile(np.linspace(0.0, 1.0, 40, dtype=np.float32), (30, 1))
    for bad in (np.nan, np.inf):
        data = values.copy()
        data[0, 0] = bad
        rgb = np.asarray(load_image(_encode(Image.fromarray(data, "F"), "TIFF")).rgb)[..., 0]
        # was all 0 or 1 with NaN (the scale became NaN), with no warning printed on stderr now either
        assert rgb[5, -1] == 255 and 120 <= rgb[5, 20] <= 135, bad
        assert rgb[0, 0] == (0 if np.isnan(bad) else 255)


def _tiff_with_a_broken_next_directory() -> bytes:
    """A good one-page TIFF whose pointer to a next page points past the end (a file cut or patched badly)."""
    tiff = bytearray(_encode(BASE, "TIFF"))
    first = struct.unpack("<I", tiff[4:8])[0]
    entries = struct.unpack("<H", tiff[first:first + 2])[0]
    pointer = first + 2 + 12 * entries
    tiff[pointer:pointer + 4] = struct.pack("<I", 10**9)
    return bytes(tiff)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns of the bad directory it tried to read
def test_a_tiff_with_a_broken_later_page_pointer_is_judged_on_its_first_page():
    loaded = load_image(_tiff_with_a_broken_next_directory(), name="x.tiff")  # was TypeError: Missing dimensions
    assert loaded.size == (64, 48) and loaded.frames == 1
    assert any("later frames could not be read" in note for note in loaded.notes)
    result = inspect_file("x.tiff", ["exif"], source=_tiff_with_a_broken_next_directory())  # was a traceback
    assert result["error"] is None and "later frames" in result["image"]["notes"][0]


def test_a_decoder_failing_with_an_unexpected_exception_is_a_corrupt_file_not_a_crash(monkeypatch):
    image = Image.open(io.BytesIO(_encode(BASE, "PNG")))

    def broken_load():
        raise TypeError("Missing dimensions")

    monkeypatch.setattr(image, "load", broken_load)
    error = _error(image)
    assert error.kind == "corrupt" and "Missing dimensions" in str(error)


def test_inspect_keeps_going_when_the_loader_fails_unexpectedly(monkeypatch):
    def crashing(*args, **kwargs):
        raise RuntimeError("decoder bug\nsecond line")

    monkeypatch.setattr(images, "load_image", crashing)
    result = inspect_file("x.png", ["exif"], source=b"whatever")  # was the RuntimeError: the batch stopped there
    assert result["error_kind"] == "unreadable"
    assert result["error"] == "x.png: cannot read input (raised RuntimeError: decoder bug)"


def test_an_interrupted_inspect_writes_the_files_done_and_says_how_far_it_got(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import synthdetect.evidence.commands as commands
    from synthdetect.cli import app

    names = []
    for i in range(3):
        BASE.save(tmp_path / f"{i}.png")
        names.append(str(tmp_path / f"{i}.png"))
    real = commands.inspect_file

    def interrupted_on_the_second(path, *args):
        if path == names[1]:
            raise KeyboardInterrupt  # Ctrl-C while the second file is read
        return real(path, *args)

    monkeypatch.setattr(commands, "inspect_file", interrupted_on_the_second)
    result = CliRunner().invoke(app, ["-q", "inspect", *names, "-p", "exif", "-f", "json"])
    assert result.exit_code == 130  # was a silent 130 with nothing written: the array waits for every file
    assert [row["file"] for row in json.loads(result.stdout)] == names[:1]
    assert "interrupted: 1 of 3 files inspected (0 failed)" in result.stderr
    assert "the other 2 were not inspected" in result.stderr


def test_a_fifo_put_in_place_of_a_checked_file_is_refused_not_read(tmp_path, monkeypatch):
    """Between the check and the read a file can be replaced; the read used to open whatever was there, and a FIFO
    blocked the reader until some process wrote to it (for ever, if none did)."""
    import os
    import threading

    fifo = tmp_path / "swapped.png"
    os.mkfifo(fifo)
    monkeypatch.setattr(images, "regular_file_size", lambda path, label: 100)  # a regular file when checked

    def writer():  # the process on the other end; without it the old read waited for ever
        try:
            fd = os.open(fifo, os.O_WRONLY)
            with open(fd, "wb") as end:
                end.write(_encode(BASE, "PNG"))
        except OSError:  # the refusing reader has gone: a broken pipe
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        error = _error(fifo)  # was a LoadedImage of the pipe's bytes
        assert error.kind == "not_a_file" and "named pipe" in str(error)
    finally:
        while thread.is_alive():  # a writer still waiting to open the pipe needs a reader to go on and end
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
            thread.join(0.05)


@pytest.mark.parametrize("data, kind, reason", [
    (b"B", "not_an_image", "not an image (the file contains text)"),
    (b"BMW cars are fast\n", "not_an_image", "not an image (the file contains text)"),
    (b"\xff\x00\x01", "not_an_image", "not an image (unrecognised data)"),
])
def test_a_few_bytes_or_text_with_a_weak_signature_are_not_an_image(data, kind, reason):
    """1-3 bytes made BMP's signature check raise struct.error ('cannot read input (error: unpack_from ...)'), and
    text starting "BM" was read as a damaged BMP."""
    with pytest.raises(ImageLoadError) as info:
        load_image(data, name="x.jpg")
    assert (info.value.kind, str(info.value)) == (kind, f"x.jpg: {reason}")


def test_a_file_opened_in_text_mode_or_read_to_its_end_says_so(tmp_path):
    """open(path) without "b" gave "cannot read stream ('utf-8' codec can't decode ...)", and the same open file
    passed a second time "empty file (0 bytes)"."""
    path = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path)
    with open(path, "rb") as stream:
        load_image(stream)
        with pytest.raises(ImageLoadError, match=r"the stream is at its end \(position \d+\); seek\(0\)"):
            load_image(stream)
        stream.seek(0)
        assert load_image(stream).size == (16, 16)
    for encoding in ("utf-8", "latin-1"):
        with open(path, encoding=encoding) as text, pytest.raises(ImageLoadError) as info:
            load_image(text)
        assert info.value.kind == "not_an_image" and "open the file in binary mode ('rb')" in str(info.value)


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "La", "PA"])
def test_alpha_flattened_a_strip_at_a_time_equals_the_whole_image_at_once(mode, monkeypatch):
    """A 9000x8000 PNG with alpha peaked at 1.1 GB while flattened whole (656 MB a strip at a time)."""
    import numpy as np

    rng = np.random.default_rng(7)
    rgba = Image.fromarray(rng.integers(0, 256, (97, 61, 4), dtype=np.uint8), "RGBA")
    im = {"RGBA": rgba, "LA": rgba.convert("LA"), "La": rgba.convert("LA").convert("La"),
          "PA": rgba.convert("PA")}.get(mode)
    if mode == "P":
        im = rgba.convert("RGB").quantize(32)
        im.info["transparency"] = 5
    whole, _ = images.to_rgb(im)
    monkeypatch.setattr(images, "ALPHA_STRIP_PIXELS", 200)  # strips of 3 rows: the last one shorter
    strips, had_alpha = images.to_rgb(im)
    assert had_alpha and np.array_equal(np.asarray(strips), np.asarray(whole))
