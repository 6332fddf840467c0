"""Generation parameters that generator UIs embed in their own output.

Stable Diffusion WebUI (AUTOMATIC1111, Forge, SD.Next) writes a ``parameters``
text: the prompt, then ``Steps: 20, Sampler: ..., Seed: ..., Model: ...`` --
in a PNG text chunk, or in EXIF UserComment for JPEG/WebP.  ComfyUI writes
its node graph as ``prompt`` (API form) and ``workflow`` (editor form) JSON;
Fooocus and SwarmUI write ``parameters`` as JSON; InvokeAI writes
``invokeai_metadata``; NovelAI a ``Comment`` JSON with ``Software: NovelAI``.

Decisive, on purpose: these structured records are written by the generator
itself and by nothing else, which is what the product promises to recognise
("when images carry the generator's own parameters the answer should be
certain").  They are unsigned and can be forged or copied onto another image;
the README says so, and every such verdict names the record it relied on.  A
``parameters`` text without the WebUI's structure is only moderate.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from synthdetect.evidence import clipped, register_probe
from synthdetect.evidence.exif import parse_exif
from synthdetect.images import LoadedImage
from synthdetect.verdict import Evidence

EXIF_USER_COMMENT = 0x9286

#: The settings line the WebUI writes after the prompt; at least two of these keys make it structured.
_WEBUI_KEYS = ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Schedule type")
_WEBUI_FIELD = re.compile(r"(?:^|,\s*)([A-Z][\w ]{1,30}):\s*(\"[^\"]*\"|[^,]*)")

#: ComfyUI node types whose inputs name the weights used.
_COMFY_MODEL_INPUTS = ("ckpt_name", "unet_name", "model_name", "lora_name", "clip_name", "clip_name1",
                       "clip_name2", "vae_name", "diffusion_model")


_MODELS_SHOWN = 6  # model files named in a reason; all of them are in the record's data


def _shown(value: Any, limit: int = 80) -> str:
    """A value as a reason shows it: on one line (parameters are free text), and short."""
    return clipped(" ".join(str(value).split()), limit)


def parse_webui_parameters(text: str) -> dict[str, Any] | None:
    """Split a WebUI ``parameters`` text into prompt, negative prompt and settings; None if it has no settings line."""
    lines = text.strip().splitlines()
    if not lines:
        return None
    settings_line = lines[-1]
    settings = {m.group(1).strip(): m.group(2).strip().strip('"') for m in _WEBUI_FIELD.finditer(settings_line)}
    if sum(1 for key in _WEBUI_KEYS if key in settings) < 2 or "Steps" not in settings:
        return None
    body = "\n".join(lines[:-1])
    prompt, _, negative = body.partition("Negative prompt:")
    return {"prompt": prompt.strip(), "negative_prompt": negative.strip(), "settings": settings}


def _text_value(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value.strip() else None


def decode_user_comment(raw: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset header then text (UNICODE is UTF-16, byte order varies by writer)."""
    if isinstance(raw, str):
        return raw
    header, body = raw[:8], raw[8:]
    if header.startswith(b"UNICODE"):
        return _decode_utf16(body)
    if header.startswith(b"ASCII") or header == b"\x00" * 8:
        return body.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _decode_utf16(body: bytes) -> str:
    """UTF-16 in the writer's byte order: piexif (the WebUI) writes big-endian, exiftool the EXIF's own (often little).

    A byte-order mark decides; a body without zero bytes that is valid UTF-8 is UTF-8; otherwise ASCII characters
    (the settings line, spaces, punctuation) put their zero byte first in big-endian and second in little-endian;
    text with no ASCII at all is read the way that gives fewer unassigned, private-use or unpaired-surrogate
    characters.
    """
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return body.decode("utf-16", "replace")
    if body and 0 not in body:  # UTF-16 text always has zero bytes (ASCII, spaces); some writers put UTF-8 here
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            pass
    body = body[: len(body) // 2 * 2]
    zeros_first, zeros_second = body[0::2].count(0), body[1::2].count(0)
    if zeros_first != zeros_second:
        return body.decode("utf-16-be" if zeros_first > zeros_second else "utf-16-le", "replace")
    readings = [body.decode(codec, "replace") for codec in ("utf-16-be", "utf-16-le")]
    return min(readings, key=lambda text: sum(ch == "\ufffd" or unicodedata.category(ch) in ("Cn", "Co", "Cs")
                                              for ch in text))


def exif_user_comment(image: LoadedImage) -> str | None:
    parsed = parse_exif(image)
    value = None if parsed is None else parsed[1].get(EXIF_USER_COMMENT)
    if value is None:
        return None
    text = decode_user_comment(value)
    return text.strip("\x00 ").strip() or None


@register_probe("genparams")
def probe_genparams(image: LoadedImage) -> list[Evidence]:
    found: list[Evidence] = []
    parameters = _text_value(image.info.get("parameters"))
    where = "PNG text chunk 'parameters'"
    if parameters is None:
        parameters, where = exif_user_comment(image), "EXIF UserComment"
    readers = [("WebUI parameters", lambda: _webui(parameters, where, from_png=where.startswith("PNG"))
                if parameters else []), ("ComfyUI graph", lambda: _comfyui(image)),
               ("InvokeAI record", lambda: _invokeai(image)), ("NovelAI record", lambda: _novelai(image))]
    for name, read in readers:
        try:  # one malformed record must not hide another tool's valid one in the same file
            found.extend(read())
        except Exception as exc:  # noqa: BLE001 - records are untrusted input of any shape
            found.append(Evidence("genparams", "none", "info", f"{name} present but unreadable ({type(exc).__name__}: "
                                  f"{str(exc)[:120]})", {"probe_failed": True, "error": str(exc)[:200]}))
    return found


def _json_parameters(text: str, where: str) -> list[Evidence]:
    """Fooocus and SwarmUI write ``parameters`` as JSON instead of the WebUI's text form."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("sui_image_params"), dict):
        params = data["sui_image_params"]
        tool, model = "swarmui", params.get("model")
    elif "base_model" in data or data.get("metadata_scheme") == "fooocus" or "fooocus" in str(data.get("version", "")).lower():
        params = data
        tool, model = "fooocus", data.get("base_model")
    else:
        return []
    name = {"swarmui": "SwarmUI", "fooocus": "Fooocus"}[tool]
    detail = f"{name} generation parameters in {where}" + (f" (model {_shown(model)})" if model else "")
    settings = {k: params.get(k) for k in ("steps", "seed", "sampler", "cfgscale", "guidance_scale") if k in params}
    return [Evidence("genparams", "ai", "decisive", detail, {"tool": tool, "where": where, "model": model,
                                                             "settings": settings})]


def _webui(text: str, where: str, from_png: bool) -> list[Evidence]:
    if text.lstrip().startswith("{") and (found := _json_parameters(text, where)):
        return found
    parsed = parse_webui_parameters(text)
    if parsed is None:
        if not from_png:
            return []  # a free-text UserComment is common in camera files and means nothing
        return [Evidence("genparams", "ai", "moderate",
                         f"{where} present but without the WebUI settings line", {"tool": "unknown", "text": text[:500]})]
    settings = parsed["settings"]
    model = settings.get("Model") or (f"hash {settings['Model hash']}" if "Model hash" in settings else None)
    version = settings.get("Version")
    detail = f"Stable Diffusion WebUI generation parameters in {where}"
    extras = [f"model {_shown(model)}" if model else None, f"{_shown(settings.get('Steps'), 20)} steps",
              f"sampler {_shown(settings['Sampler'])}" if "Sampler" in settings else None,
              f"version {_shown(version)}" if version else None]
    detail += " (" + ", ".join(e for e in extras if e) + ")"
    return [Evidence("genparams", "ai", "decisive", detail,
                     {"tool": "a1111", "where": where, "model": model, "settings": settings,
                      "prompt": parsed["prompt"][:1000], "negative_prompt": parsed["negative_prompt"][:500]})]


def _json(value: Any) -> Any:
    text = _text_value(value)
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def comfy_models(prompt: Any, workflow: Any) -> list[str]:
    """Weights named in a ComfyUI graph (API ``prompt`` nodes, else the editor ``workflow`` widgets)."""
    names: list[str] = []
    if isinstance(prompt, dict):
        for node in prompt.values():
            inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
            for key in _COMFY_MODEL_INPUTS:
                if isinstance(inputs.get(key), str):
                    names.append(inputs[key])
    if not names and isinstance(workflow, dict):
        for node in workflow.get("nodes", []) or []:
            if not isinstance(node, dict) or "Loader" not in str(node.get("type", "")):
                continue
            for value in node.get("widgets_values", []) or []:
                if isinstance(value, str) and value.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".gguf", ".sft")):
                    names.append(value)
    return list(dict.fromkeys(names))


def _is_comfy_prompt(prompt: Any) -> bool:
    return isinstance(prompt, dict) and any(isinstance(n, dict) and "class_type" in n for n in prompt.values())


def _is_comfy_workflow(workflow: Any) -> bool:
    return isinstance(workflow, dict) and isinstance(workflow.get("nodes"), list) and "last_node_id" in workflow


#: EXIF tags where ComfyUI's WebP saver (and JPEG/WebP savers that follow it) writes ``key:JSON``: the API prompt
#: in Model, ``workflow`` in Make, further extra-info keys in the tags just below.
_COMFY_EXIF_TAGS = {0x0110: "Model", 0x010F: "Make", 0x010E: "ImageDescription", 0x010D: "DocumentName"}


def _comfy_exif(image: LoadedImage) -> dict[str, tuple[str, str]]:
    """``prompt`` / ``workflow`` -> (JSON text, EXIF tag name) from ComfyUI's EXIF envelopes."""
    parsed = parse_exif(image)
    found: dict[str, tuple[str, str]] = {}
    for tag, tag_name in _COMFY_EXIF_TAGS.items() if parsed else ():
        key, sep, rest = (_text_value(parsed[0].get(tag)) or "").partition(":")
        if sep and key in ("prompt", "workflow"):
            found.setdefault(key, (rest, tag_name))
    return found


def _comfyui(image: LoadedImage) -> list[Evidence]:
    prompt, workflow = _json(image.info.get("prompt")), _json(image.info.get("workflow"))
    has_prompt, has_workflow = _is_comfy_prompt(prompt), _is_comfy_workflow(workflow)
    where = "PNG text chunk(s)"
    if not (has_prompt or has_workflow) and (envelopes := _comfy_exif(image)):
        prompt, workflow = (_json(envelopes.get(key, (None,))[0]) for key in ("prompt", "workflow"))
        has_prompt, has_workflow = _is_comfy_prompt(prompt), _is_comfy_workflow(workflow)
        where = "EXIF " + " and ".join(f"{envelopes[key][1]} ('{key}:')" for key, ok in
                                       (("prompt", has_prompt), ("workflow", has_workflow)) if ok)
    if not (has_prompt or has_workflow):
        return []
    models = comfy_models(prompt if has_prompt else None, workflow if has_workflow else None)
    node_types = sorted({str(n["class_type"]) for n in prompt.values() if isinstance(n, dict) and "class_type" in n}) \
        if has_prompt else sorted({str(n.get("type")) for n in workflow["nodes"] if isinstance(n, dict)})
    chunks = " and ".join(name for name, ok in (("prompt", has_prompt), ("workflow", has_workflow)) if ok)
    detail = f"ComfyUI node graph in PNG text chunk(s) {chunks}" if where.startswith("PNG") else \
        f"ComfyUI node graph in {where}"
    shown = [_shown(m) for m in models[:_MODELS_SHOWN]] + ([f"and {len(models) - _MODELS_SHOWN} more"]
                                                           if len(models) > _MODELS_SHOWN else [])
    detail += f" (models: {', '.join(shown)})" if models else " (no model file named)"
    return [Evidence("genparams", "ai", "decisive", detail,
                     {"tool": "comfyui", "where": where, "models": models, "node_types": node_types[:50]})]


#: Keys an InvokeAI metadata record carries (any one of them makes a JSON object a record, not a stray value).
_INVOKE_KEYS = frozenset({"model", "model_weights", "steps", "seed", "cfg_scale", "positive_prompt", "prompt",
                          "scheduler", "sampler", "image", "generation_mode", "app_version"})
#: InvokeAI's "Dream" command line: a quoted prompt followed by flags such as -s 50 -S 42 -W 512 -C 7.5.
_DREAM_FLAGS = re.compile(r"\s-(?:s|S|W|H|C|A)\s*[\w.]+")


def _invokeai(image: LoadedImage) -> list[Evidence]:
    for key in ("invokeai_metadata", "sd-metadata", "Dream"):
        meta = _json(image.info.get(key)) if key != "Dream" else _text_value(image.info.get(key))
        if not meta:
            continue
        model = None
        if isinstance(meta, dict):
            image_part = meta.get("image") if isinstance(meta.get("image"), dict) else {}
            raw_model = meta.get("model") or image_part.get("model")
            model = raw_model.get("name") if isinstance(raw_model, dict) else raw_model
            model = model if isinstance(model, str) else None
        structured = (isinstance(meta, dict) and bool(_INVOKE_KEYS & set(meta))) or (
            isinstance(meta, str) and len(_DREAM_FLAGS.findall(meta)) >= 2)
        if not structured:  # the chunk name alone: unsigned and free to write, so not decisive
            return [Evidence("genparams", "ai", "moderate", f"PNG text chunk '{key}' (an InvokeAI name) present but "
                             f"without InvokeAI's settings", {"tool": "invokeai", "text": str(meta)[:200]})]
        detail = f"InvokeAI generation metadata in PNG text chunk '{key}'" + (
            f" (model {_shown(model)})" if model else "")
        return [Evidence("genparams", "ai", "decisive", detail, {"tool": "invokeai", "model": model})]
    return []


def _novelai(image: LoadedImage) -> list[Evidence]:
    software = _text_value(image.info.get("Software"))
    comment = _json(image.info.get("Comment"))
    if software and software.strip() == "NovelAI" and isinstance(comment, dict) and "steps" in comment:
        source = _text_value(image.info.get("Source")) or "NovelAI"
        return [Evidence("genparams", "ai", "decisive", f"NovelAI generation parameters ({_shown(source)})",
                         {"tool": "novelai", "model": source, "settings": {k: comment.get(k) for k in
                                                                           ("steps", "sampler", "seed", "scale")}})]
    return []
