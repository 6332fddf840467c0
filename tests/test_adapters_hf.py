"""``hf:`` adapter against the transformers pipeline, on tiny ViT and Swin models built here (no hub access)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from synthdetect.api import Detector  # noqa: E402
from synthdetect.images import load_image  # noqa: E402
from synthdetect.models import load_model  # noqa: E402
from synthdetect.models.adapters.labels import AdapterError  # noqa: E402
from test_adapters import write_images  # noqa: E402

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _save(model, root: Path, size: int) -> Path:
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    with torch.no_grad():  # spread the random head so outputs are far from 0.5 and differ per image
        model.classifier.weight.normal_(0.0, 0.5)
    model.save_pretrained(root)
    ViTImageProcessorPil(size={"height": size, "width": size}, resample=3, **IMAGENET).save_pretrained(root)
    return root


def build_vit(root: Path, labels=("artificial", "human")) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, id2label=dict(enumerate(labels)),
                       label2id={name: i for i, name in enumerate(labels)})
    return _save(ViTForImageClassification(config), root, 32)


def build_swin(root: Path, labels=("REAL", "FAKE")) -> Path:
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(1)
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4,
                        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return _save(SwinForImageClassification(config), root, 32)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"vit": build_vit(root / "vit"), "swin": build_swin(root / "swin")}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("hf_imgs"), 4, seed=3, sizes=((48, 40), (32, 32), (70, 50)))


def _pipeline_p_ai(model_dir: Path, paths, ai_label: str) -> np.ndarray:
    """The reference: transformers' own image-classification pipeline, with the same (PIL) processor."""
    from transformers import AutoImageProcessor, pipeline

    processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
    pipe = pipeline("image-classification", model=str(model_dir), image_processor=processor)
    out = pipe([load_image(p).rgb for p in paths], top_k=None)
    return np.array([next(d["score"] for d in row if d["label"] == ai_label) for row in out])


@pytest.mark.parametrize("kind, ai_label", [("vit", "artificial"), ("swin", "FAKE")])
def test_adapter_equals_transformers_pipeline(hf_models, images, kind, ai_label):
    model = load_model(f"hf:{hf_models[kind]}")
    ours = 1 / (1 + np.exp(-model.logits([load_image(p) for p in images])))
    reference = _pipeline_p_ai(hf_models[kind], images, ai_label)
    spread = np.log(reference / (1 - reference))
    assert spread.max() - spread.min() > 0.05  # a constant model would make this test vacuous
    assert np.allclose(ours, reference, atol=1e-5)
    assert model.card["preprocessing"]["processor"] == "ViTImageProcessorPil"


def test_label_mapping_is_on_the_card(hf_models):
    assert load_model(f"hf:{hf_models['vit']}").card["labels"] == {"artificial": "ai", "human": "human"}
    assert load_model(f"hf:{hf_models['swin']}").card["labels"] == {"REAL": "human", "FAKE": "ai"}


def test_detector_load_gives_verdicts_with_the_models_probability(hf_models, images):
    detector = Detector.load(f"hf:{hf_models['vit']}", use_evidence=False)
    verdicts = detector([str(p) for p in images])
    reference = _pipeline_p_ai(hf_models["vit"], images, "artificial")
    assert np.allclose([v.p_ai for v in verdicts], reference, atol=1e-5)
    assert verdicts[0].models[0]["model"] == f"hf:{hf_models['vit']}"


def test_unknown_labels_and_bad_paths_give_clear_errors(tmp_path, hf_models):
    odd = build_vit(tmp_path / "catdog", labels=("cat", "dog"))
    with pytest.raises(AdapterError, match=r"cannot tell which class means AI: labels \['cat', 'dog'\]"):
        load_model(f"hf:{odd}")
    assert load_model(f"hf:{odd}?labels=cat:ai,dog:human").card["labels"] == {"cat": "ai", "dog": "human"}
    with pytest.raises(AdapterError, match="no such directory"):
        load_model(f"hf:{tmp_path}/missing")
    incomplete = tmp_path / "no_processor"
    incomplete.mkdir()
    (incomplete / "config.json").write_text((hf_models["vit"] / "config.json").read_text())
    with pytest.raises(AdapterError, match="no preprocessor_config.json"):
        load_model(f"hf:{incomplete}")
    with pytest.raises(AdapterError, match="not a local directory nor a hub id"):
        load_model("hf:just-a-name")


@pytest.mark.slow
def test_offline_from_a_local_dir_without_torchvision(hf_models, images, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and an empty cache: the local dir loads, a hub name fails clearly."""
    code = f"""
import json, sys
from synthdetect.api import Detector
from synthdetect.models import load_model
verdict = Detector.load({str('hf:' + str(hf_models['swin']))!r}, use_evidence=False)({str(images[0])!r})
try:
    load_model("hf:nobody/not-in-the-cache")
    err = None
except Exception as exc:
    err = str(exc)
print(json.dumps({{"p_ai": verdict.p_ai, "err": err, "torchvision": "torchvision" in sys.modules}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["p_ai"] == pytest.approx(_pipeline_p_ai(hf_models["swin"], images[:1], "FAKE")[0], abs=1e-5)
    assert out["torchvision"] is False
    assert out["err"].startswith("hf:nobody/not-in-the-cache: cannot load the model")
    assert "HF_HUB_OFFLINE" in out["err"] and "\n" not in out["err"]


def test_a_mistyped_local_folder_offline_is_named_without_any_network(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # already imported: make sure nothing goes out
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    with pytest.raises(AdapterError) as info:
        load_model("hf:tiny/vitfr")
    message = str(info.value)
    assert "no local folder 'tiny/vitfr'; as a hub id it needs network" in message
    assert "not in the local Hugging Face cache" in message and "\n" not in message
