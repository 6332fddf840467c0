"""``hf:`` local directories that are damaged or inconsistent: one clear error at load, not a traceback or the
same failure for every image.  Tiny ViTs built here; skipped where transformers is not installed."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed (pip install 'synthdetect[hf]')")

from synthdetect.models import load_model  # noqa: E402
from synthdetect.models.adapters.labels import AdapterError  # noqa: E402
from test_adapters_hf import build_vit  # noqa: E402


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return build_vit(tmp_path_factory.mktemp("audit_hf") / "vit")


def test_truncated_weights_are_a_one_line_error(vit, tmp_path):
    """A cut-short model.safetensors raised safetensors' SafetensorError as a traceback."""
    damaged = shutil.copytree(vit, tmp_path / "damaged")
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(AdapterError) as info:
        load_model(f"hf:{damaged}")
    message = str(info.value)
    assert message.startswith(f"hf:{damaged}: cannot load the model: ") and "\n" not in message


def test_a_processor_config_the_model_refuses_is_caught_at_load(vit, tmp_path):
    """An empty preprocessor_config.json means transformers' default 224 px, which this 32 px ViT refuses: it
    loaded, then every image failed with "model failed (ValueError: Input image size (224*224) doesn't match"."""
    odd = shutil.copytree(vit, tmp_path / "odd")
    (odd / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ViTImageProcessor"}))
    with pytest.raises(AdapterError, match=r"the model refuses what its preprocessor_config.json produces: "
                                           r"Input image size \(224\*224\) doesn't match model \(32\*32\)"):
        load_model(f"hf:{odd}")
    assert load_model(f"hf:{vit}").card["preprocessing"]["size"] == {"height": 32, "width": 32}


def test_a_revision_for_a_local_directory_is_refused_not_written_on_the_card(vit):
    """transformers ignores revision for a folder, yet the card said "revision": "v9.9" for what it loaded."""
    with pytest.raises(AdapterError, match="revision is for hub ids; a local directory holds one version"):
        load_model(f"hf:{vit}?revision=v9.9")
