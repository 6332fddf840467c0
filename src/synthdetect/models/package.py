"""The model package: a directory with a ``model.json`` card and its weight files.

The card carries everything needed to reproduce the served behaviour
(preprocessing, calibration, thresholds) beside the weights, the way timm's
pretrained configs travel with checkpoints.  Every weight file is listed with
its sha256, and loading refuses a missing or altered file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable, Iterator

CARD_FILE = "model.json"
CARD_SCHEMA = "synthdetect.model/1"
CARD_MARKDOWN = "MODEL_CARD.md"
#: Files beside the card and its weights that belong to a package (the training log), replaced with it.
PACKAGE_SIDE_FILES = (CARD_FILE, CARD_MARKDOWN, "training_metrics.jsonl", "training_metrics.csv")


class ModelPackageError(RuntimeError):
    """The package is missing, malformed or its weights do not match the card."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelPackage:
    """A loaded, verified card plus the directory its files live in."""

    root: Path
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def kind(self) -> str:
        return self.card["kind"]

    def file(self, role: str) -> Path:
        """Path of the weight file registered under ``role`` (already hash-checked)."""
        files = self.card.get("files", {})
        if role not in files:
            raise ModelPackageError(f"{self.root}: card lists no file for '{role}'")
        return self.root / files[role]["path"]


def load_package(root: str | Path, *, verify: bool = True) -> ModelPackage:
    root = Path(root)
    if root.is_file():  # a path to the card itself (any name ending in .json)
        if root.suffix.lower() != ".json":  # `-m photo.png` was "malformed card (not UTF-8 text: byte 0)"
            raise ModelPackageError(f"{root}: not a model package (a package is a folder holding {CARD_FILE}, or the "
                                    f"path of that card; this is a {root.suffix or 'suffix-less'} file)")
        card_path, root = root, root.parent
    else:
        card_path = root / CARD_FILE
    if not card_path.is_file():
        raise ModelPackageError(f"{root}: not a model package (no {CARD_FILE})")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{card_path}: malformed card ({exc.msg} at line {exc.lineno})") from exc
    except UnicodeDecodeError as exc:
        raise ModelPackageError(f"{card_path}: malformed card (not UTF-8 text: byte {exc.start})") from None
    if not isinstance(card, dict):
        raise ModelPackageError(f"{card_path}: malformed card (expected a JSON object)")
    for key in ("name", "kind"):
        if key not in card:
            raise ModelPackageError(f"{card_path}: card has no '{key}'")
    check_files_block(card, card_path)
    check_card_fields(card, card_path)
    package = ModelPackage(root=root, card=card)
    if verify:
        verify_files(package)
    return package


def check_files_block(card: dict[str, Any], card_path: Path) -> None:
    """Every listed file needs a path and a sha256: a card without them cannot be verified, so it is refused."""
    files = card.get("files", {})
    if not isinstance(files, dict):
        raise ModelPackageError(f"{card_path}: malformed card ('files' must map roles to {{path, sha256}})")
    for role, entry in files.items():
        for key in ("path", "sha256"):
            if not isinstance(entry, dict) or not isinstance(entry.get(key), str) or not entry[key]:
                raise ModelPackageError(f"{card_path}: malformed card (files entry '{role}' has no {key})")
        # A package is one folder: a card from elsewhere (a download, a shared drive) must not make the loader
        # open, and torch.load, a file outside it.
        where = Path(entry["path"])
        if where.is_absolute() or ".." in where.parts:
            raise ModelPackageError(f"{card_path}: malformed card (files entry '{role}' points outside the package: "
                                    f"{entry['path']})")


RESAMPLE_NAMES = ("bicubic", "bilinear", "nearest", "lanczos")
CALIBRATION_PARAMS = {"identity": (), "temperature": ("temperature",), "platt": ("a", "b")}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_card_fields(card: dict[str, Any], card_path: Path) -> None:
    """The fields every kind reads, checked for type at load.

    A wrong type used to surface as a traceback from deep inside a kind, often only at the first image
    (a string ``max_aspect``, a string ``mean``), or not at all: a misspelt calibration method served
    uncalibrated probabilities.  Absent optional fields stay absent; each kind still requires its own.
    """
    def bad(why: str) -> ModelPackageError:
        return ModelPackageError(f"{card_path}: malformed card ({why})")

    for key in ("name", "kind"):
        if not isinstance(card[key], str) or not card[key]:
            raise bad(f"'{key}' must be a non-empty string")
    for key in ("input", "architecture", "calibration", "decision", "runtime"):
        if card.get(key) is not None and not isinstance(card[key], dict):
            raise bad(f"'{key}' must be an object")
    spec = card.get("input") or {}
    if "size" in spec:
        size = spec["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   and v > 0 for v in size)):
            raise bad(f"input.size must be [width, height] in whole pixels, not {json.dumps(size)}")
    for key in ("mean", "std"):
        if key in spec:
            values = spec[key]
            if not (isinstance(values, list) and len(values) == 3 and all(_number(v) for v in values)) or (
                    key == "std" and 0 in values):
                raise bad(f"input.{key} must be three numbers{' (none zero)' if key == 'std' else ''}, "
                          f"not {json.dumps(values)}")
    if "resample" in spec and spec["resample"] not in RESAMPLE_NAMES:
        raise bad(f"input.resample {json.dumps(spec['resample'])} is not one of {', '.join(RESAMPLE_NAMES)}")
    for key in ("min_side", "max_aspect", "max_short_side"):
        if spec.get(key) is not None and not _number(spec[key]):
            raise bad(f"input.{key} must be a number, not {json.dumps(spec[key])}")
    _check_calibration_and_decision(card, "", bad)
    routes = card.get("routes")
    if routes is not None:  # a router's routes carry their own calibration and band for the model they name
        if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
            raise bad("'routes' must be a list of objects")
        for i, route in enumerate(routes):
            where = f"routes[{i}]."
            if route.get("model") is not None and not (isinstance(route["model"], str) and route["model"]):
                raise bad(f"{where}model must be a model name, not {json.dumps(route['model'])}")
            for key in ("max_short_side", "min_short_side"):
                if route.get(key) is not None and not _number(route[key]):
                    raise bad(f"{where}{key} must be a number, not {json.dumps(route[key])}")
            for key in ("calibration", "decision"):
                if route.get(key) is not None and not isinstance(route[key], dict):
                    raise bad(f"'{where}{key}' must be an object")
            _check_calibration_and_decision(route, where, bad)
    backend = (card.get("runtime") or {}).get("backend")
    if backend is not None and not isinstance(backend, str):
        raise bad(f"runtime.backend must be a string, not {json.dumps(backend)}")


def _check_calibration_and_decision(spec: dict[str, Any], where: str, bad) -> None:
    """A card's (or a route's) calibration and decision thresholds: a misspelt method served uncalibrated p_ai."""
    calibration = spec.get("calibration")
    if calibration:
        method = calibration.get("method", "identity")
        if method not in CALIBRATION_PARAMS:
            raise bad(f"{where}calibration method {json.dumps(method)} is not one of {', '.join(CALIBRATION_PARAMS)}")
        for key in CALIBRATION_PARAMS[method]:
            value = calibration.get(key)
            if not _number(value) or (key == "temperature" and value <= 0):
                raise bad(f"{where}{method} calibration needs a{' positive' if key == 'temperature' else ''} "
                          f"number '{key}', not {json.dumps(value)}")
        if method == "platt" and calibration["a"] < 0:  # p_ai would fall as the model's AI logit rises
            raise bad(f"{where}platt calibration slope 'a' {calibration['a']} is negative: it inverts the model")
    decision = spec.get("decision") or {}
    for key in ("ai_at_or_above", "human_below"):
        value = decision.get(key)
        if value is not None and not _number(value):
            raise bad(f"{where}decision.{key} must be a number, not {json.dumps(value)}")
    ai_at, human_below = decision.get("ai_at_or_above"), decision.get("human_below")
    if ai_at is not None and human_below is not None and human_below > ai_at:
        raise bad(f"{where}decision.human_below {human_below} is above ai_at_or_above {ai_at}: an image could be "
                  f"both")


def verify_files(package: ModelPackage) -> None:
    for role, entry in package.card.get("files", {}).items():
        path = package.root / entry["path"]
        if not path.is_file():
            raise ModelPackageError(f"{package.name}: weight file missing: {path}")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ModelPackageError(
                f"{package.name}: sha256 mismatch for {path.name} "
                f"(card {entry['sha256'][:12]}..., file {actual[:12]}...); refusing to load"
            )


def write_package(root: str | Path, card: dict[str, Any], files: dict[str, Path],
                  render: Callable[[dict[str, Any]], str] | None = None) -> ModelPackage:
    """Write ``card`` into ``root`` recording name, size and sha256 of each file in ``files``.

    Files must already be inside ``root``.  ``render`` makes MODEL_CARD.md from the finished card, for kinds
    whose card says more than the generic rendering shows (``train-wild``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    card = dict(card)
    card.setdefault("schema", CARD_SCHEMA)
    card["files"] = {
        role: {"path": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        for role, path in files.items()
    }
    card.setdefault("created_with", created_with())
    write_text_atomic(root / CARD_FILE, json.dumps(card, indent=2, sort_keys=False) + "\n")
    write_text_atomic(root / CARD_MARKDOWN, (render or card_markdown)(card))
    return ModelPackage(root=root, card=card)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``.

    Rewriting a card in place, a crash or Ctrl-C part-way left a truncated ``model.json`` that no longer loads.
    The new file keeps the old one's permissions (else the umask's: open "x", not mkstemp's owner-only 0600),
    and a card that is a link is written where the link points.
    """
    path = Path(os.path.realpath(path))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        handle = open(temporary, "x", encoding="utf-8")
    except PermissionError:
        if not os.access(path, os.W_OK):
            raise
        # A folder that cannot be written holding a card that can (a shared install): rewritten in place, as
        # before, rather than refused; only there can a crash part-way leave it cut.
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return
    try:
        with handle:
            handle.write(text)
        if path.exists():
            shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def package_entries(root: Path) -> set[str]:
    """The names in ``root`` that belong to the package there: its card, card page, log and listed files."""
    names = set(PACKAGE_SIDE_FILES)
    try:
        files = json.loads((root / CARD_FILE).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return names
    for entry in files.values() if isinstance(files, dict) else ():
        where = PurePath(entry["path"]) if isinstance(entry, dict) and isinstance(entry.get("path"), str) else None
        if where is not None and where.parts and not where.is_absolute() and ".." not in where.parts:
            names.add(where.parts[0])
    return names


def replace_package(staged: str | Path, out: str | Path, *, drop: Iterable[str] = ()) -> None:
    """Put the complete package written in ``staged`` (a folder beside ``out``) in ``out``'s place by renaming.

    Written in place, a run stopped part-way (Ctrl-C, kill) left new weights beside the old card.  Here ``out``
    shows the old package until one rename shows the new one.  What ``out`` held besides its package (notes,
    exports) moves over, except the names in ``drop``; the old package's own files go with it.  On any failure,
    Ctrl-C included, ``out`` is left as it was.
    """
    staged, out = Path(staged), Path(out)
    previous = out.with_name(f".{out.name}.previous-{os.getpid()}")
    moved: list[str] = []
    swapped = False
    try:
        if out.exists():
            old = package_entries(out) | set(drop)
            for name in sorted(os.listdir(out)):
                if name not in old and not os.path.lexists(staged / name):
                    os.rename(out / name, staged / name)
                    moved.append(name)
            os.rename(out, previous)
        os.rename(staged, out)
        swapped = True
    except BaseException:
        if not swapped and staged.is_dir():
            if previous.is_dir() and not os.path.lexists(out):
                os.rename(previous, out)
            for name in reversed(moved):
                os.rename(staged / name, out / name)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def staging_folder(out: Path, *, link_work: bool = True) -> Path | None:
    """A fresh folder beside ``out`` that the package is written in, then renamed into place (``replace_package``).

    With ``link_work`` its ``_work`` links to ``OUT/_work``, so that a training checkpoint stays where a retry
    resumes from.  None where that cannot be (no symlinks, a parent folder that cannot be written, ``out`` holding
    the working directory): the package is then written in place, as before.
    """
    target = Path(out).resolve()
    if not target.name or Path.cwd().resolve().is_relative_to(target):  # renaming it would strand the shell
        return None
    staging = target.with_name(f".{target.name}.partial")
    try:
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging)  # left by a run that was killed
        if link_work:
            (target / "_work").mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        if link_work:
            (staging / "_work").symlink_to(target / "_work", target_is_directory=True)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    return staging


def discard_staging(staging: Path, out: Path, *, remove_out: bool) -> None:
    """After a run that wrote no package: its partial folder goes, and so does an ``OUT/_work`` left empty (and
    ``out`` itself when the run created it and it is empty)."""
    shutil.rmtree(staging, ignore_errors=True)  # the _work link inside is removed, not followed
    for empty in (out / "_work", out) if remove_out else (out / "_work",):
        try:
            empty.rmdir()
        except OSError:
            break


class OutInUse(ModelPackageError):
    """Another run is writing the same package folder now."""


@contextmanager
def exclusive_out(out: str | Path) -> Iterator[None]:
    """One run at a time per package folder.

    Two runs given the same ``--out`` shared ``OUT/_work`` (the second resumed the first's checkpoint, or the
    first resumed the second's mid-run) and the staging folder (the second removed the first's half-written
    package).  The lock is an advisory ``flock`` on a hidden file beside ``OUT``; the system releases it however
    the process ends, so a killed run never leaves a stale lock.  Where no lock file can be made (a folder that
    cannot be written, a system without ``flock``) the run goes on unguarded and says why it fails, as before.
    """
    try:
        import fcntl
    except ImportError:  # not on Windows
        yield
        return
    target = Path(out).resolve()  # two spellings of one folder (a link, "..") take one lock
    lock_path = target.with_name(f".{target.name}.lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+", encoding="utf-8")
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            raise OutInUse(f"{out}: another synthdetect run is writing this package now"
                           f"{f' (process {holder})' if holder.isdigit() else ''}; wait for it to end or choose "
                           f"another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)  # while still held: a run starting now makes a fresh lock file
    finally:
        handle.close()


class PackageNotMoved(ModelPackageError):
    """A complete package that could not be renamed into ``out``: it stays where it was written, and says where."""


@contextmanager
def staged_package(out: str | Path, *, drop: Iterable[str] = ("_work",), link_work: bool = False) -> Iterator[Path]:
    """The folder to write a package for ``out`` in; when the block ends without error it replaces ``out``.

    Every command that writes a package goes through here, so that one stopped part-way (Ctrl-C, a full disk, an
    error) leaves the package already in ``out`` whole instead of new weights beside the old card.  What else
    ``out`` held stays (``replace_package``, less ``drop``).  Where no staging folder can be made the block writes
    in ``out`` itself, as before.  A complete package that cannot be renamed into place stays where it was
    written, and a PackageNotMoved says where.
    """
    out = Path(out)
    out_existed = out.exists()
    if out_existed and not out.is_dir():  # said before anything is written, as writing in place did
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out))
    staging = staging_folder(out, link_work=link_work)
    if staging is None:
        yield out
        return
    moved = False
    try:
        yield staging
        if (staging / "_work").is_symlink():
            (staging / "_work").unlink()
        try:
            replace_package(staging, out.resolve(), drop=drop)  # a link to the folder stays a link
        except OSError as exc:
            moved = True  # kept for the user to move
            raise PackageNotMoved(f"the package could not be moved into {out} ({exc.strerror or exc}); it is "
                                  f"complete in {staging}, and {out} is as it was") from None
        moved = True
    finally:
        if not moved and staging.exists():
            discard_staging(staging, out, remove_out=not out_existed)


def add_card_metrics(root: str | Path, blocks: dict[str, Any]) -> ModelPackage:
    """Add blocks measured after training to a card's metrics; the weights and their hashes stay as they are.

    ``write_package`` replaces each card file by renaming, so a crash part-way never leaves a truncated card."""
    package = load_package(root)
    card = dict(package.card)
    card["metrics"] = {**card.get("metrics", {}), **blocks}
    files = {role: package.root / entry["path"] for role, entry in card.pop("files").items()}
    return write_package(package.root, card, files)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """A human-readable model card rendered from ``model.json`` (the JSON stays the source of truth)."""
    lines = [f"# {card['name']} {card.get('version', '')}".rstrip(), "", card.get("description", ""), "",
             f"- kind: `{card['kind']}`"]
    spec = card.get("input") or {}
    if spec:
        lines.append(f"- input: {spec.get('size')} px, resample {spec.get('resample')}, mean {spec.get('mean')}, "
                     f"std {spec.get('std')}")
    training = card.get("training") or {}
    if training.get("command"):
        lines.append(f"- trained with: `{training['command']}`")
    if training.get("data"):
        lines.append(f"- data: `{training['data']}`")
    if training.get("augment_spec"):
        lines.append(f"- augmentation: `{training['augment_spec']}`")
    if training.get("epochs_run") is not None:  # how the run went: early stopping and the epoch kept
        kept = f", kept epoch {training['best_epoch']}" if training.get("best_epoch") is not None else ""
        stopped = ", stopped early" if training.get("stopped_early") else ""
        took = f" in {training['seconds']:.0f} s" if isinstance(training.get("seconds"), (int, float)) else ""
        epochs = training["epochs_run"]
        lines.append(f"- run: {epochs} epoch{'s' if epochs != 1 else ''}{kept}{stopped}{took}")
    if training.get("decode_error_count"):
        count = training["decode_error_count"]
        lines.append(f"- left out: {count} image{'s' if count != 1 else ''} that could not be read "
                     "(listed in model.json, `training.decode_errors`)")
    split = training.get("split") or {}
    if split:
        shown = dict(split)
        copies = shown.get("copies_not_scored")
        if isinstance(copies, dict):  # the named files stay in model.json; people need the counts
            shown["copies_not_scored"] = {"counts": copies.get("counts"), "files": "listed in model.json"}
        lines.append(f"- split: {json.dumps(shown)}")
    cascade = card.get("cascade") or {}
    if cascade.get("validation"):  # what the second stage is and what it bought, on the split that chose it
        val = cascade["validation"]
        lines.append(f"- cascade: {cascade['encoder']['name']} head for |CNN logit| < {_fmt(cascade.get('tau'))} "
                     f"({val['band_images']} of {val['n']} validation images); validation right: CNN alone "
                     f"{val['cnn_right']}, cascade {val['cascade_right']}")
    calibration = card.get("calibration")
    if calibration:
        lines.append(f"- calibration: {json.dumps(calibration)}")
    decision = card.get("decision") or {}
    if decision:
        lines += ["", "## Verdict rule", "",
                  f"- `ai` when p_ai >= {_fmt(decision.get('ai_at_or_above'))} ({decision.get('ai_rule', '')})",
                  f"- `human` when p_ai < {_fmt(decision.get('human_below'))} ({decision.get('human_rule', '')})",
                  (f"- {decision.get('note', 'the uncertain band is empty: the two thresholds meet')}"
                   if decision.get("uncertain_band_empty") else "- `uncertain` in between")]
        bands = ((card.get("metrics") or {}).get("test") or {}).get("verdict_bands") or {}
        humans, ais = bands.get("human_images") or {}, bands.get("ai_images") or {}
        if humans and ais:  # the false-positive rate a user meets, measured where the rule was not chosen
            lines.append(f"- held out, this rule called {humans.get('ai', 0)} of {sum(humans.values())} human images "
                         f"`ai` and {humans.get('uncertain', 0)} `uncertain`; {ais.get('ai', 0)} of "
                         f"{sum(ais.values())} AI images `ai` and {ais.get('uncertain', 0)} `uncertain`")
    thresholds = card.get("thresholds") or {}
    if thresholds:
        lines += ["", "## Operating thresholds (validation data)", "",
                  "| target FPR | threshold | FPR on validation | TPR on validation |", "|---|---|---|---|"]
        for entry in thresholds.values():
            lines.append(f"| {entry.get('fpr_target')} | {_fmt(entry.get('threshold'))} | "
                         f"{_fmt(entry.get('fpr_validation'))} | {_fmt(entry.get('tpr_validation'))} |")
    metrics = card.get("metrics") or {}
    rows = []
    for split_name, block in metrics.items():
        flat = block.get("at_0.5", block) if isinstance(block, dict) else {}
        if isinstance(flat, dict) and "accuracy" in flat:
            rows.append((split_name, flat))
    if rows:
        lines += ["", "## Metrics (threshold 0.5 on calibrated p_ai)", "",
                  "| split | n | accuracy | precision | recall | F1 | ROC-AUC | ECE |", "|---|---|---|---|---|---|---|---|"]
        for split_name, m in rows:
            lines.append(f"| {split_name} | {m.get('n')} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('precision'))} | "
                         f"{_fmt(m.get('recall'))} | {_fmt(m.get('f1'))} | {_fmt(m.get('roc_auc'))} | {_fmt(m.get('ece'))} |")
            matrix = (m.get("confusion_matrix") or {}).get("rows_true_cols_pred")
            if matrix:
                lines.append(f"|  | confusion (rows true human/ai, cols predicted human/ai): {matrix} |||||||")
    members = training.get("members") or {}
    if members:  # a model of several trained networks (small-pair): what each contributes, and how they combine
        lines += ["", "## Members (validation accuracy of each alone)", "",
                  "| member | epochs | seconds | validation accuracy |", "|---|---|---|---|"]
        for member, entry in members.items():
            lines.append(f"| {member} | {entry.get('epochs_run')} | {entry.get('seconds')} | "
                         f"{_fmt(entry.get('validation_accuracy'))} |")
        combiner = training.get("combiner") or {}
        if combiner:
            lines += ["", f"Combined by {combiner.get('method')}, fitted on {combiner.get('fitted_on')}: weights "
                      f"{[round(w, 4) for w in combiner.get('weights', [])]}, bias {_fmt(combiner.get('bias'))}; "
                      f"validation accuracy {_fmt(combiner.get('validation_accuracy_cv'))} by "
                      f"{combiner.get('cv_folds')}-fold cross-validation."]
        storage = training.get("weight_storage") or {}
        if "validation_max_abs_logit_change" in storage:
            lines += ["", f"Weights stored as {storage['format']}: validation logits moved by "
                      f"{_fmt(storage['validation_mean_abs_logit_change'])} on average (at most "
                      f"{_fmt(storage['validation_max_abs_logit_change'])}); "
                      f"{storage['validation_decisions_changed_at_logit_0']} decisions changed."]
    for key in ("known_failures", "limitations"):
        if card.get(key):
            lines += ["", f"## {key.replace('_', ' ').capitalize()}", ""]
            lines += [f"- {item}" for item in card[key]]
    lines += ["", "Files (sha256 checked at load):", ""]
    for role, entry in (card.get("files") or {}).items():
        lines.append(f"- {role}: `{entry['path']}` sha256 `{entry['sha256']}` ({entry.get('bytes', '?')} bytes)")
    return "\n".join(lines) + "\n"


def created_with() -> dict[str, str]:
    from synthdetect import __version__

    versions = {"synthdetect": __version__, "python": platform.python_version()}
    for module in ("torch", "numpy", "PIL", "sklearn", "onnxruntime"):
        try:
            mod = __import__(module)
            versions[module] = getattr(mod, "__version__", "?")
        except ImportError:
            continue
    return versions


def weights_fingerprint(card: dict[str, Any]) -> dict[str, str]:
    """sha256 of each weight file on a card: what a calibration fitted elsewhere (a router's route) depends on."""
    return {name: entry["sha256"] for name, entry in sorted((card.get("files") or {}).items())}
