"""Generation parameters, XMP/IPTC, PNG text and EXIF probes on images made here; stripped copies fall back to the model."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import build_tiny_package
from evidence_fakes import (COMFY_PROMPT, COMFY_WORKFLOW, WEBUI_PARAMETERS, c2pa_sign, camera_exif, encode,
                            exif_user_comment, make_cert_chain, png_with_text, strip_metadata, textured_rgb)
from synthdetect import Detector
from synthdetect.evidence import run_probes
from synthdetect.evidence.genparams import decode_user_comment, parse_webui_parameters
from synthdetect.images import load_image

PIXELS = textured_rgb(320, seed=7)


def _evidence(data: bytes):
    return run_probes(load_image(data))


def _genparams(data: bytes):
    return [e for e in _evidence(data) if e.kind == "genparams"]


def test_parse_webui_parameters():
    parsed = parse_webui_parameters(WEBUI_PARAMETERS)
    assert parsed["prompt"].startswith("a watercolour fox")
    assert parsed["negative_prompt"] == "blurry, lowres"
    assert parsed["settings"]["Steps"] == "28" and parsed["settings"]["Model"] == "sd_xl_base_1.0"
    assert parse_webui_parameters("just a caption, Steps: none here") is None
    assert parse_webui_parameters("") is None


def test_webui_png_chunk_is_decisive():
    record, = _genparams(png_with_text(PIXELS, {"parameters": WEBUI_PARAMETERS}))
    assert (record.signal, record.strength, record.data["tool"]) == ("ai", "decisive", "a1111")
    assert "model sd_xl_base_1.0" in record.detail and "PNG text chunk" in record.detail


def test_unstructured_parameters_chunk_is_only_moderate():
    record, = _genparams(png_with_text(PIXELS, {"parameters": "a nice picture of a cat"}))
    assert (record.signal, record.strength) == ("ai", "moderate")


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_webui_exif_user_comment(fmt):
    data = encode(PIXELS, fmt, quality=92, exif=exif_user_comment(WEBUI_PARAMETERS))
    record, = _genparams(data)
    assert (record.signal, record.strength, record.data["where"]) == ("ai", "decisive", "EXIF UserComment")
    assert record.data["settings"]["Sampler"] == "DPM++ 2M"


def test_user_comment_encodings():
    assert decode_user_comment(b"UNICODE\x00" + "Steps: 5".encode("utf-16-be")) == "Steps: 5"
    assert decode_user_comment(b"UNICODE\x00" + "Steps: 5".encode("utf-16-le")) == "Steps: 5"
    assert decode_user_comment(b"ASCII\x00\x00\x00Steps: 5") == "Steps: 5"


def test_plain_camera_user_comment_is_not_evidence():
    assert _genparams(encode(PIXELS, "JPEG", exif=exif_user_comment("Holiday in Rome", unicode=False))) == []


def test_comfyui_chunks_name_the_models():
    data = png_with_text(PIXELS, {"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)})
    record, = _genparams(data)
    assert (record.signal, record.strength, record.data["tool"]) == ("ai", "decisive", "comfyui")
    assert record.data["models"] == ["sd_xl_base_1.0.safetensors"]
    assert "KSampler" in record.data["node_types"]
    only_workflow, = _genparams(png_with_text(PIXELS, {"workflow": json.dumps(COMFY_WORKFLOW)}))
    assert only_workflow.data["models"] == ["sd_xl_base_1.0.safetensors"]


def test_other_uis_json_parameters():
    fooocus = {"prompt": "a fox", "base_model": "juggernautXL_v8Rundiffusion.safetensors", "steps": 30,
               "metadata_scheme": "fooocus"}
    record, = _genparams(png_with_text(PIXELS, {"parameters": json.dumps(fooocus)}))
    assert (record.data["tool"], record.data["model"], record.strength) == (
        "fooocus", "juggernautXL_v8Rundiffusion.safetensors", "decisive")
    swarm = {"sui_image_params": {"prompt": "a fox", "model": "OfficialStableDiffusion/sd_xl_base_1.0", "steps": 20}}
    record, = _genparams(png_with_text(PIXELS, {"parameters": json.dumps(swarm)}))
    assert record.data["tool"] == "swarmui" and "sd_xl_base_1.0" in record.detail
    novelai = {"Software": "NovelAI", "Source": "NovelAI Diffusion V3", "Comment": json.dumps({"steps": 28, "seed": 1})}
    record, = _genparams(png_with_text(PIXELS, novelai))
    assert record.data["tool"] == "novelai" and record.data["model"] == "NovelAI Diffusion V3"
    invoke = {"invokeai_metadata": json.dumps({"model": {"name": "dreamshaper-8"}, "steps": 30})}
    record, = _genparams(png_with_text(PIXELS, invoke))
    assert record.data["tool"] == "invokeai" and "dreamshaper-8" in record.detail


def test_json_that_is_not_a_comfy_graph_is_ignored():
    assert _genparams(png_with_text(PIXELS, {"prompt": json.dumps({"text": "hello"}), "workflow": "not json"})) == []


def test_xmp_digital_source_type_and_generator_tool():
    xmp = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
           'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="Adobe Firefly" '
           'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"/>'
           '</rdf:RDF></x:xmpmeta>')
    found = [e for e in _evidence(png_with_text(PIXELS, {"XML:com.adobe.xmp": xmp})) if e.kind == "metadata"]
    assert {(e.signal, e.strength) for e in found} == {("ai", "strong")}
    assert any("DigitalSourceType trainedAlgorithmicMedia" in e.detail for e in found)
    assert any("Firefly" in e.detail for e in found)


def test_png_software_editor_means_edited_and_generator_means_ai():
    edited = [e for e in _evidence(png_with_text(PIXELS, {"Software": "GIMP 2.10"})) if e.kind == "metadata"]
    assert [(e.signal, e.strength) for e in edited] == [("edited", "info")]
    generated = [e for e in _evidence(png_with_text(PIXELS, {"Software": "NovelAI"})) if e.kind == "metadata"]
    assert [(e.signal, e.strength) for e in generated] == [("ai", "strong")]


def test_midjourney_description_and_author():
    chunks = {"Description": "a cat yawning --ar 2:3 --v 6 Job ID: 72c2e986-89c9-4762-91cf-9ef8227288c1",
              "Author": "u8369211356"}
    record, = [e for e in _evidence(png_with_text(PIXELS, chunks)) if e.kind == "metadata"]
    assert (record.signal, record.strength, record.data["tool"]) == ("ai", "decisive", "midjourney")
    no_author, = [e for e in _evidence(png_with_text(PIXELS, {"Description": chunks["Description"]}))
                  if e.kind == "metadata"]
    assert no_author.strength == "strong"
    assert not [e for e in _evidence(png_with_text(PIXELS, {"Description": "my holiday photo"})) if e.signal == "ai"]


def test_camera_exif_is_weak_human_and_editor_is_edited():
    found = [e for e in _evidence(encode(PIXELS, "JPEG", exif=camera_exif())) if e.kind == "exif"]
    kinds = {(e.signal, e.strength) for e in found}
    assert ("human", "weak") in kinds and ("edited", "info") in kinds
    human = next(e for e in found if e.signal == "human")
    assert "Canon EOS 5D Mark IV" in human.detail and "f/5.6" in human.detail


def test_incomplete_camera_exif_is_not_human_evidence():
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS 5D"
    found = [e for e in _evidence(encode(PIXELS, "JPEG", exif=exif.tobytes())) if e.kind == "exif"]
    assert [(e.signal, e.strength) for e in found] == [("none", "info")]


def test_no_metadata_means_no_records_at_all():
    for fmt in ("PNG", "JPEG", "WEBP"):
        assert _evidence(encode(PIXELS, fmt)) == [], fmt


@pytest.fixture(scope="module")
def full_size_detector(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg") / "tiny-any-size"
    build_tiny_package(root, name="tiny-any-size", max_short_side=None)
    return Detector.load(str(root))


def _ai_makers() -> dict[str, bytes]:
    chain = make_cert_chain()
    return {
        "webui.png": png_with_text(PIXELS, {"parameters": WEBUI_PARAMETERS}),
        "comfy.png": png_with_text(PIXELS, {"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)}),
        "webui.jpg": encode(PIXELS, "JPEG", quality=92, exif=exif_user_comment(WEBUI_PARAMETERS)),
        "webui.webp": encode(PIXELS, "WEBP", quality=92, exif=exif_user_comment(WEBUI_PARAMETERS)),
        "c2pa.jpg": c2pa_sign(encode(PIXELS, "JPEG", quality=90), "image/jpeg", chain),
    }


def test_provenance_decides_and_stripped_copies_fall_back_to_the_model(full_size_detector):
    makers = _ai_makers()
    names = list(makers)
    with_metadata = full_size_detector.detect([makers[n] for n in names], names=names)
    for name, verdict in zip(names, with_metadata):
        if name == "c2pa.jpg":  # an unverified claim is reported but the model decides
            assert verdict.reasons[0].startswith("no decisive provenance found; model tiny-any-size")
            assert any("unverified claim" in r for r in verdict.reasons)
        else:
            assert verdict.label == "ai" and verdict.p_ai == 1.0, name
            assert "generation parameters" in verdict.reasons[0] or "ComfyUI" in verdict.reasons[0]
            assert any("provenance decides" in r for r in verdict.reasons)
    stripped = full_size_detector.detect([strip_metadata(makers[n]) for n in names], names=names)
    for name, verdict in zip(names, stripped):
        assert not [e for e in verdict.evidence if e.signal != "none"], (name, verdict.evidence)
        assert verdict.reasons[0].startswith("no provenance found; model tiny-any-size p_ai"), verdict.reasons
        assert verdict.p_ai == pytest.approx(verdict.models[0]["p_ai"])


def test_one_malformed_record_does_not_hide_a_valid_one():
    """A ComfyUI graph of odd shape (a list where a name belongs) beside valid WebUI parameters."""
    odd_graph = json.dumps({"3": {"class_type": ["KSampler"], "inputs": {"ckpt_name": ["a", "b"]}}})
    found = _genparams(png_with_text(PIXELS, {"parameters": WEBUI_PARAMETERS, "prompt": odd_graph,
                                              "invokeai_metadata": json.dumps({"image": "not a dict", "seed": 1})}))
    assert any(e.data.get("tool") == "a1111" and e.strength == "decisive" for e in found), found
    assert not any(e.data.get("probe_failed") for e in found), found


def test_invokeai_chunk_names_are_decisive_only_with_invokeai_settings():
    dream = '"a castle on a hill" -s 50 -S 1234 -W 512 -H 512 -C 7.5 -A k_lms'
    record, = _genparams(png_with_text(PIXELS, {"Dream": dream}))
    assert (record.signal, record.strength) == ("ai", "decisive")
    for chunks in ({"Dream": "my holiday photo"}, {"invokeai_metadata": "true"}, {"sd-metadata": "[1]"}):
        record, = _genparams(png_with_text(PIXELS, chunks))
        assert (record.signal, record.strength) == ("ai", "moderate"), chunks
        assert "without InvokeAI's settings" in record.detail


def test_xmp_resource_form_and_packets_that_are_not_well_formed():
    resource = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
                '<Iptc4xmpExt:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/digitalsourcetype/'
                'trainedAlgorithmicMedia"/></rdf:Description></rdf:RDF></x:xmpmeta>')
    undeclared = resource.replace(' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"', "")
    for xmp, note in ((resource, False), (undeclared, True)):
        found = [e for e in _evidence(png_with_text(PIXELS, {"XML:com.adobe.xmp": xmp})) if e.kind == "metadata"]
        assert [(e.signal, e.strength) for e in found] == [("ai", "strong")], xmp
        assert ("not well-formed" in found[0].detail) is note


@pytest.mark.parametrize("make, model, software", [
    ("Hawkeye", "Firefly 8SE", None),  # an action camera line
    ("Canon", "Canon EOS R6", "Visor de imagen 2.1"),  # Spanish "imagen": image
    ("Gemini", "Gemini PDA", None),
])
def test_ordinary_words_that_name_a_generator_elsewhere_are_not_ai_in_exif(make, model, software):
    """A bare "Firefly", "Imagen" or "Gemini" in EXIF Make/Model/Software was strong AI evidence on camera photos."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    if software:
        exif[0x0131] = software
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x829A], sub[0x829D], sub[0x8827] = "2021:06:05 14:22:01", 0.004, 5.6, 200
    found = [e for e in _evidence(encode(PIXELS, "JPEG", exif=exif.tobytes())) if e.kind in ("exif", "metadata")]
    assert not [e for e in found if e.signal == "ai"], [e.detail for e in found]
    assert ("human", "weak") in {(e.signal, e.strength) for e in found}


@pytest.mark.parametrize("software", ["Adobe Firefly", "Google Imagen 3", "Grok Imagine"])
def test_a_generator_named_in_its_own_form_is_still_ai(software):
    found = [e for e in _evidence(png_with_text(PIXELS, {"Software": software})) if e.kind == "metadata"]
    assert ("ai", "strong") in {(e.signal, e.strength) for e in found}, [e.detail for e in found]
