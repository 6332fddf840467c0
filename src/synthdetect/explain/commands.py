"""``synthdetect explain IMG -o out.png``: the verdict and the maps behind it, as pictures.

``synthdetect explain IMG... -o FOLDER`` (several images, a folder or a glob) writes one figure per image,
``FOLDER/NAME.why.png``: a moderator reviewing a batch wants the pictures for all of it, and loading the model
once per image made that a shell loop paying seconds of start-up per file.
"""

from __future__ import annotations

import glob
import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class ExplainFormat(str, Enum):
    """``-f json`` as ``detect -f json`` takes it; ``--json`` stays as the short way to say the same."""

    text = "text"
    json = "json"


def register(app: typer.Typer) -> None:
    @app.command()
    def explain(
        images: Annotated[list[str], typer.Argument(
            help="The image to explain (- reads it from standard input), or several images, folders (searched "
                 "recursively) or globs.", metavar="IMAGE...")],
        out_text: Annotated[str, typer.Option(
            "--out", "-o", help="One image: the composite figure (original, overlays, verdict; .png, .jpg, "
                                ".webp...). Several images, a folder or a glob, or a name ending in /: a folder, "
                                "which gets NAME.why.png for each image.", metavar="PATH")],
        model: Annotated[str, typer.Option("--model", "-m", help="Model name or package path.")] = "default",
        maps: Annotated[bool, typer.Option("--maps", help="Also save each overlay as OUT_STEM.<map>.png.")] = False,
        method: Annotated[Optional[list[str]], typer.Option(
            "--method", help="gradcam, occlusion or ela (repeatable); default all.")] = None,
        grid: Annotated[int, typer.Option(min=2, help="Occlusion windows across each side.")] = 8,
        as_json: Annotated[bool, typer.Option("--json", help="Print the explanation summary as JSON.")] = False,
        format: Annotated[ExplainFormat, typer.Option(
            "--format", "-f", help="text, or json (as --json).")] = ExplainFormat.text,
    ) -> None:
        """Explain verdicts with Grad-CAM, an occlusion map and error-level analysis, as pictures."""
        from synthdetect.api import Detector
        from synthdetect.cli import EXIT_SOME_FAILED, STDIN_NAME, fail, print_error, state, stdin_image
        from synthdetect.explain import METHODS, check_output_path, explain as explain_image, map_paths
        from synthdetect.images import ImageLoadError
        from synthdetect.models import ModelPackageError

        if not out_text:  # `-o "$OUT"` with OUT unset: Path("") is ".", so figures landed in the working folder
            from synthdetect.messages import EMPTY_PATH_HINT

            fail(f'-o/--out: empty path ("") names no picture or folder{EMPTY_PATH_HINT}')
        as_json = as_json or format is ExplainFormat.json
        # A str, not a Path: Path("why/") is "why", and `explain photo.jpg -o why/` was refused as a picture
        # with no suffix ("cannot write a '(no suffix)' image") though the slash says a folder.
        out, folder = Path(out_text), out_text.endswith(("/", os.sep))
        unknown = sorted(set(method or ()) - set(METHODS))
        if unknown:  # like the output path, checked before the model loads
            fail(f"unknown explanation method(s): {', '.join(unknown)} (known: {', '.join(METHODS)})")
        if folder or not names_one_picture(images, out):
            explain_many(images, out, model=model, maps=maps, methods=method or METHODS, grid=grid, as_json=as_json,
                         folder=folder)
            return
        image = images[0]
        try:  # before the model loads and the maps are computed: those take seconds to minutes
            check_output_path(out)
        except ValueError as exc:
            fail(f"-o {exc}")
        planned = {"figure": out, **(map_paths(out.with_suffix(""), method or METHODS) if maps else {})}
        for role, path in planned.items():
            if image != "-" and _same_file(path, Path(image)):
                what = role if role == "figure" else f"{role} map"
                fail(f"-o {out}: the {what} would be written over the input image {image}; give another name")
        try:
            detector = Detector.load(model)
        except (ModelPackageError, ValueError, ImportError) as exc:
            fail(str(exc))
        source, name = (stdin_image(), STDIN_NAME) if image == "-" else (image, image)
        try:
            result = explain_image(detector, source, name=name, methods=method or METHODS, grid=grid,
                                   progress=not state["quiet"])
        except ImageLoadError as exc:
            print_error(str(exc))
            raise typer.Exit(EXIT_SOME_FAILED) from None
        except ValueError as exc:
            fail(str(exc))
        if not result.verdict.ok:  # the model failed: no verdict to explain; say so as detect does, exit status 3
            print_error(result.verdict.error or f"{name}: could not judge")
            raise typer.Exit(EXIT_SOME_FAILED)
        try:
            written, replaced = save_pictures(result, out, maps)
        except OSError as exc:
            fail(f"{exc.filename or out}: cannot write the picture ({exc.strerror or exc})")  # one line, no traceback
        if as_json:
            typer.echo(json.dumps({**result.to_dict(), "written": written, "replaced": replaced}, indent=2))
            return
        echo_explanation(name, result, written, replaced)


def save_pictures(result, figure: Path, maps: bool) -> tuple[dict[str, str], list[str]]:
    """Write the figure (and with ``maps`` each overlay beside it as FIGURE_STEM.<map>.png); what was written, by
    role, and which of those files were there before (said as replaced)."""
    from synthdetect.explain import map_paths

    stem = figure.with_suffix("")
    planned = [figure, *(map_paths(stem, result.maps()).values() if maps else ())]
    existing = {str(path) for path in planned if path.exists()}
    result.save(figure)
    written = {"figure": str(figure)}
    if maps:
        written.update({role: str(path) for role, path in result.save_maps(stem).items()})
    return written, [path for path in written.values() if path in existing]


def echo_explanation(name: str, result, written: dict[str, str], replaced: list[str]) -> None:
    """The text form: the verdict, its reasons, the notes, and what was written."""
    v = result.verdict
    p = "" if v.p_ai is None else f" p_ai {v.p_ai:.3f}"
    typer.echo(f"{name}: {v.label}{p} (model: {result.model or 'none'})")
    for reason in v.reasons:
        typer.echo(f"  why: {reason}")
    for note in result.notes:
        typer.echo(f"  note: {note}")
    for role, path in written.items():
        typer.echo(f"  wrote {role}: {path}{' (replaced the existing file)' if path in replaced else ''}")


#: What a figure written for each image of a batch is called: NAME.why.png beside NAME.why.<map>.png.
BATCH_SUFFIX = ".why.png"


def names_one_picture(images: list[str], out: Path) -> bool:
    """Whether this is the one-image form (``-o`` a picture) rather than a batch into a folder.

    One argument that is ``-`` or not a folder or a glob, and an ``-o`` that is not a folder: the picture form, as
    before batches existed (a missing file or a bad suffix is then said as it always was).
    """
    if len(images) != 1 or out.is_dir():
        return False
    image = images[0]
    return image == "-" or os.path.isfile(image) or not (os.path.isdir(image) or glob.has_magic(image))


def explain_many(images: list[str], out: Path, *, model: str, maps: bool, methods, grid: int,
                 as_json: bool, folder: bool = False) -> None:
    """One figure per image into the folder ``out``; a bad file is one line and the batch goes on.

    ``folder``: ``-o`` ended in a slash, so it names a folder whatever its name looks like (``why.v2/``).
    """
    from rich.progress import track

    from synthdetect.api import Detector
    from synthdetect.cli import EXIT_SOME_FAILED, err, fail, gather_inputs, print_error, print_note, state
    from synthdetect.explain import check_writable, explain as explain_image
    from synthdetect.images import ImageLoadError
    from synthdetect.interrupts import interrupt_signal, sigterm_raises
    from synthdetect.models import ModelPackageError

    if out.exists() and not out.is_dir():
        fail(f"-o {out}: is a file; with {' '.join(images) if len(images) < 4 else 'several images'} to explain, "
             f"-o names a folder (each image gets FOLDER/NAME{BATCH_SUFFIX})")
    if not out.exists() and out.suffix and not folder:
        fail(f"-o {out}: names one picture, but {'several images are' if len(images) > 1 else images[0] + ' is'} "
             f"{'given' if len(images) > 1 else 'a folder or a glob'}; give a folder for -o (each image gets "
             f"FOLDER/NAME{BATCH_SUFFIX})")
    targets, passed_over = gather_inputs(images, None, all_files=False)
    for line in passed_over.lines_of(passed_over.to_dict(), verb="explained", hint=""):
        print_note(line)
    targets, inside = _outside(targets, out, named=images)
    if inside:  # pictures of an earlier batch are not new images to explain; said, never skipped silently
        print_note(f"note: {len(inside)} file(s) inside the output folder {out} were not explained, e.g. {inside[0]}")
    if not targets:
        fail("no images to explain (give files, folders or globs)")
    try:
        detector = Detector.load(model)
    except (ModelPackageError, ValueError, ImportError) as exc:
        fail(str(exc))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"-o {out}: cannot create the folder ({exc.strerror or exc})")
    try:
        check_writable(out)
    except OSError as exc:
        fail(f"-o {out}: cannot write in this folder ({exc.strerror or exc})")
    stems = _unique_stems([name for name, _, _ in targets])
    rows: list[dict] = []
    failed = 0
    labels = {"ai": 0, "human": 0, "uncertain": 0}
    iterator = (targets if state["quiet"] or as_json or len(targets) < 2
                else track(targets, description="explain", console=err))

    def failure(name: str, message: str, kind: str) -> None:
        nonlocal failed
        failed += 1
        print_error(message)
        rows.append({"file": name, "error": message, "error_kind": kind})

    try:
        with sigterm_raises(lambda signum: KeyboardInterrupt(signum)):
            for (name, problem, source), stem in zip(iterator, stems):
                if problem is not None:
                    failure(name, f"{name}: {problem.reason}", problem.kind)
                    continue
                try:
                    result = explain_image(detector, source, name=name, methods=methods, grid=grid)
                except ImageLoadError as exc:
                    failure(name, str(exc), exc.kind)
                    continue
                except ValueError as exc:
                    failure(name, f"{name}: {exc}", "error")
                    continue
                if not result.verdict.ok:
                    failure(name, result.verdict.error or f"{name}: could not judge",
                            result.verdict.error_kind or "error")
                    continue
                figure = out / f"{stem}{BATCH_SUFFIX}"
                try:
                    written, replaced = save_pictures(result, figure, maps)
                except OSError as exc:
                    failure(name, f"{exc.filename or figure}: cannot write the picture ({exc.strerror or exc})",
                            "write_failed")
                    continue
                labels[result.verdict.label] = labels.get(result.verdict.label, 0) + 1
                if as_json:
                    rows.append({"file": name, **result.to_dict(), "written": written, "replaced": replaced})
                else:
                    echo_explanation(name, result, written, replaced)
    except (KeyboardInterrupt, ModelPackageError) as exc:
        # Ctrl-C, SIGTERM, or a routed model that cannot load (it loads with its first image, as in detect): the
        # rows so far are printed (--json had lost them all) and one line says how far the batch got.
        getattr(iterator, "close", lambda: None)()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        done = sum(labels.values()) + failed
        how_far = (f"{done} of {len(targets)} images done ({failed} failed), their pictures written in {out}; the "
                   f"other {len(targets) - done} were not explained")
        if isinstance(exc, ModelPackageError):
            fail(f"{exc}; {how_far}")
        fail(f"interrupted: {how_far}", code=128 + interrupt_signal(exc))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    if not state["quiet"]:
        err.print(f"{len(targets)} image{'s' if len(targets) != 1 else ''}: {sum(labels.values())} explained ({labels['ai']} ai, {labels['human']} "
                  f"human, {labels['uncertain']} uncertain), {failed} failed; pictures in {out}", highlight=False,
                  markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _outside(targets: list, out: Path, named: list[str]) -> tuple[list, list[str]]:
    """The targets, less the files a folder walk or glob found inside ``out`` (an earlier batch's pictures), which
    are returned; a file named on the command line is explained wherever it is."""
    root = out.resolve()
    given = {os.path.normpath(name) for name in named}
    kept, inside = [], []
    for target in targets:
        name, problem, source = target
        if (isinstance(source, str) and problem is None and os.path.normpath(name) not in given
                and Path(source).resolve().is_relative_to(root)):
            inside.append(name)
        else:
            kept.append(target)
    return kept, inside


def _unique_stems(names: list[str]) -> list[str]:
    """Each image's file stem, with -2, -3 ... where two images share one (a/x.jpg and b/x.png), compared without
    case because macOS and Windows folders do not tell X from x."""
    taken: set[str] = set()
    stems = []
    for name in names:
        base = Path(name).stem or "image"
        if name == "<stdin>":
            base = "stdin"
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def _same_file(output: Path, image: Path) -> bool:
    """Whether writing ``output`` would replace the image being explained (also through a link or another spelling)."""
    try:
        return output.exists() and image.exists() and os.path.samefile(output, image)
    except OSError:
        return False
