"""Throughput of `synthdetect scan` against its floors and a naive transformers loop; prints JSON.

    .venv/bin/python benchmarks/scan_throughput.py --files 2000 --cores 2 --rss-files 20000

What is compared (all on the same generated JPEGs of about 1-4 MP, pinned to ``--cores`` CPUs):

(a) decode only: ``synthdetect.images.load_image`` in one process per core (full decode; and with
    JPEG draft mode at the model's 224 px input, and at 3x it as ``scan --draft --draft-factor 3`` asks);
(b) model only on pre-decoded, preprocessed 224 px tensors: the ONNX Runtime session ``scan`` uses,
    and the same network in eager torch;
(c) ``synthdetect scan`` (a real subprocess: discovery, decode workers, batched Detector, SQLite);
(d) a naive loop calling a transformers ``image-classification`` pipeline file by file.

The network is the same everywhere: a MobileNetV2 (transformers' implementation, 2 classes, random
weights: throughput does not depend on the weight values) — saved for (d), exported to ONNX inside an
``onnx-classifier`` package for (b) and (c).  Preprocessing differs as each tool does it: the
pipeline resizes the short side to 256 and centre-crops 224, synthdetect resizes to 224x224.

Peak memory of the scan's whole process tree (scan + decode workers) is sampled from /proc while it
runs, over ``--rss-files`` files (small JPEGs, because memory should depend on the number of files,
not their size; say so when reporting).  Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYNTHDETECT = Path(sys.executable).with_name("synthdetect")
SIZES = [(1152, 864), (1280, 960), (1600, 1200), (2048, 1536), (2304, 1728)]  # 1.0 - 4.0 MP


# -- data ----------------------------------------------------------------------------------------
def _make_jpeg(args: tuple[int, str, tuple[int, int] | None]) -> int:
    from PIL import Image, ImageDraw

    index, path, size = args
    rng = np.random.default_rng(index)
    w, h = size or SIZES[index % len(SIZES)]
    small = rng.integers(0, 256, (h // 64 + 2, w // 64 + 2, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)  # smooth, photo-like gradients
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(8, w // 3)), y0 + int(rng.integers(8, h // 3))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noise = rng.integers(-6, 7, (h, w, 3), dtype=np.int16)  # sensor-like grain, so files are not tiny
    arr = np.clip(np.asarray(im, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def make_folder(folder: Path, n: int, cores: int, size: tuple[int, int] | None = None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob("*.jpg"))
    if len(existing) != n:
        for p in existing:
            p.unlink()
        jobs = [(i, str(folder / f"img{i:06d}.jpg"), size) for i in range(n)]
        with mp.get_context("spawn").Pool(cores) as pool:
            list(pool.imap_unordered(_make_jpeg, jobs, chunksize=8))
    files = sorted(folder.glob("*.jpg"))
    total = sum(p.stat().st_size for p in files)
    return {"files": len(files), "mean_bytes": round(total / max(len(files), 1)),
            "sizes": [f"{w}x{h}" for w, h in ([size] if size else SIZES)]}


# -- the model -------------------------------------------------------------------------------------
def build_models(workdir: Path) -> tuple[Path, Path]:
    """A random-weight transformers MobileNetV2 saved for the pipeline, and its ONNX package."""
    import torch
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    from synthdetect.models.onnx_backend import export_module
    from synthdetect.models.package import write_package

    hf_dir, package = workdir / "hf-mobilenet-v2", workdir / "mobilenet-v2-onnx"
    if (package / "model.json").is_file() and (hf_dir / "config.json").is_file():
        return hf_dir, package
    torch.manual_seed(0)
    config = MobileNetV2Config(num_labels=2, id2label={0: "human", 1: "ai"}, label2id={"human": 0, "ai": 1})
    model = MobileNetV2ForImageClassification(config).eval()
    model.save_pretrained(hf_dir)

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(pixel_values=x).logits

    package.mkdir(parents=True, exist_ok=True)
    onnx_path = export_module(Logits(model), package / "model.onnx", (224, 224))
    card = {
        "name": "mobilenet-v2-bench", "version": "0", "kind": "onnx-classifier",
        "description": "Random-weight MobileNetV2 (transformers' implementation) for throughput benchmarks only.",
        "input": {"size": [224, 224], "resample": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
                  "min_side": 32, "max_aspect": 4.0},
        "output": {"ai_index": 1, "human_index": 0},
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    write_package(package, card, {"onnx": onnx_path})
    return hf_dir, package


# -- (a) decode only ---------------------------------------------------------------------------------
def _decode_chunk(args: tuple[list[str], tuple[int, int] | None]) -> int:
    from synthdetect.images import LoadLimits, load_image

    paths, draft = args
    for p in paths:
        load_image(p, LoadLimits(), name=p, draft_size=draft)
    return len(paths)


def decode_only(files: list[str], cores: int, draft: tuple[int, int] | None) -> float:
    chunks = [(files[i : i + 16], draft) for i in range(0, len(files), 16)]
    with mp.get_context("spawn").Pool(cores) as pool:
        pool.map(_decode_chunk, chunks[:cores])  # warm the processes (imports) outside the timing
        t0 = time.perf_counter()
        n = sum(pool.imap_unordered(_decode_chunk, chunks))
        return n / (time.perf_counter() - t0)


# -- (b) model only ------------------------------------------------------------------------------------
def network_input(model, images):
    """The batch ``model.forward`` takes, built by the model's own prepare step (its resize and normalisation)."""
    return model.batch([model.prepare(im) for im in images])


def model_only(files: list[str], package: Path, hf_dir: Path, cores: int, batch: int, seconds: float) -> dict:
    import torch
    from transformers import MobileNetV2ForImageClassification

    from synthdetect.images import load_image
    from synthdetect.models import load_model

    torch.set_num_threads(cores)
    model = load_model(str(package))
    images = [load_image(p) for p in files[:batch]]
    x = network_input(model, images)  # pre-decoded, preprocessed tensors: only the network is timed

    def rate(fn) -> float:
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += batch
        return n / (time.perf_counter() - t0)

    hf = MobileNetV2ForImageClassification.from_pretrained(hf_dir).eval()
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        torch_rate = rate(lambda: hf(pixel_values=xt).logits)
    onnx_rate = rate(lambda: model.forward(x))
    return {"onnxruntime": round(onnx_rate, 2), "torch_eager": round(torch_rate, 2),
            "onnx_speedup_over_torch": round(onnx_rate / torch_rate, 2), "batch": batch}


def cnn_half(root: Path, out: Path) -> str:
    """The shipped cifake-cnn's small CNN as a ``small-cnn`` package of its own: 2.0.0 is a ``clip-cascade``, which
    ONNX export refuses (the export would cover the CNN alone), but the CNN is what runs on every image."""
    import json
    import shutil

    from synthdetect.models.package import write_package

    card = json.loads((root / "model.json").read_text())
    if card["kind"] != "clip-cascade":
        return str(root)
    out.mkdir(parents=True)
    shutil.copy(root / card["files"]["weights"]["path"], out / "weights.pt")
    small = {key: card[key] for key in ("labels", "architecture", "input", "calibration") if key in card}
    small.update({"name": f"{card['name']}-cnn", "version": card["version"], "kind": "small-cnn"})
    write_package(out, small, {"weights": out / "weights.pt"})
    return str(out)


def small_cnn_backends(cores: int, batch: int, seconds: float) -> dict | None:
    """ONNX Runtime vs eager torch for the shipped cifake-cnn's CNN at its 32 px input, if it is trained."""
    import tempfile

    import torch

    from synthdetect.models import BUILTIN_DIR, load_model
    from synthdetect.models.onnx_backend import export_package, parity_images

    if not (BUILTIN_DIR / "cifake-cnn" / "model.json").is_file():
        return None
    torch.set_num_threads(cores)
    with tempfile.TemporaryDirectory() as tmp:
        source = cnn_half(BUILTIN_DIR / "cifake-cnn", Path(tmp) / "cifake-cnn-cnn")
        package = export_package(source, Path(tmp) / "cifake-onnx")
        onnx_model = load_model(str(package.root))
        os.environ["SYNTHDETECT_BACKEND"] = "torch"
        torch_model = load_model(str(package.root))
        del os.environ["SYNTHDETECT_BACKEND"]
        images = (parity_images((32, 32), n=batch, seed=1))
        out = {}
        for name, m in (("onnxruntime", onnx_model), ("torch_eager", torch_model)):
            x = network_input(m, images)
            m.forward(x)
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                m.forward(x)
                n += batch
            out[name] = round(n / (time.perf_counter() - t0), 1)
        out["onnx_speedup_over_torch"] = round(out["onnxruntime"] / out["torch_eager"], 2)
        out["batch"] = batch
        out["parity"] = package.card["runtime"]["parity"]
        return out


# -- (c) synthdetect scan ------------------------------------------------------------------------------
def _tree_memory(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            text = open(f"/proc/{pid}/smaps_rollup").read()
        except OSError:
            continue
        rss += int(re.search(r"^Rss:\s+(\d+)", text, re.M).group(1)) * 1024
        pss += int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1)) * 1024
    return rss, pss


def run_scan(folder: Path, package: Path, db: Path, cores: int, extra: list[str]) -> dict:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    command = [str(SYNTHDETECT), "-q", "scan", str(folder), "--out", str(db), "-m", str(package),
               "--summary-json", *extra]
    peak = {"rss": 0, "pss": 0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, range(cores)))
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, pss = _tree_memory(proc.pid)
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"scan failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads(out)
    return {"files": summary["judged"] + summary["from_cache"], "errors": summary["errors"],
            "images_per_s": summary["files_per_s"], "seconds": summary["seconds"],
            "wall_seconds_with_startup": round(wall, 2),
            "images_per_s_with_startup": round((summary["judged"] + summary["from_cache"]) / wall, 2),
            "peak_rss_mb": round(peak["rss"] / 2**20), "peak_pss_mb": round(peak["pss"] / 2**20),
            "workers": summary["workers"], "batch_size": summary["batch_size"], "args": extra}


# -- (d) naive transformers loop -------------------------------------------------------------------------
def naive_pipeline(files: list[str], hf_dir: Path, cores: int) -> float:
    import torch
    from transformers import MobileNetV2ForImageClassification, pipeline
    from transformers.models.mobilenet_v2 import MobileNetV2ImageProcessorPil

    torch.set_num_threads(cores)
    model = MobileNetV2ForImageClassification.from_pretrained(hf_dir).eval()
    classify = pipeline("image-classification", model=model, image_processor=MobileNetV2ImageProcessorPil(),
                        device="cpu")
    classify(files[0])
    t0 = time.perf_counter()
    for path in files:
        classify(path)
    return len(files) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/synthdetect-scan-bench"))
    parser.add_argument("--files", type=int, default=2000, help="JPEGs of 1-4 MP for (a)-(d)")
    parser.add_argument("--naive-files", type=int, default=300, help="files the naive loop (d) judges")
    parser.add_argument("--rss-files", type=int, default=20000, help="small JPEGs for the memory run (0: skip)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model-seconds", type=float, default=15.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, range(args.cores))
    args.workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"cores": args.cores, "cpu": _cpu_name(), "load_average_at_start": os.getloadavg(),
                    "args": vars(args) | {"workdir": str(args.workdir)}}
    partial = args.workdir / "partial.json"

    def checkpoint() -> None:  # a long run that is stopped still leaves what it measured
        partial.write_text(json.dumps(result, indent=2))

    t0 = time.perf_counter()
    folder = args.workdir / "jpegs"
    result["data"] = make_folder(folder, args.files, args.cores)
    result["data"]["generate_seconds"] = round(time.perf_counter() - t0, 1)
    files = [str(p) for p in sorted(folder.glob("*.jpg"))]
    hf_dir, package = build_models(args.workdir)
    result["model"] = ("MobileNetV2 (transformers implementation, 2 classes, random weights, 224 px): "
                       "(b)/(c) run its ONNX export in an onnx-classifier package through ONNX Runtime, "
                       "(d) runs it in eager torch through transformers' image-classification pipeline "
                       "with the PIL image processor")

    checkpoint()
    result["a_decode_only"] = {"full_decode": round(decode_only(files, args.cores, None), 2),
                               "draft_224": round(decode_only(files, args.cores, (224, 224)), 2),
                               "draft_672": round(decode_only(files, args.cores, (672, 672)), 2)}
    checkpoint()
    result["b_model_only"] = model_only(files, package, hf_dir, args.cores, args.batch, args.model_seconds)
    small = small_cnn_backends(args.cores, 64, args.model_seconds / 2)
    if small:
        result["b_model_only_cifake_cnn_32px"] = small
    checkpoint()
    db = args.workdir / "scan.sqlite"
    result["c_scan"] = run_scan(folder, package, db, args.cores, ["--batch-size", str(args.batch)])
    checkpoint()
    result["c_scan_draft"] = run_scan(folder, package, db, args.cores, ["--batch-size", str(args.batch), "--draft"])
    checkpoint()
    result["c_scan_draft_x3"] = run_scan(folder, package, db, args.cores,
                                         ["--batch-size", str(args.batch), "--draft", "--draft-factor", "3"])
    checkpoint()
    # The same scans without evidence probes: (b) and (d) run no probes, so this is the like-for-like pair.
    result["c_scan_no_evidence"] = run_scan(folder, package, db, args.cores,
                                            ["--batch-size", str(args.batch), "--no-evidence"])
    checkpoint()
    result["c_scan_no_evidence_draft"] = run_scan(folder, package, db, args.cores,
                                                  ["--batch-size", str(args.batch), "--no-evidence", "--draft"])
    checkpoint()
    result["d_naive_pipeline"] = {"images_per_s": round(naive_pipeline(files[: args.naive_files], hf_dir,
                                                                        args.cores), 2),
                                  "files": min(args.naive_files, len(files))}

    checkpoint()
    d = result["d_naive_pipeline"]["images_per_s"]
    a, b = result["a_decode_only"], result["b_model_only"]["onnxruntime"]
    result["targets"] = {}
    for name in ("c_scan", "c_scan_draft", "c_scan_draft_x3", "c_scan_no_evidence", "c_scan_no_evidence_draft"):
        c = result[name]["images_per_s"]
        decode = a["draft_672"] if name.endswith("_x3") else a["draft_224"] if "draft" in name else a["full_decode"]
        # (a) and (b) each had every core to itself; a scan decodes and infers on the same cores, so even a
        # perfect pipeline with zero overhead runs at 1 / (1/a + 1/b), the bound reported beside the target.
        shared = 1.0 / (1.0 / decode + 1.0 / b)
        result["targets"][name] = {"over_d": round(c / d, 2), "over_min_a_b": round(c / min(decode, b), 2),
                                   "shared_core_bound": round(shared, 2), "over_shared_core_bound": round(c / shared, 2)}
    checkpoint()
    if args.rss_files:
        small_folder = args.workdir / "small-jpegs"
        result["rss_data"] = make_folder(small_folder, args.rss_files, args.cores, size=(320, 240))
        result["rss_scan"] = run_scan(small_folder, package, args.workdir / "rss.sqlite", args.cores,
                                      ["--batch-size", str(args.batch)])
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
