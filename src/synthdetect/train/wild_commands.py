"""``synthdetect train-wild``: leave-one-source-out selection and the full-size model package."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train-wild")
    def train_wild(
        data: Annotated[str, typer.Argument(help="CSV manifest with path,label,source columns (e.g. wild-dev).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the model package.")],
        name: Annotated[Optional[str], typer.Option(help="Name written on the card (default: the folder name).")] = None,
        extractors: Annotated[str, typer.Option(help="Comma-separated feature extractors to consider.")] =
            "clip-vit-b16-f32,handcrafted-v1",
        package_version: Annotated[str, typer.Option(help="Version written on the card (a retrained package of the "
                                                          "same name gets a new one).")] = "1.0.0",
        crops: Annotated[int, typer.Option(help="Native-resolution crops per image (plus one global view).")] = 4,
        crop_size: Annotated[int, typer.Option(help="Crop side in pixels.")] = 224,
        global_short_side: Annotated[Optional[int], typer.Option(
            help="Shrink each image to this short side (Lanczos) before its global view: a thumbnail view.")] = None,
        global_jpeg_quality: Annotated[Optional[int], typer.Option(
            help="Re-encode that thumbnail as JPEG at this quality, so every source has the same compression.")] = None,
        candidate: Annotated[Optional[str], typer.Option(help="Ship this candidate instead of the LOSO winner.")] = None,
        cache: Annotated[Optional[Path], typer.Option(help="Feature cache (default ~/.cache/synthdetect/features or "
                                                           "$SYNTHDETECT_CACHE/features).")] = None,
        report: Annotated[Optional[Path], typer.Option(help="Write the full LOSO report (JSON) here.")] = None,
        benchmark: Annotated[Optional[Path], typer.Option(help="JSON from benchmarks/wild_peers.py to embed in the card.")] = None,
        min_side: Annotated[int, typer.Option(help="Smallest short side the model judges.")] = 32,
        embed_benchmark_only: Annotated[bool, typer.Option(
            help="Only add --benchmark to the card of the package already at --out (weights untouched).")] = False,
    ) -> None:
        """Choose a full-size model by leave-one-source-out and write it as a package."""
        if embed_benchmark_only:
            from synthdetect.train.wild import embed_benchmark

            if benchmark is None:
                raise typer.BadParameter("--embed-benchmark-only needs --benchmark", param_hint="--benchmark")
            package = embed_benchmark(out, json.loads(benchmark.read_text()))
            typer.echo(f"added the peers benchmark to {package.root / 'model.json'} and MODEL_CARD.md")
            return
        from rich.console import Console
        from rich.table import Table

        from synthdetect.models.multicrop import CropPolicy
        from synthdetect.train.datasets import open_dataset
        from synthdetect.train.wild import (WildData, choose, dump_json, per_source_table, public,
                                            run_loso, write_wild_package)
        from synthdetect.train.wild_features import extract_cached

        console = Console(stderr=True, width=max(Console().width, 120))  # tables stay readable in a log
        names = [e.strip() for e in extractors.split(",") if e.strip()]
        policy = CropPolicy(size=crop_size, native_crops=crops, global_short_side=global_short_side,
                            global_jpeg_quality=global_jpeg_quality)
        records = open_dataset(data)
        if not any(r.source for r in records):
            raise typer.BadParameter("the manifest needs a 'source' column for leave-one-source-out", param_hint="DATA")
        cached = extract_cached(records, policy, names, cache)
        for record, why in cached.failed:
            console.print(f"[yellow]skipped[/] {why}")
        wild = WildData.from_cache(cached)
        with console.status("leave-one-source-out") as status:
            folds, results = run_loso(wild, names, progress=lambda s: status.update(f"leave-one-source-out: holding out {s}"))
        table = Table(title="held-out sources, pooled")
        # Numbers never wrap or get cut; a long candidate name folds instead (a log file is 80 columns wide).
        table.add_column("candidate", overflow="fold")
        for col in ("ROC-AUC", "TPR@5%FPR", "TPR@1%FPR", "ECE", "accuracy"):
            table.add_column(col, no_wrap=True, min_width=len(col))
        for key, r in sorted(results.items(), key=lambda kv: -kv[1]["roc_auc"]):
            table.add_row(key, f"{r['roc_auc']:.4f}", f"{r['tpr_at_fpr_0.05']:.3f}", f"{r['tpr_at_fpr_0.01']:.3f}",
                          f"{r['ece']:.4f}", f"{r['accuracy']:.3f}")
        console.print(table)
        winner = candidate or choose(results)
        if winner not in results:
            raise typer.BadParameter(f"unknown candidate '{winner}' (known: {', '.join(results)})", param_hint="--candidate")
        command = "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        bench = json.loads(benchmark.read_text()) if benchmark else None
        package = write_wild_package(out, name or out.name, wild, policy, names, folds, results, winner,
                                     command=command, data_ref=data, min_side=min_side, benchmark=bench,
                                     failed=cached.failed, version=package_version)
        if report:
            report.parent.mkdir(parents=True, exist_ok=True)
            dump_json(report, {"candidates": {k: public(v) for k, v in results.items()}, "winner": winner,
                               "held_out_p_ai": {n: float(p) for n, p in zip(wild.names, results[winner]["_p"])},
                               "per_source": {k: per_source_table(wild, v["_p"])
                                              for k, v in results.items() if k == winner},
                               "folds": [{"source": f.source, "n": int(f.test_idx.size), "thresholds": f.thresholds,
                                          "copies_left_out_of_training": f.copies_left_out} for f in folds]})
        held = package.card["metrics"]["held_out_pooled"]
        typer.echo(f"wrote {package.root} ({winner}; held-out sources pooled: ROC-AUC {held['roc_auc']:.4f}, "
                   f"TPR@5%FPR {held['tpr_at_fpr_0.05']:.3f}, ECE {held['ece']:.4f})")

    @app.command("calibrate-route")
    def calibrate_route_command(
        data: Annotated[str, typer.Argument(help="CSV manifest with path,label,source columns of full-size images "
                                                 "(e.g. wild-dev): they are shrunk to thumbnails.")],
        router: Annotated[str, typer.Option(help="Router package whose route is calibrated.")] = "default",
        route_model: Annotated[Optional[str], typer.Option(
            help="Model of the route to calibrate (default: the route with a max_short_side).")] = None,
        what: Annotated[str, typer.Option(help="What the thumbnails are, as verdict reasons will say it.")] =
            "thumbnails of real-world photos and art (wild-dev)",
        report: Annotated[Optional[Path], typer.Option(help="Write the full report (JSON) here.")] = None,
        write: Annotated[bool, typer.Option("--write/--dry-run",
                                            help="Store the calibration on the router's card.")] = False,
    ) -> None:
        """Fit a router route's calibration and band on thumbnails; measure it leave-one-source-out."""
        from rich.console import Console
        from rich.table import Table

        from synthdetect.models import find_package
        from synthdetect.models.package import CARD_FILE
        from synthdetect.train.datasets import open_dataset
        from synthdetect.train.route_calibration import calibrate_route, score_thumbnails
        from synthdetect.train.trainer import progress_bar
        from synthdetect.train.wild import dump_json

        console = Console(stderr=True, width=max(Console().width, 120))  # tables stay readable in a log
        package = find_package(router)
        routes = package.card.get("routes")
        if package.card.get("kind") != "router" or not routes:
            raise typer.BadParameter(f"{router} is not a router package", param_hint="--router")
        route = next((r for r in routes if (r.get("model") == route_model if route_model
                                            else r.get("model") and r.get("max_short_side"))), None)
        if route is None:
            raise typer.BadParameter(f"{router} has no such route", param_hint="--route-model")
        records = open_dataset(data)
        if not any(r.source for r in records):
            raise typer.BadParameter("the manifest needs a 'source' column", param_hint="DATA")
        with progress_bar() as bar:
            task = bar.add_task("thumbnails", total=len(records), status="")
            scores = score_thumbnails(records, route["model"],
                                      progress=lambda done, total: bar.update(task, completed=done))
        for problem in scores.unreadable:
            console.print(f"[yellow]unreadable[/] {problem}")
        spec = calibrate_route(scores, find_package(route["model"]).card, what)
        info = spec["calibrated_on"]
        held = info["leave_one_source_out"]
        table = Table(title=f"{route['model']} on {info['thumbnails']:,} thumbnails of {info['images']} images "
                            f"(model ROC-AUC {info['model_roc_auc']:.3f})")
        table.add_column("band", overflow="fold")
        for col in ("real\ncalled ai", "real\ncalled human", "AI\ncalled ai", "AI\ncalled human", "uncertain"):
            table.add_column(col, no_wrap=True)

        def row(name: str, s: dict) -> None:
            unsure = ((s["real_called_uncertain"] or 0) * s["n_real"] + (s["ai_called_uncertain"] or 0) * s["n_ai"]
                      ) / max(s["n_real"] + s["n_ai"], 1)
            shown = [f"{s[k]:.1%}" if s[k] is not None else "-" for k in
                     ("real_called_ai", "real_called_human", "ai_called_ai", "ai_called_human")]
            table.add_row(name, *shown, f"{unsure:.1%}")

        row(f"{route['model']}'s own card", info["with_the_model_card_band"])
        row("route band, held-out sources", held["pooled"])
        for source, s in held["per_source"].items():
            row(f"  held out: {source} ({s['n_real']} real, {s['n_ai']} AI)", s)
        console.print(table)
        if report:
            report.parent.mkdir(parents=True, exist_ok=True)
            dump_json(report, spec)
        if write:
            info["command"] = "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            route.update(spec)
            path = package.root / CARD_FILE
            dump_json(path, package.card)
            typer.echo(f"stored the {route['model']} route's calibration in {path}")
        else:
            typer.echo("dry run: --write stores this on the router card")
