"""Image loading: formats, colour modes, orientation, limits and one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from badinputs import EXPECTED, make_corpus, natural_image, png_claiming
from synthdetect.images import ImageLoadError, LoadLimits, load_image


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_input_loads_or_fails_with_its_reason(corpus, name):
    expected = EXPECTED[name]
    path = corpus[name]
    if expected is None:
        loaded = load_image(path)
        assert loaded.rgb.mode == "RGB"
        assert loaded.raw == path.read_bytes()
        assert loaded.source == str(path)
    else:
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        assert info.value.kind == expected
        message = str(info.value)
        assert message.startswith(str(path) + ": ")
        assert "\n" not in message


def test_error_messages_say_why(corpus):
    def reason(name):
        with pytest.raises(ImageLoadError) as info:
            load_image(corpus[name])
        return info.value.reason

    assert reason("truncated.jpg") == "truncated image data"
    assert "100000x100000" in reason("huge-header.png") and "too many pixels" in reason("huge-header.png")
    assert reason("text.jpg") == "not an image (the file contains text)"
    assert reason("empty.png") == "empty file (0 bytes)"
    assert reason("document.pdf") == "unsupported format: PDF"


def test_pixel_limit_checked_before_decoding():
    # 100k x 100k at 3 bytes/px would need 30 GB; failing fast proves no decode happened.
    with pytest.raises(ImageLoadError) as info:
        load_image(png_claiming(100_000, 100_000), name="bomb.png")
    assert info.value.kind == "too_many_pixels"


def test_limits_are_configurable(corpus):
    with pytest.raises(ImageLoadError) as info:
        load_image(corpus["photo.bmp"], LoadLimits(max_bytes=100))
    assert info.value.kind == "too_large"
    with pytest.raises(ImageLoadError) as info:
        load_image(corpus["photo.bmp"], LoadLimits(max_pixels=1000))
    assert info.value.kind == "too_many_pixels"
    assert load_image(corpus["photo.bmp"], LoadLimits(max_pixels=96 * 64)).size == (96, 64)


def test_exif_orientation_is_applied(corpus):
    loaded = load_image(corpus["exif-rotated.jpg"])
    assert loaded.original_size == (60, 40)
    assert loaded.size == (40, 60)
    assert loaded.orientation_applied


def test_sixteen_bit_is_rescaled_not_clipped(corpus):
    arr = load_image(corpus["sixteen-bit.png"]).array()
    assert arr.min() <= 1 and arr.max() >= 254  # full range survives
    assert len(np.unique(arr[..., 0])) > 200  # and is not clipped to a handful of values


def test_alpha_composited_on_stated_background(corpus):
    loaded = load_image(corpus["palette-alpha.png"], LoadLimits(background=(0, 255, 0)))
    assert loaded.had_alpha
    arr = loaded.array()
    assert tuple(arr[5, 5]) == (0, 0, 255)  # opaque blue half kept
    assert tuple(arr[5, 35]) == (0, 255, 0)  # transparent half shows the background
    assert any("alpha composited" in note for note in loaded.notes)


def test_animated_gif_uses_first_frame(corpus):
    loaded = load_image(corpus["animated.gif"])
    assert loaded.frames == 3
    assert loaded.notes and "first" in loaded.notes[0]


def test_cmyk_becomes_rgb(corpus):
    loaded = load_image(corpus["cmyk.jpg"])
    assert loaded.original_mode == "CMYK" and loaded.rgb.mode == "RGB"


@pytest.mark.parametrize("name,fmt", [("photo.avif", "AVIF"), ("photo.heic", "HEIF"), ("photo.webp", "WEBP"),
                                      ("photo.tiff", "TIFF"), ("photo.bmp", "BMP")])
def test_formats_keep_their_name(corpus, name, fmt):
    loaded = load_image(corpus[name])
    assert loaded.format == fmt
    assert loaded.size == (96, 64)


def test_pil_and_bytes_inputs():
    image = natural_image(50, 40)
    from_pil = load_image(image)
    assert from_pil.raw is None and from_pil.size == (50, 40)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    from_bytes = load_image(buffer.getvalue())
    assert from_bytes.format == "PNG"
    assert np.array_equal(from_bytes.array(), from_pil.array())


def test_binary_streams_load_within_the_byte_limit_and_name_their_file(tmp_path):
    """An upload's file object or ``open(path, "rb")`` is read, never as more than the limit allows."""
    buffer = io.BytesIO()
    natural_image(50, 40).save(buffer, format="PNG")
    data = buffer.getvalue()
    from_stream = load_image(io.BytesIO(data))
    assert from_stream.raw == data and from_stream.source == "<BytesIO>"
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        assert load_image(handle).source == str(path)  # an open file is named by its path
    with pytest.raises(ImageLoadError) as info:
        load_image(io.BytesIO(data), LoadLimits(max_bytes=100))
    assert info.value.kind == "too_large" and f"({len(data):,} bytes > limit 100)" in str(info.value)
    with open(path, encoding="latin-1") as text, pytest.raises(ImageLoadError, match="binary mode"):
        load_image(text)
    with pytest.raises(ImageLoadError) as info:
        load_image(io.BytesIO(b""))
    assert info.value.kind == "empty"


def test_the_detector_takes_a_stream_as_one_image():
    from synthdetect import Detector

    buffer = io.BytesIO()
    natural_image(32, 32).save(buffer, format="PNG")
    verdict = Detector.load("cifake-cnn", use_evidence=False)(io.BytesIO(buffer.getvalue()))
    assert verdict.error is None and verdict.file == "<BytesIO>"
    assert verdict.p_ai == Detector.load("cifake-cnn", use_evidence=False)(buffer.getvalue()).p_ai


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.kind == "not_found"
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path)
    assert info.value.kind == "not_a_file"


def test_draft_mode_decodes_large_jpeg_smaller():
    buffer = io.BytesIO()
    natural_image(1600, 1200).save(buffer, format="JPEG", quality=90)
    loaded = load_image(buffer.getvalue(), draft_size=(400, 300))
    assert loaded.size[0] < 1600 and loaded.size[0] >= 400
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (1600, 1200)


def test_paths_that_are_not_regular_files_fail_with_what_they_are(tmp_path):
    """A FIFO would block the loader for ever; links that lead nowhere must say so rather than vanish."""
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop_a.jpg").symlink_to(tmp_path / "loop_b.jpg")
    (tmp_path / "loop_b.jpg").symlink_to(tmp_path / "loop_a.jpg")
    expected = {"pipe.jpg": ("not_a_file", "named pipe (FIFO)"), "dangling.jpg": ("not_found", "broken symbolic link"),
                "loop_a.jpg": ("not_a_file", "symbolic link loop")}
    for name, (kind, words) in expected.items():
        with pytest.raises(ImageLoadError) as err:
            load_image(tmp_path / name)
        assert err.value.kind == kind and words in str(err.value), str(err.value)


def test_a_folder_walk_keeps_broken_links_and_fifos_as_error_rows(tmp_path):
    import os

    from synthdetect.api import expand_paths

    natural_image(32, 32).save(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    found, _ = expand_paths([tmp_path])
    assert sorted(Path(p).name for p, _ in found) == ["dangling.png", "good.png", "pipe.png"]
    named, _ = expand_paths([tmp_path / "dangling.png"])
    assert named[0][1].kind == "not_found" and named[0][1].reason.startswith("broken symbolic link")


def test_pil_images_that_cannot_decode_or_convert_are_load_errors(tmp_path):
    """A caller's lazy PIL image is decoded inside the loader, so its failure is a verdict error, not a crash."""
    data = io.BytesIO()
    natural_image(64, 64).save(data, "JPEG", quality=90)
    (tmp_path / "cut.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageLoadError) as err:
        load_image(Image.open(tmp_path / "cut.jpg"))
    assert err.value.kind == "truncated"
    closed = Image.open(io.BytesIO(data.getvalue()))
    closed.close()
    with pytest.raises(ImageLoadError) as err:
        load_image(closed)
    assert "closed" in str(err.value)
    # premultiplied grey + alpha (a TIFF with associated alpha opens so): Pillow cannot take it straight to RGBA
    loaded = load_image(Image.new("La", (8, 8), (120, 255)))
    assert loaded.had_alpha and loaded.rgb.getpixel((0, 0)) == (120, 120, 120)


def test_a_huge_compressed_png_text_chunk_does_not_hide_the_pixels():
    """Pillow refuses a zTXt chunk that inflates past 1 MB; the picture is still judged, with a note."""
    import zlib

    png = io.BytesIO()
    natural_image(40, 40).save(png, "PNG")
    raw = png.getvalue()
    body = b"parameters\x00\x00" + zlib.compress(b"a" * (3 << 20))
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    with_text = raw[:33] + chunk + raw[33:]  # after the 8-byte signature and the 25-byte IHDR chunk
    loaded = load_image(with_text)
    assert loaded.rgb.size == (40, 40) and loaded.raw == with_text
    assert any("1 MB text limit" in note for note in loaded.notes)


def test_a_closed_stream_and_a_pil_image_without_pixels_are_one_line_errors_of_the_loader():
    """The loader itself refuses them (before, a closed stream raised ValueError and a 0x5 image was judged)."""
    closed = io.BytesIO(b"\x89PNG\r\n\x1a\n")
    closed.close()
    with pytest.raises(ImageLoadError, match="cannot read stream") as err:
        load_image(closed)
    assert err.value.kind == "unreadable"
    with pytest.raises(ImageLoadError, match=r"empty image \(0x5 px\)") as err:
        load_image(Image.new("RGB", (0, 5)))
    assert err.value.kind == "empty"
