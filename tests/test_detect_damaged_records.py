"""detect keeps what a damaged file still says about itself.

Before: a PNG cut in its pixel data or a JPEG cut in its scan data was one error row with ``evidence: []``; the
generation parameters or the XMP DigitalSourceType before the cut (shown by ``inspect``) were lost.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from PIL import Image

from synthdetect import Detector
from test_provenance_adapters_s25 import _jpeg_with_xmp, _png_with_parameters
from tiny_model import png_bytes, write_tiny_cnn


def test_a_cut_file_is_an_error_that_still_lists_the_records_before_the_cut(tmp_path):
    detector = Detector.load(str(write_tiny_cnn(tmp_path / "pkg")))
    raw_png, raw_jpeg = _png_with_parameters(), _jpeg_with_xmp()
    cut_png, cut_jpeg = raw_png[: raw_png.index(b"IDAT") + 200], raw_jpeg[: len(raw_jpeg) // 2]
    good, png, jpeg = detector.detect([png_bytes(seed=1), cut_png, cut_jpeg], names=["good.png", "cut.png", "cut.jpg"])
    assert good.ok and good.label is not None  # the batch still judges the good file
    assert (png.label, png.p_ai, png.error_kind) == (None, None, "truncated")
    assert [(e.kind, e.signal, e.strength) for e in png.evidence] == [("genparams", "ai", "decisive")]
    assert (jpeg.label, jpeg.error_kind) == (None, "truncated")
    assert [(e.kind, e.signal) for e in jpeg.evidence] == [("metadata", "ai")]
    # the bytes were read, so the row names them: a moderator can match the failed file
    assert png.sha256 == hashlib.sha256(cut_png).hexdigest()
    assert png.to_dict()["evidence"][0]["kind"] == "genparams" and png.to_dict()["label"] is None


def test_records_follow_the_detectors_evidence_settings(tmp_path):
    package = str(write_tiny_cnn(tmp_path / "pkg"))
    raw = _png_with_parameters()
    cut = raw[: raw.index(b"IDAT") + 200]
    assert Detector.load(package, use_evidence=False).detect([cut])[0].evidence == []
    assert Detector.load(package, probes=["metadata", "watermark"]).detect([cut])[0].evidence == []
    only = Detector.load(package, probes=["genparams", "ela"]).detect([cut])[0]
    assert [e.kind for e in only.evidence] == ["genparams"]


def test_a_file_that_is_not_an_image_gets_no_records(tmp_path):
    verdict = Detector.load(str(write_tiny_cnn(tmp_path / "pkg"))).detect([b"shopping list"])[0]
    assert verdict.error_kind == "not_an_image" and verdict.evidence == [] and verdict.sha256 is None


def test_scan_rows_of_a_cut_file_list_the_same_records_as_detect(tmp_path):
    """scan's workers send a damaged file's records with its error, so its row is the verdict detect gives."""
    from synthdetect.scan.engine import ScanOptions, run_scan
    from synthdetect.scan.store import ResultStore

    package = str(write_tiny_cnn(tmp_path / "pkg"))
    raw = _png_with_parameters()
    images = tmp_path / "images"
    images.mkdir()
    (images / "cut.png").write_bytes(raw[: raw.index(b"IDAT") + 200])
    (images / "good.png").write_bytes(png_bytes(seed=2))
    run_scan([str(images)], tmp_path / "r.sqlite", ScanOptions(model=package, workers=1))
    rows = {Path(r["path"]).name: r for r in ResultStore(tmp_path / "r.sqlite").rows()}
    expected = Detector.load(package).detect([str(images / "cut.png")])[0].to_dict()
    assert json.loads(rows["cut.png"]["evidence"]) == expected["evidence"] != []
    assert rows["cut.png"]["sha256"] == expected["sha256"] and rows["good.png"]["label"] is not None


def test_the_table_says_the_records_beside_the_error(tmp_path):
    import io

    from synthdetect.cli import OutputFormat, render_verdicts

    raw = _png_with_parameters()
    verdict = Detector.load(str(write_tiny_cnn(tmp_path / "pkg"))).detect([raw[: raw.index(b"IDAT") + 200]],
                                                                           names=["cut.png"])[0]
    out = io.StringIO()
    render_verdicts([verdict.to_dict()], OutputFormat.table, out)
    text = " ".join(out.getvalue().split())
    assert "error" in text and "truncated image data; records read from its bytes: genparams ai decisive" in \
        text.replace("│", "").replace("  ", " ")


def test_a_model_that_fails_on_a_file_keeps_its_evidence_and_hash(tmp_path, monkeypatch):
    """A model crash had thrown away what the probes read (a decisive generation-parameters record, the sha256)."""
    detector = Detector.load(str(write_tiny_cnn(tmp_path / "pkg")))

    def broken(*args, **kwargs):
        raise RuntimeError("session failed")

    monkeypatch.setattr(detector.model, "score_prepared", broken)
    raw = _png_with_parameters(Image.open(io.BytesIO(png_bytes(seed=3))))  # 32 px: the tiny model's size
    verdict = detector.detect([raw], names=["gen.png"])[0]
    assert (verdict.label, verdict.error_kind) == (None, "model_error")
    assert [(e.kind, e.signal, e.strength) for e in verdict.evidence] == [("genparams", "ai", "decisive")]
    assert verdict.sha256 == hashlib.sha256(raw).hexdigest() and verdict.image["format"] == "PNG"
