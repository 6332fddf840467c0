"""``synthdetect explain IMG -o out.png``: the verdict and the maps behind it, as pictures."""

from __future__ import annotations

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
        image: Annotated[str, typer.Argument(help="The image to explain; - reads it from standard input.")],
        out: Annotated[Path, typer.Option(
            "--out", "-o", help="Composite figure: original, overlays, verdict (.png, .jpg, .webp...).")],
        model: Annotated[str, typer.Option("--model", "-m", help="Model name or package path.")] = "default",
        maps: Annotated[bool, typer.Option("--maps", help="Also save each overlay as OUT_STEM.<map>.png.")] = False,
        method: Annotated[Optional[list[str]], typer.Option(
            "--method", help="gradcam, occlusion or ela (repeatable); default all.")] = None,
        grid: Annotated[int, typer.Option(min=2, help="Occlusion windows across each side.")] = 8,
        as_json: Annotated[bool, typer.Option("--json", help="Print the explanation summary as JSON.")] = False,
        format: Annotated[ExplainFormat, typer.Option(
            "--format", "-f", help="text, or json (as --json).")] = ExplainFormat.text,
    ) -> None:
        """Explain one verdict with Grad-CAM, an occlusion map and error-level analysis."""
        from synthdetect.api import Detector
        from synthdetect.cli import EXIT_SOME_FAILED, STDIN_NAME, fail, print_error, state, stdin_image
        from synthdetect.explain import METHODS, check_output_path, explain as explain_image, map_paths
        from synthdetect.images import ImageLoadError
        from synthdetect.models import ModelPackageError

        as_json = as_json or format is ExplainFormat.json
        unknown = sorted(set(method or ()) - set(METHODS))
        if unknown:  # like the output path, checked before the model loads
            fail(f"unknown explanation method(s): {', '.join(unknown)} (known: {', '.join(METHODS)})")
        try:  # before the model loads and the maps are computed: those take seconds to minutes
            check_output_path(out)
        except ValueError as exc:
            fail(f"-o {exc}")
        planned = {"figure": out, **(map_paths(out.with_suffix(""), method or METHODS) if maps else {})}
        for role, path in planned.items():
            if image != "-" and _same_file(path, Path(image)):
                what = role if role == "figure" else f"{role} map"
                fail(f"-o {out}: the {what} would be written over the input image {image}; give another name")
        existing = {role for role, path in planned.items() if path.exists()}
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
            result.save(out)
            written = {"figure": str(out)}
            if maps:
                written.update({name: str(path) for name, path in result.save_maps(out.with_suffix("")).items()})
        except OSError as exc:
            fail(f"{exc.filename or out}: cannot write the picture ({exc.strerror or exc})")  # one line, no traceback
        replaced = [path for role, path in written.items() if role in existing]
        if as_json:
            typer.echo(json.dumps({**result.to_dict(), "written": written, "replaced": replaced}, indent=2))
            return
        v = result.verdict
        p = "" if v.p_ai is None else f" p_ai {v.p_ai:.3f}"
        typer.echo(f"{name}: {v.label}{p} (model: {result.model or 'none'})")
        for reason in v.reasons:
            typer.echo(f"  why: {reason}")
        for note in result.notes:
            typer.echo(f"  note: {note}")
        for name, path in written.items():
            typer.echo(f"  wrote {name}: {path}{' (replaced the existing file)' if path in replaced else ''}")


def _same_file(output: Path, image: Path) -> bool:
    """Whether writing ``output`` would replace the image being explained (also through a link or another spelling)."""
    try:
        return output.exists() and image.exists() and os.path.samefile(output, image)
    except OSError:
        return False
