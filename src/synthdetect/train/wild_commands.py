"""``synthdetect train-wild``: leave-one-source-out selection and the full-size model package."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape


def _open_manifest(data: str, fail):
    """The manifest's records, or a one-line error naming the file and line (exit 2)."""
    from synthdetect.train.datasets import DatasetError, open_dataset

    try:
        return open_dataset(data)
    except DatasetError as exc:
        fail(str(exc).replace(" (map it with --label NAME=ai|human, e.g. --label 1=ai --label 0=human)",
                              " (labels: ai, fake, 1_fake, generated, ... or human, real, 0_real, camera, ...)"))


def _read_benchmark(path: Path, fail) -> dict:
    try:
        bench = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"{path}: cannot read the --benchmark JSON ({exc})")
    if not isinstance(bench, dict) or not isinstance(bench.get("models"), dict):
        fail(f"{path}: not a benchmarks/wild_peers.py result (no 'models' object)")
    for model, entry in bench["models"].items():
        # the card's table reads each model's 'pooled' numbers: a KeyError traceback after every fold was fitted,
        # or (--embed-benchmark-only) after model.json had already taken the benchmark its MODEL_CARD.md lacked
        if not isinstance(entry, dict) or not isinstance(entry.get("pooled"), dict):
            fail(f"{path}: not a benchmarks/wild_peers.py result (models['{model}'] has no 'pooled' object)")
    return bench


def _extractor_names(extractors: str, fail) -> list[str]:
    """The --extractors list, checked: known names, each once, at most one CLIP."""
    from synthdetect.models.view_features import EXTRACTORS
    from synthdetect.train.wild import clip_of

    names = [e.strip() for e in extractors.split(",") if e.strip()]
    if not names:
        fail("--extractors: name at least one feature extractor")
    unknown = [n for n in names if n not in EXTRACTORS]
    if unknown:
        fail(f"--extractors: unknown feature extractor '{unknown[0]}' (known: {', '.join(EXTRACTORS.names())})")
    if len(set(names)) < len(names):
        fail(f"--extractors: an extractor is named twice ({extractors})")
    try:
        clip_of(names)
    except ValueError as exc:
        fail(f"--extractors: {exc}")
    return names


def card_writable(path: Path) -> bool:
    """Whether ``--write`` can store the router card (checked before the thumbnails are scored)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _report_problem(report: Path | None) -> str | None:
    """Why ``--report`` could not be written, known before any work: a folder in its place, a file where its folder
    should be, or a folder this user cannot write into."""
    if report is None:
        return None
    if report.is_dir():
        return f"{report}: --report is a folder; give a file name for the JSON report"
    folder = next(p for p in (report.resolve().parent, *report.resolve().parents) if p.exists())
    if not folder.is_dir():
        return f"{report}: --report cannot be written: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{report}: --report cannot be written into {folder} (permission denied, or a read-only file system)"
    return None


def register(app: typer.Typer) -> None:
    @app.command("train-wild")
    def train_wild(
        ctx: typer.Context,
        data: Annotated[str, typer.Argument(help="CSV manifest with path,label,source columns (e.g. wild-dev).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the model package.")],
        name: Annotated[Optional[str], typer.Option(help="Name written on the card (default: the folder name).")] = None,
        extractors: Annotated[str, typer.Option(help="Comma-separated feature extractors to consider.")] =
            "clip-vit-b16-f32,handcrafted-v1",
        package_version: Annotated[str, typer.Option(help="Version written on the card (a retrained package of the "
                                                          "same name gets a new one).")] = "1.0.0",
        crops: Annotated[int, typer.Option(min=0, help="Native-resolution crops per image (plus one global view).")] = 4,
        crop_size: Annotated[int, typer.Option(min=16, help="Crop side in pixels.")] = 224,
        global_short_side: Annotated[Optional[int], typer.Option(
            min=1, help="Shrink each image to this short side (Lanczos) before its global view: a thumbnail view.")] = None,
        global_jpeg_quality: Annotated[Optional[int], typer.Option(
            min=1, max=100,
            help="Re-encode that thumbnail as JPEG at this quality, so every source has the same compression.")] = None,
        candidate: Annotated[Optional[str], typer.Option(help="Ship this candidate instead of the LOSO winner.")] = None,
        cache: Annotated[Optional[Path], typer.Option(help="Feature cache (default ~/.cache/synthdetect/features or "
                                                           "$SYNTHDETECT_CACHE/features).")] = None,
        report: Annotated[Optional[Path], typer.Option(help="Write the full LOSO report (JSON) here.")] = None,
        benchmark: Annotated[Optional[Path], typer.Option(help="JSON from benchmarks/wild_peers.py to embed in the card.")] = None,
        min_side: Annotated[int, typer.Option(min=1, help="Smallest short side the model judges.")] = 32,
        keep_outside_domain: Annotated[bool, typer.Option(
            "--keep-outside-domain", help="Train on and count the images the package answers uncertain (under "
            "--min-side or longer than 6:1), as train-wild did before 2026-12-05; the shipped wild-v1/v2/v3 were "
            "trained so, and their commands need it to reproduce them.")] = False,
        embed_benchmark_only: Annotated[bool, typer.Option(
            help="Only add --benchmark to the card of the package already at --out (weights untouched).")] = False,
    ) -> None:
        """Choose a full-size model by leave-one-source-out and write it as a package."""
        from synthdetect.cli import fail

        # Everything that can be refused is refused here, before features are extracted and folds fitted.
        bench = _read_benchmark(benchmark, fail) if benchmark else None
        if embed_benchmark_only:
            from synthdetect.models import ModelPackageError
            from synthdetect.train.wild import embed_benchmark

            if bench is None:
                raise typer.BadParameter("--embed-benchmark-only needs --benchmark", param_hint="--benchmark")
            if not (out / "model.json").is_file():
                fail(f"{out}: no model package here to add the benchmark to (--embed-benchmark-only)")
            try:
                package = embed_benchmark(out, bench)
            except (ModelPackageError, OSError) as exc:
                fail(f"{out}: {exc}")
            typer.echo(f"added the peers benchmark to {package.root / 'model.json'} and MODEL_CARD.md")
            return
        from rich.console import Console
        from rich.table import Table

        from synthdetect.models import ModelPackageError
        from synthdetect.models.multicrop import CropPolicy
        from synthdetect.models.package import OutInUse, exclusive_out
        from synthdetect.train.commands import replaced_package
        from synthdetect.train.wild import (WildData, choose, default_candidates, domain_rule, dump_json,
                                            failure_line, loso_problem, outside_domain, per_source_table, public,
                                            run_loso, write_wild_package)
        from synthdetect.train.wild_features import extract_cached

        console = Console(stderr=True, width=max(Console().width, 120))  # tables stay readable in a log
        names = _extractor_names(extractors, fail)
        if candidate and candidate not in {c.name for c in default_candidates(names)}:
            fail(f"--candidate: unknown candidate '{candidate}' for extractors {', '.join(names)} "
                 f"(known: {', '.join(c.name for c in default_candidates(names))})")
        if out.exists() and not out.is_dir():
            fail(f"{out}: --out is a file, not a folder for the model package")
        # a file or an unwritable folder above --out was found only when the package was written, after every fold
        folder = next(p for p in (out.resolve(), *out.resolve().parents) if p.exists())
        if not folder.is_dir():
            fail(f"{out}: --out cannot be made: {folder} is a file, not a folder")
        # an existing --out is replaced from beside it, or written in place where its parent is closed
        places = (folder, folder.parent) if folder == out.resolve() else (folder,)
        if not any(os.access(place, os.W_OK | os.X_OK) for place in places):
            fail(f"{out}: --out cannot be written into {folder} (permission denied, or a read-only file system)")
        problem = _report_problem(report)  # said now, not as a traceback after the folds were fitted
        if problem:
            fail(problem)
        policy = CropPolicy(size=crop_size, native_crops=crops, global_short_side=global_short_side,
                            global_jpeg_quality=global_jpeg_quality)
        records = _open_manifest(data, fail)
        if not any(r.source for r in records):
            raise typer.BadParameter("the manifest needs a 'source' column for leave-one-source-out", param_hint="DATA")
        problem = loso_problem([r.source or "unknown" for r in records], [r.label for r in records])
        if problem:
            fail(f"{data}: {problem}")
        try:  # held until the command returns
            ctx.with_resource(exclusive_out(out))
        except OutInUse as exc:
            fail(str(exc))
        replaced = replaced_package(out)
        if replaced:
            console.print(f"note: {out} holds a model package ({replaced}); this run replaces it when it finishes",
                          markup=False, highlight=False, soft_wrap=True)
        unsourced = [r.ref for r in records if not r.source]
        if unsourced:  # said, not silent: they form one more held-out group
            console.print(f"note: {len(unsourced)} image(s) have an empty source cell; they are held out together "
                          f"as one source, 'unknown', e.g. {unsourced[0]}", markup=False, highlight=False,
                          soft_wrap=True)
        from synthdetect.interrupts import interrupt_signal, sigterm_raises

        # Ctrl-C said only "Aborted!", and SIGTERM (a scheduler's stop, `timeout`) ended the run without a word:
        # both say that nothing is lost but the run itself.
        ctx.with_resource(sigterm_raises(lambda signum: KeyboardInterrupt(signum)))  # until the command returns
        try:
            cached = extract_cached(records, policy, names, cache)
            if cached.cache_problem:  # the images are still used; only the rerun's head start is lost
                console.print(f"note: {cached.cache_problem}", markup=False, highlight=False, soft_wrap=True)
            for record, why in cached.failed:
                console.print(f"[yellow]unreadable, left out[/] {escape(failure_line(record.ref, why))}",
                              highlight=False, soft_wrap=True)
            if not cached.records:
                fail(f"{data}: none of its {len(records)} images could be read (see above)")
            outside = outside_domain(cached, min_side)
            left_out_outside = bool(outside) and not keep_outside_domain
            if outside:  # the package answers uncertain for them: trained on and counted, the card overstated
                handled = ("they are left out of training and of the card's numbers" if left_out_outside
                           else "--keep-outside-domain trains on them and counts them")  # the shipped cards' way
                console.print(f"note: {len(outside)} image(s) are {domain_rule(min_side)}; {handled} "
                              f"(training.outside_domain), e.g. {failure_line(outside[0][0].ref, outside[0][1])}",
                              markup=False, highlight=False, soft_wrap=True)
            if left_out_outside:
                left_out = {id(record) for record, _ in outside}
                cached = cached.subset([id(record) not in left_out for record in cached.records])
                if not cached.records:
                    fail(f"{data}: none of its {len(records)} images is one the model judges "
                         f"(all unreadable or {domain_rule(min_side)})")
            wild = WildData.from_cache(cached)
            problem = loso_problem(wild.groups, wild.labels)
            if problem:
                left = " and ".join(part for part in (f"{len(cached.failed)} unreadable" if cached.failed else "",
                                                      f"{len(outside)} outside what the model judges" if outside
                                                      else "") if part)
                fail(f"{data}: without the images left out ({left}), {problem}")
            try:
                with console.status("leave-one-source-out") as status:
                    folds, results = run_loso(wild, names,
                                              progress=lambda s: status.update(
                                                  f"leave-one-source-out: holding out {s}"))
            except ValueError as exc:  # a fold left with one class (copies of held-out files removed from training)
                fail(f"{data}: {exc}")
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
                raise typer.BadParameter(f"unknown candidate '{winner}' (known: {', '.join(results)})",
                                         param_hint="--candidate")
            command = "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            try:
                package = write_wild_package(out, name or out.name, wild, policy, names, folds, results, winner,
                                             command=command, data_ref=data, min_side=min_side, benchmark=bench,
                                             failed=cached.failed, version=package_version, outside=outside,
                                             outside_kept=keep_outside_domain)
            except ModelPackageError as exc:  # complete, but it could not be renamed into place: where it is
                fail(str(exc))
            except OSError as exc:  # a full disk, a folder that cannot be written: one line, not a traceback
                fail(f"{out}: cannot write the package ({exc.strerror or exc})")
        except KeyboardInterrupt as exc:
            from synthdetect.train.wild_features import default_cache_dir

            typer.echo(f"interrupted: no package was written ({out} is as it was); the features extracted so far "
                       f"stay in the cache ({cache or default_cache_dir()}), so the same command goes on from there",
                       err=True)
            raise typer.Exit(128 + interrupt_signal(exc)) from None
        if report:
            try:
                report.parent.mkdir(parents=True, exist_ok=True)
                dump_json(report, {"candidates": {k: public(v) for k, v in results.items()}, "winner": winner,
                                   "held_out_p_ai": {n: float(p) for n, p in zip(wild.names, results[winner]["_p"])},
                                   "per_source": {k: per_source_table(wild, v["_p"])
                                                  for k, v in results.items() if k == winner},
                                   "folds": [{"source": f.source, "n": int(f.test_idx.size),
                                              "thresholds": f.thresholds,
                                              "copies_left_out_of_training": f.copies_left_out} for f in folds]})
            except OSError as exc:
                fail(f"{report}: could not write the report ({exc.strerror or exc}); the package {package.root} "
                     f"was written", code=1)
        held = package.card["metrics"]["held_out_pooled"]
        typer.echo(f"wrote {package.root} ({winner}; held-out sources pooled: ROC-AUC {held['roc_auc']:.4f}, "
                   f"TPR@5%FPR {held['tpr_at_fpr_0.05']:.3f}, ECE {held['ece']:.4f})")
        if cached.failed:
            typer.echo(f"{len(cached.failed)} of {len(records)} images unreadable and left out (named above and in "
                       f"the card's training.images_failed)")
        if outside:
            typer.echo(f"{len(outside)} of {len(records)} images {domain_rule(min_side)}, "
                       f"{'kept (--keep-outside-domain)' if keep_outside_domain else 'left out'} (listed in the "
                       f"card's training.outside_domain)")

    @app.command("calibrate-route")
    def calibrate_route_command(
        data: Annotated[str, typer.Argument(help="CSV manifest with path,label,source columns of full-size images "
                                                 "(e.g. wild-dev): they are shrunk to thumbnails.")],
        router: Annotated[str, typer.Option(help="Router package whose route is calibrated.")] = "default",
        route_model: Annotated[Optional[str], typer.Option(
            help="Model of the route to calibrate (default: the route with a max_short_side).")] = None,
        what: Annotated[Optional[str], typer.Option(
            help="What the thumbnails are, as verdict reasons will say it (default: named after DATA; "
                 "'thumbnails of real-world photos and art (wild-dev)' for a manifest in a wild-dev folder).")] = None,
        report: Annotated[Optional[Path], typer.Option(help="Write the full report (JSON) here.")] = None,
        write: Annotated[bool, typer.Option("--write/--dry-run",
                                            help="Store the calibration on the router's card.")] = False,
    ) -> None:
        """Fit a router route's calibration and band on thumbnails; measure it leave-one-source-out."""
        from rich.console import Console
        from rich.table import Table

        from synthdetect.cli import fail
        from synthdetect.interrupts import interrupt_signal, sigterm_raises
        from synthdetect.models import adapter_for, find_package
        from synthdetect.models.package import CARD_FILE
        from synthdetect.models.router import route_model_ref
        from synthdetect.train.route_calibration import (SHORT_SIDES, calibrate_route, default_what,
                                                         route_data_problem, route_short_sides, score_thumbnails)
        from synthdetect.train.trainer import progress_bar
        from synthdetect.train.wild import dump_json

        console = Console(stderr=True, width=max(Console().width, 120))  # tables stay readable in a log
        package = find_package(router)
        routes = package.card.get("routes")
        if package.card.get("kind") != "router" or not routes:  # one line, not a usage box
            kind = package.card.get("kind")
            fail(f"--router: {router} is not a router package (kind {kind})" if kind != "router" else
                 f"--router: {router}'s card lists no routes")
        route = next((r for r in routes if (r.get("model") == route_model if route_model
                                            else r.get("model") and r.get("max_short_side"))), None)
        if route is None:
            known = ", ".join(str(r.get("model")) for r in routes if r.get("model"))
            fail(f"--route-model: {router} has no route " + (f"to '{route_model}'" if route_model else
                                                              "with a max_short_side") + f" (its routes: {known})")
        shared = [i for i, r in enumerate(routes) if r.get("model") == route["model"]]
        if len(shared) > 1:  # --write stored a card the router then refused to load
            fail(f"--route-model: {route['model']} is on {len(shared)} routes of {router} (routes "
                 f"{', '.join(map(str, shared))}); a router refuses a model on two routes when one carries its own "
                 "calibration (verdicts name the model, not the route), so give it one route first")
        if adapter_for(route["model"]) is not None:  # was "unknown model", after scoring every thumbnail
            fail(f"--route-model: {route['model']} is a prefixed model with no package card, so the route's "
                 "calibration could not record the weights it was fitted for; give the route a model package")
        model_ref = route_model_ref(route["model"], package.root)  # a relative path is read beside the card
        own_card = find_package(model_ref).card
        if what is not None and (not what.strip() or not what.isprintable()):
            # quoted in the band's rules and in every verdict it judges: blank, they read "... of every source of
            # (highest: x)"; a line break split a verdict's one-line reason
            fail("--what: say what the thumbnails are, in words on one line (e.g. 'thumbnails of product photos')")
        what = what.strip() if what is not None else default_what(data)
        sides = route_short_sides(routes, route)
        if not sides:
            fail(f"--route-model: {router}'s route to '{route['model']}' receives none of the thumbnail sizes "
                 f"({'/'.join(map(str, SHORT_SIDES))} px short side), so they cannot calibrate it")
        path = package.root / CARD_FILE
        if write and not card_writable(path):
            fail(f"{path}: the router card is not writable, so --write could not store the calibration")
        problem = _report_problem(report)  # said now, not as a traceback after every thumbnail was scored
        if problem:
            fail(problem)
        records = _open_manifest(data, fail)
        if not any(r.source for r in records):
            fail(f"{data}: the manifest needs a 'source' column (leave-one-source-out holds out each source)")
        if len({r.label for r in records}) < 2:
            fail(f"{data}: the route's calibration needs both AI and human images")
        unsourced = [r.ref for r in records if not r.source]
        if unsourced:  # said, not silent: they are held out together as one more source, as train-wild does
            from synthdetect.cli import shown as printable

            typer.echo(f"note: {len(unsourced)} image(s) have an empty source cell; they are held out together as "
                       f"one source, 'unknown', e.g. {printable(unsourced[0])}", err=True)
        done = [0]

        def advance(count: int, total: int) -> None:
            done[0] = count
            bar.update(task, completed=count)

        try:
            with sigterm_raises(lambda signum: KeyboardInterrupt(signum)), progress_bar() as bar:
                task = bar.add_task("thumbnails", total=len(records), status="")
                scores = score_thumbnails(records, model_ref, short_sides=sides, progress=advance)
        except KeyboardInterrupt as exc:  # was a silent 130/143: had --write stored anything?
            typer.echo(f"interrupted after scoring {done[0]} of {len(records)} images: nothing was stored "
                       f"({path} is as it was); run the command again to start over", err=True)
            raise typer.Exit(128 + interrupt_signal(exc)) from None
        for problem in scores.unreadable:
            console.print(f"[yellow]unreadable, left out[/] {escape(problem)}", highlight=False, soft_wrap=True)
        problem = route_data_problem(scores)
        if problem:
            fail(f"{data}: {problem}")
        spec = calibrate_route(scores, own_card, what)
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
        if scores.too_small:  # on the card only, so the table's image count fell short of the manifest unexplained
            console.print(f"note: {len(scores.too_small)} image(s) gave no thumbnail and are not in the numbers "
                          f"above (calibrated_on.too_small_for_thumbnails), e.g. {scores.too_small[0]}",
                          markup=False, highlight=False, soft_wrap=True)
        for why, count in scores.not_judged.items():  # thumbnails the route answers uncertain by routing
            console.print(f"note: {count} thumbnail(s) not judged by {route['model']} and not in the numbers above "
                          f"(calibrated_on.not_judged): {why}", markup=False, highlight=False, soft_wrap=True)
        for source, why in held.get("not_held_out", {}).items():
            console.print(f"[yellow]not held out, so not in the numbers above:[/] {escape(source)}: {why}",
                          highlight=False, soft_wrap=True)
        if report:
            try:
                report.parent.mkdir(parents=True, exist_ok=True)
                dump_json(report, spec)
            except OSError as exc:  # a disk that filled since the check above
                fail(f"{report}: could not write the report ({exc.strerror or exc}); nothing was stored")
        if write:
            info["command"] = "synthdetect " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            route.update(spec)
            try:
                dump_json(path, package.card)
            except OSError as exc:
                fail(f"{path}: could not store the calibration ({exc})")
            typer.echo(f"stored the {route['model']} route's calibration in {path}")
        else:
            typer.echo("dry run: --write stores this on the router card")
        if scores.unreadable:
            typer.echo(f"{len(scores.unreadable)} of {len(records)} images unreadable and left out (named above; "
                       f"counted in calibrated_on.unreadable)")
