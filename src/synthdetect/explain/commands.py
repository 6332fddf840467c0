"""``synthdetect explain IMG -o out.png``: the verdict and the maps behind it, as pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


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
    ) -> None:
        """Explain one verdict with Grad-CAM, an occlusion map and error-level analysis."""
        from synthdetect.api import Detector
        from synthdetect.cli import EXIT_SOME_FAILED, STDIN_NAME, fail, print_error, stdin_image
        from synthdetect.explain import METHODS, check_output_path, explain as explain_image
        from synthdetect.images import ImageLoadError
        from synthdetect.models import ModelPackageError

        try:  # before the model loads and the maps are computed: those take seconds to minutes
            check_output_path(out)
        except ValueError as exc:
            fail(f"-o {exc}")
        try:
            detector = Detector.load(model)
        except (ModelPackageError, ValueError, ImportError) as exc:
            fail(str(exc))
        source, name = (stdin_image(), STDIN_NAME) if image == "-" else (image, image)
        try:
            result = explain_image(detector, source, name=name, methods=method or METHODS, grid=grid)
        except ImageLoadError as exc:
            print_error(str(exc))
            raise typer.Exit(EXIT_SOME_FAILED) from None
        except ValueError as exc:
            fail(str(exc))
        result.save(out)
        written = {"figure": str(out)}
        if maps:
            written.update({name: str(path) for name, path in result.save_maps(out.with_suffix("")).items()})
        if as_json:
            typer.echo(json.dumps({**result.to_dict(), "written": written}, indent=2))
            return
        v = result.verdict
        p = "" if v.p_ai is None else f" p_ai {v.p_ai:.3f}"
        typer.echo(f"{name}: {v.label}{p} (model: {result.model or 'none'})")
        for reason in v.reasons:
            typer.echo(f"  why: {reason}")
        for note in result.notes:
            typer.echo(f"  note: {note}")
        for name, path in written.items():
            typer.echo(f"  wrote {name}: {path}")
