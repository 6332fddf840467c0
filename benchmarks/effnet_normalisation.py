"""Which input normalisation the EfficientNet-Lite ImageNet weights expect: top-1 on labelled photos; prints JSON.

    .venv/bin/python benchmarks/effnet_normalisation.py [--manifest ../shared/datasets/wild-dev/manifest.csv] [--threads 2]

The weights come from TensorFlow's EfficientNet-Lite, whose builder normalises (x - 127) / 128; the PyTorch
package's example uses ImageNet mean/std.  The wild-dev source ``imagenet-samples`` holds ImageNet validation
photos whose file names carry their class; the 51 whose class is in ``CLASS_INDEX`` are classified by each Lite
variant under both normalisations, with the whole image resized (as ``synthdetect`` does) and with a centre crop.
Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthdetect.models import efficientnet_lite as lite

#: ImageNet-1k class index of the class names that occur in wild-dev's imagenet-samples file names.
CLASS_INDEX = dict(
    house_finch=12, magpie=18, chickadee=19, kite=21, agama=42, Gila_monster=45, scorpion=71, wombat=106,
    flatworm=110, little_blue_heron=131, dugong=149, Japanese_spaniel=152, Pekinese=154, toy_terrier=158,
    American_Staffordshire_terrier=180, Bedlington_terrier=181, Norwich_terrier=186, Airedale=191,
    Dandie_Dinmont=194, Boston_bull=195, miniature_schnauzer=196, silky_terrier=201, vizsla=211,
    English_setter=212, schipperke=223, Border_collie=232, Great_Dane=246, hyena=276, grey_fox=280,
    Egyptian_cat=285, cheetah=293, ladybug=301, rhinoceros_beetle=306, weevil=307, damselfly=320,
    sea_urchin=328, sea_cucumber=329, Angora=332, fox_squirrel=335, beaver=337, patas=371, langur=374,
    colobus=375, howler_monkey=379, spider_monkey=381, lesser_panda=387, lionfish=396, baseball=429,
    bassoon=432, beacon=437, **{"long-horned_beetle": 303},
)
NORMALISATIONS = {"imagenet mean/std": (lite.IMAGENET_MEAN, lite.IMAGENET_STD), "(x-127)/128": (lite.LITE_MEAN,
                                                                                                 lite.LITE_STD)}


def labelled_photos(manifest: Path) -> list[tuple[Path, int]]:
    items = []
    with open(manifest, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] != "imagenet-samples":
                continue
            name = row["origin"].split(":")[-1].split("_", 1)[1].rsplit(".", 1)[0]
            if name in CLASS_INDEX:
                items.append((manifest.parent / row["path"], CLASS_INDEX[name]))
    return items


def view(image: Image.Image, size: int, how: str) -> Image.Image:
    if how == "resize":
        return image.resize((size, size), Image.Resampling.BICUBIC)
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/datasets/wild-dev/manifest.csv")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.manifest.is_file():
        sys.exit(f"no manifest at {args.manifest} (wild-dev from ../shared is needed)")
    torch.set_num_threads(args.threads)
    items = labelled_photos(args.manifest)
    if not items:
        sys.exit(f"{args.manifest} lists no imagenet-samples photo of a known class")
    labels = torch.tensor([c for _, c in items])
    results = []
    for variant, spec in lite.VARIANTS.items():
        net = lite.build_network(variant, spec.image_size, 1000)
        net.load_state_dict(lite.load_imagenet_state(variant))
        net.eval()
        for how in ("resize", "centre crop"):
            pixels = torch.stack([torch.from_numpy(np.asarray(view(Image.open(p).convert("RGB"), spec.image_size,
                                                                   how), dtype=np.float32) / 255).permute(2, 0, 1)
                                  for p, _ in items])
            for name, (mean, std) in NORMALISATIONS.items():
                x = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
                with torch.no_grad():
                    logits = net(x)
                results.append({
                    "variant": variant, "view": how, "normalisation": name,
                    "top1": round(float((logits.argmax(1) == labels).float().mean()), 3),
                    "top5": round(float((logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean()), 3),
                    "nll": round(float(torch.nn.functional.cross_entropy(logits, labels)), 3)})
    print(json.dumps({"images": len(items), "results": results}, indent=1))


if __name__ == "__main__":
    main()
