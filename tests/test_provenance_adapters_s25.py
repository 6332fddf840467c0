"""Audit s25: the records a damaged file still carries, and adapters on saturated or degenerate heads.

Before: a truncated file lost its provenance in ``inspect`` (a PNG's WebUI parameters or a JPEG's XMP
DigitalSourceType before the cut were not shown); a two-class head with an infinite logit was "no usable score"
(NaN); a one-output ONNX graph ending in Softmax called every image ``ai`` at p_ai 1.000; a sidecar without
``input`` scaling silently fed ``x/255``.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from synthdetect.evidence.commands import inspect_file
from synthdetect.images import ImageLoadError, load_image
from synthdetect.models import load_model
from synthdetect.models.adapters.labels import AdapterError, OutputMapping
from test_adapters import ONNX_SIDECAR, TinyCNN, write_images

PIXELS = (np.random.default_rng(25).random((96, 96, 3)) * 255).astype(np.uint8)
AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PARAMETERS = ("a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 96x96, "
              "Model hash: abc, Model: sd15, Version: v1.6.0")
XMP = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       f'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
       f'Iptc4xmpExt:DigitalSourceType="{AI_SOURCE}"/></rdf:RDF></x:xmpmeta>').encode()


def _png_with_parameters(image: Image.Image | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", PARAMETERS)
    buffer = io.BytesIO()
    (image or Image.fromarray(PIXELS)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _jpeg_with_xmp() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(PIXELS).save(buffer, "JPEG", quality=95, xmp=XMP)
    return buffer.getvalue()


# -- inspect: a damaged file's records ------------------------------------------------------------------------------
def test_a_png_cut_in_its_pixel_data_still_shows_its_generation_parameters(tmp_path):
    raw = _png_with_parameters()
    path = tmp_path / "cut.png"
    path.write_bytes(raw[: raw.index(b"IDAT") + 200])
    result = inspect_file(str(path))
    assert result["error_kind"] == "truncated" and result["error"] == f"{path}: truncated image data"
    found = [(e["kind"], e["signal"], e["strength"]) for e in result["evidence"]]
    assert found == [("genparams", "ai", "decisive")]
    assert "model sd15" in result["evidence"][0]["detail"]
    # the pixel views say they did not look, rather than "no watermark found"
    assert set(result["not_checked"]) == {"watermark", "ela", "spectrum"}
    assert all("the pixels could not be decoded" in why for why in result["not_checked"].values())
    assert result["image"]["format"] == "PNG" and (result["image"]["width"], result["image"]["height"]) == (96, 96)
    json.dumps(result)  # JSON-ready


def test_a_jpeg_cut_in_its_scan_data_still_shows_its_xmp_source_type(tmp_path):
    raw = _jpeg_with_xmp()
    path = tmp_path / "cut.jpg"
    path.write_bytes(raw[: len(raw) // 2])
    result = inspect_file(str(path), ["metadata", "watermark"])
    assert result["error_kind"] == "truncated"
    assert [(e["kind"], e["signal"], e["strength"]) for e in result["evidence"]] == [("metadata", "ai", "strong")]
    assert result["checked"] == ["metadata"] and list(result["not_checked"]) == ["watermark"]


def test_a_jpeg_cut_inside_its_header_still_shows_the_xmp_before_the_cut():
    raw = _jpeg_with_xmp()
    cut = raw[: raw.index(b"\xff\xdb")]  # after the APP1 XMP segment, before the quantisation tables
    with pytest.raises(ImageLoadError) as info:
        load_image(cut)
    assert info.value.kind in ("truncated", "corrupt")
    assert info.value.records is not None and info.value.records.rgb.size == (0, 0)  # no placeholder pixels
    result = inspect_file("cut.jpg", ["metadata"], source=cut)
    assert [(e["kind"], e["signal"]) for e in result["evidence"]] == [("metadata", "ai")]


def test_damaged_files_without_records_and_non_images_are_unchanged(tmp_path):
    raw = _png_with_parameters()
    plain = io.BytesIO()
    Image.fromarray(PIXELS).save(plain, "PNG")
    bare = inspect_file("bare.png", source=plain.getvalue()[:300])
    assert bare["error_kind"] == "truncated" and bare["evidence"] == [] and bare["checked"]
    text = inspect_file("notes.png", source=b"just some text, not an image")
    assert text["error_kind"] == "not_an_image" and text["evidence"] == [] and "checked" not in text
    assert inspect_file("whole.png", source=raw)["error"] is None


def test_inspect_table_prints_the_error_then_the_records_and_exits_3(tmp_path):
    from typer.testing import CliRunner

    from synthdetect.cli import app

    raw = _png_with_parameters()
    path = tmp_path / "cut.png"
    path.write_bytes(raw[: raw.index(b"IDAT") + 200])
    result = CliRunner().invoke(app, ["inspect", str(path), "-p", "genparams", "-p", "watermark"])
    assert result.exit_code == 3, result.output
    out = result.stdout
    assert "error truncated image data" in out
    assert "watermark not checked: the pixels could not be decoded" in out
    assert "Stable Diffusion WebUI generation parameters" in out
    assert out.index("error truncated") < out.index("Stable Diffusion")


def test_a_cut_png_with_a_c2pa_manifest_first_reports_it_as_not_matching_never_as_proof(monkeypatch):
    """c2pa-rs refuses a PNG cut in its pixel data ("PNG out of range"), so a manifest in the intact chunk before
    the cut was "present but unreadable"; it is read, and says the file no longer matches it and is cut."""
    from evidence_fakes import c2pa_sign, encode, make_cert_chain, pin_intermediate

    chain = make_cert_chain("OpenAI")
    pin_intermediate(chain, monkeypatch)
    signed = c2pa_sign(encode(PIXELS, "PNG"), "image/png", chain)
    assert signed.index(b"caBX") < signed.index(b"IDAT")
    whole = inspect_file("signed.png", ["c2pa"], source=signed)["evidence"]
    assert [(e["signal"], e["strength"]) for e in whole] == [("ai", "decisive")]  # the chain is trusted
    cut = signed[: signed.index(b"IDAT") + 100]
    result = inspect_file("cut.png", ["c2pa"], source=cut)
    assert result["error_kind"] == "truncated"
    [record] = result["evidence"]
    assert (record["signal"], record["strength"]) == ("tampered", "strong")
    assert "no longer matches this file" in record["detail"] and "the file is cut short" in record["detail"]
    assert "declares trainedAlgorithmicMedia" in record["detail"]


# -- adapters: infinite logits --------------------------------------------------------------------------------------
def test_an_infinite_logit_saturates_instead_of_giving_nan():
    mapping = OutputMapping("logits", ["real", "fake"], ["human", "ai"])
    z = mapping.log_odds(np.array([[np.inf, 0.0], [0.0, np.inf], [-np.inf, 3.0], [1.0, 2.0]]))
    assert z[0] == -np.inf and z[1] == np.inf and z[2] == np.inf and z[3] == pytest.approx(1.0)
    # +inf on both sides has no limit: still no score, never a made-up 0.5
    assert np.isnan(mapping.log_odds(np.array([[np.inf, np.inf]])))[0]
    three = OutputMapping("logits", ["real", "sd", "mj"], ["human", "ai", "ai"])
    assert three.log_odds(np.array([[0.0, np.inf, np.inf]]))[0] == np.inf
    with pytest.raises(AdapterError, match="not probabilities"):  # an infinite "probability" is not passed as one
        OutputMapping("probabilities", ["real", "fake"], ["human", "ai"]).log_odds(np.array([[np.inf, 0.0]]))


class _InfiniteReal(torch.nn.Module):
    """A head that overflows: +inf for REAL on every image."""

    def __init__(self):
        super().__init__()
        self.body = TinyCNN()

    def forward(self, x):
        out = self.body(x)
        return torch.cat([out[:, :1] * 0 + float("inf"), out[:, 1:] * 0], 1)


class _OneSoftmax(torch.nn.Module):
    """Dense(1) then a softmax: 1.0 whatever the image."""

    def __init__(self):
        super().__init__()
        self.body = TinyCNN()

    def forward(self, x):
        return torch.softmax(self.body(x)[:, 1:], dim=1).flatten(1)


def _export(module: torch.nn.Module, path: Path, sidecar: dict) -> Path:
    with warnings.catch_warnings():  # the TorchScript exporter warns it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(1, 3, 20, 24),), str(path), input_names=["pixels"],
                          output_names=["out"], dynamo=False, dynamic_axes={"pixels": {0: "n"}, "out": {0: "n"}})
    Path(f"{path}.json").write_text(json.dumps(sidecar))
    return path


def test_an_onnx_head_with_an_infinite_logit_is_judged_not_dropped(tmp_path):
    from synthdetect.api import Detector

    path = _export(_InfiniteReal(), tmp_path / "inf.onnx", ONNX_SIDECAR)
    image = write_images(tmp_path / "imgs", 1)[0]
    verdict = Detector.load(f"onnx:{path}", probes=[])([str(image)])[0]
    assert verdict.p_ai == 0.0 and verdict.label == "human"
    assert not any("no usable score" in reason for reason in verdict.reasons)
    json.loads(json.dumps(verdict.to_dict(), allow_nan=False))  # nothing NaN or infinite in the JSON


# -- adapters: a softmax over one output ----------------------------------------------------------------------------
def test_a_one_output_onnx_graph_ending_in_softmax_is_refused(tmp_path):
    path = _export(_OneSoftmax(), tmp_path / "one_softmax.onnx",
                   {**ONNX_SIDECAR, "labels": ["fake"], "output": "sigmoid_probability"})
    with pytest.raises(AdapterError) as info:
        load_model(f"onnx:{path}")
    message = str(info.value)
    assert "\n" not in message
    assert "its one output goes through a Softmax, which is 1.0 for every image" in message


# -- adapters: unstated input scaling -------------------------------------------------------------------------------
def test_a_sidecar_without_input_scaling_is_said_on_the_card_and_warned_once(tmp_path, caplog):
    path = _export(TinyCNN(), tmp_path / "noinput.onnx", {"labels": ["REAL", "FAKE"]})
    with caplog.at_level(logging.WARNING, logger="synthdetect.models.adapters"):
        model = load_model(f"onnx:{path}")
    notes = [r.getMessage() for r in caplog.records if "input scaling not stated" in r.getMessage()]
    assert len(notes) == 1 and "assumed x/255 with no mean/std normalisation" in notes[0]
    assert "input scaling not stated" in model.card["description"]
    assert "assumed x/255" in model.card["preprocessing"]["assumed"]
    caplog.clear()
    Path(f"{path}.json").write_text(json.dumps({**ONNX_SIDECAR}))  # mean and std stated: nothing assumed
    with caplog.at_level(logging.WARNING, logger="synthdetect.models.adapters"):
        stated = load_model(f"onnx:{path}")
    assert "assumed" not in stated.card["preprocessing"] and not caplog.records
