"""Odd datasets handed to ``synthdetect train``: zips at odd paths or with damaged members, manifests that are not
UTF-8 or list a file twice, unreadable images, splits too small to train, and a run stopped with Ctrl-C."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth_data import encode, make_image, write_folder, write_manifest, write_manifest_rows, zip_tree
from synthdetect.cli import app
from synthdetect.train import registry
from synthdetect.train.datasets import AI, HUMAN, MACOS_METADATA, DatasetError, Record, open_dataset, read_record_bytes
from synthdetect.train.trainer import decode_records


def _quick_train(data: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, [
        "train", str(data), "--out", str(out), "--epochs", "1", "--width", "4", "--batch-size", "16",
        "--input-size", "16", "--threads", "1", "--val-fraction", "0.3", "--test-fraction", "0.2", *extra])


# -- zips ------------------------------------------------------------------------------------------


def test_a_zip_under_a_folder_whose_name_has_a_bang_is_read(tmp_path: Path):
    write_folder(tmp_path / "f", n_per_class=2, names=("ai", "human"))
    (tmp_path / "f" / "ai" / "wow!.png").write_bytes((tmp_path / "f" / "ai" / "000.png").read_bytes())
    (tmp_path / "team!data").mkdir()
    archive = zip_tree(tmp_path / "f", tmp_path / "team!data" / "set.zip")
    records = open_dataset(archive)
    assert len(records) == 5
    assert all(read_record_bytes(r)[:4] == b"\x89PNG" for r in records)


def test_a_missing_or_damaged_zip_member_is_an_os_error_naming_it(tmp_path: Path):
    png = encode(make_image(1, 0, 16))
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ai/a.png", png)
        z.writestr("human/b.png", png)
    data = bytearray(archive.read_bytes())
    start = data.find(b"ai/a.png") + len("ai/a.png") + 40  # inside the first member's compressed bytes
    data[start:start + 20] = b"\x00" * 20
    archive.write_bytes(bytes(data))
    damaged, fine = open_dataset(archive)
    with pytest.raises(OSError, match="damaged in the archive"):
        read_record_bytes(damaged)
    assert read_record_bytes(fine) == png
    with pytest.raises(OSError, match=r"no member 'ai/gone.png' in .*d\.zip"):
        read_record_bytes(Record(f"{archive}!ai/gone.png", AI))
    # training counts it as one unreadable file rather than stopping with a traceback
    arrays, labels, errors = decode_records([damaged, fine, fine], (16, 16))
    assert len(arrays) == 2 and len(errors) == 1 and errors[0].startswith(f"{damaged.ref}: damaged in the archive")


def test_a_manifest_inside_a_zip_still_counts_the_macos_metadata_it_skips(tmp_path: Path):
    write_manifest(tmp_path / "m" / "top", {"s1": (2, 2)})
    archive = zip_tree(tmp_path / "m", tmp_path / "m.zip")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("__MACOSX/top/._manifest.csv", b"\x00\x05\x16\x07")
    records = open_dataset(archive)
    assert len(records) == 4
    assert records.skipped == {MACOS_METADATA: 1}


# -- manifests -------------------------------------------------------------------------------------


def test_a_manifest_that_is_not_utf8_is_one_error_naming_it(tmp_path: Path):
    manifest = tmp_path / "latin1.csv"
    manifest.write_bytes("path,label\ncaf\xe9.png,ai\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.csv: not UTF-8 text \(byte 0xe9 at position 14\)"):
        open_dataset(manifest)
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("manifest.csv", "path,label\ncaf\xe9.png,ai\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"z\.zip!manifest\.csv: not UTF-8 text"):
        open_dataset(archive)


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,label\na.png,ai,human\n")
    with pytest.raises(DatasetError, match="the header names 'label' more than once"):
        open_dataset(manifest)


def test_a_manifest_with_no_rows_says_so(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n")
    with pytest.raises(DatasetError, match=r"m\.csv: lists no images"):
        open_dataset(manifest)


def test_a_file_listed_twice_is_refused_before_training(tmp_path: Path):
    root = tmp_path / "d"
    write_manifest(root, {"s1": (6, 6)}, size=16)
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    manifest = write_manifest_rows(root, [*rows, {**rows[0], "path": "./" + rows[0]["path"]}])
    result = _quick_train(manifest, tmp_path / "pkg")
    assert result.exit_code == 2
    assert f"error: {manifest}: {root / rows[0]['path']} is listed 2 times (labelled ai); list each image once" \
        in result.output
    write_manifest_rows(root, [*rows, {**rows[0], "label": "real"}, rows[1]])
    result = _quick_train(manifest, tmp_path / "pkg")
    assert result.exit_code == 2
    assert "is listed 2 times (labelled ai and human) (and 1 more); list each image once" in result.output
    assert not (tmp_path / "pkg").exists()


# -- unreadable images -----------------------------------------------------------------------------


def test_unreadable_images_are_counted_and_named_on_the_console(tmp_path: Path, caplog):
    write_folder(tmp_path / "d", n_per_class=2)
    (tmp_path / "d" / "ai" / "text.png").write_text("not an image")
    records = [*open_dataset(tmp_path / "d"), Record(str(tmp_path / "d" / "human" / "gone.png"), HUMAN)]
    with caplog.at_level("WARNING", logger="synthdetect.train.trainer"):
        arrays, labels, errors = decode_records(records, (16, 16), description="decode train")
    assert len(arrays) == len(labels) == 4
    assert f"{tmp_path / 'd' / 'human' / 'gone.png'}: No such file or directory" in errors
    assert "decode train: 2 of 6 images could not be read and are left out (listed in the card as " \
           "training.decode_errors), e.g. " in caplog.text


def test_a_part_whose_every_image_is_unreadable_is_one_clear_error(tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"decode val: none of the 2 images could be read, e.g. .*broken\.png"):
        decode_records([Record(str(broken), AI), Record(str(tmp_path / "gone.png"), HUMAN)], (16, 16),
                       description="decode val")


# -- splits too small to train ---------------------------------------------------------------------


def test_a_training_split_without_both_classes_is_refused_before_decoding(tmp_path: Path):
    write_folder(tmp_path / "d", n_per_class=1)
    result = _quick_train(tmp_path / "d", tmp_path / "pkg", "--val-fraction", "0.3", "--test-fraction", "0.3")
    assert result.exit_code == 2
    assert "error: the training split needs both classes, and got 0 human, 0 ai (of 1 human, 1 ai in all)" \
        in result.output
    assert "decode train" not in result.output


# -- interrupted and repeated runs -----------------------------------------------------------------


def _interrupting_trainer(request):
    work = Path(request.out) / "_work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "checkpoint.pt").write_bytes(b"")
    raise KeyboardInterrupt


def test_ctrl_c_says_what_is_left_and_how_to_resume(tmp_path: Path, monkeypatch):
    manifest = write_manifest(tmp_path / "data", {"a": (10, 10)}, size=16)
    monkeypatch.setattr(registry, "get_trainer", lambda kind: _interrupting_trainer)
    out = tmp_path / "pkg"
    result = _quick_train(manifest, out)
    assert result.exit_code == 130, result.output
    assert (f"interrupted: no package was written; {out / '_work' / 'checkpoint.pt'} holds the epochs finished so "
            f"far; run the same command again to resume") in result.output


def test_a_run_into_a_folder_holding_a_package_says_it_replaces_it(tmp_path: Path):
    manifest = write_manifest(tmp_path / "data", {"a": (10, 10)}, size=16)
    out = tmp_path / "pkg"
    first = _quick_train(manifest, out, "--name", "first")
    assert first.exit_code == 0, first.output
    assert "holds a model package" not in first.output
    second = _quick_train(manifest, out, "--name", "second")
    assert second.exit_code == 0, second.output
    assert f"note: {out} holds a model package (name first, kind small-cnn, version 1.0.0); this run replaces it " \
           f"when it finishes" in second.output
    assert json.loads((out / "model.json").read_text())["name"] == "second"


def test_the_training_loop_refuses_no_images_or_one_class(tmp_path: Path):
    import numpy as np

    from synthdetect.train.trainer import TrainConfig, fit_classifier
    from test_train import MEAN, STD, _arrays, _linear

    val = _arrays(seed=1)
    for x, y, counts in ((np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.float32), "0 human, 0 ai"),
                         (_arrays()[0], np.ones(32, np.float32), "0 human, 32 ai")):
        with pytest.raises(ValueError, match=f"training needs images of both classes, and has {counts}"):
            fit_classifier(_linear(), (x, y), val, TrainConfig(epochs=1, batch_size=8, threads=1), mean=MEAN,
                           std=STD, workdir=tmp_path)


# -- folder layouts --------------------------------------------------------------------------------


def test_class_folders_reached_through_symlinks_are_read_and_a_loop_ends(tmp_path: Path, caplog):
    write_folder(tmp_path / "store", n_per_class=2, names=("ai", "human"))
    data = tmp_path / "data"
    (data / "ai").mkdir(parents=True)
    (data / "ai" / "sd15").symlink_to(tmp_path / "store" / "ai", target_is_directory=True)
    (data / "human").symlink_to(tmp_path / "store" / "human", target_is_directory=True)
    (data / "ai" / "back").symlink_to(data, target_is_directory=True)
    with caplog.at_level("WARNING", logger="synthdetect.train.datasets"):
        records = open_dataset(data)
    assert sorted(Path(r.ref).relative_to(data).as_posix() for r in records) == [
        "ai/sd15/000.png", "ai/sd15/001.png", "human/000.png", "human/001.png"]
    assert "ai/back links back to a folder above it; not followed" in caplog.text


def test_ready_made_train_and_test_folders_are_said_to_be_pooled(tmp_path: Path, caplog):
    write_folder(tmp_path / "cifake" / "train", n_per_class=2, names=("FAKE", "REAL"))
    write_folder(tmp_path / "cifake" / "test", n_per_class=1, names=("FAKE", "REAL"))
    with caplog.at_level("WARNING", logger="synthdetect.train.datasets"):
        assert len(open_dataset(tmp_path / "cifake")) == 6
    assert "the folders test, train are pooled and split again by synthdetect train" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="synthdetect.train.datasets"):
        assert len(open_dataset(tmp_path / "cifake" / "train")) == 4
    assert "pooled" not in caplog.text


def test_a_manifest_written_on_windows_finds_its_files(tmp_path: Path):
    manifest = write_manifest(tmp_path / "d", {"s1": (1, 1)})
    rows = manifest.read_text().replace("images/s1/", "images\\s1\\")
    manifest.write_text(rows)
    records = open_dataset(manifest)
    assert [read_record_bytes(r)[:4] for r in records] == [b"\x89PNG", b"\x89PNG"]


def test_resuming_a_run_that_had_stopped_early_trains_no_further_epoch(tmp_path: Path):
    import torch

    from synthdetect.train.trainer import TrainConfig, fit_classifier
    from test_train import MEAN, STD, _arrays, _linear

    config = TrainConfig(epochs=10, patience=2, batch_size=8, lr=0.0, weight_decay=0.0, threads=1)
    torch.manual_seed(0)
    first = fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    assert first.stopped_early and len(first.history) == 3
    # the package step failed (or keep_workdir kept the checkpoint); the same run is started again
    again = fit_classifier(_linear(), _arrays(), _arrays(seed=1), config, mean=MEAN, std=STD, workdir=tmp_path)
    assert again.stopped_early and again.best_epoch == 1 and len(again.history) == 3


def test_a_zip_made_on_windows_with_backslashes_is_labelled_by_its_folders(tmp_path: Path):
    png = encode(make_image(1, 0, 16))
    archive = tmp_path / "win.zip"
    with zipfile.ZipFile(archive, "w") as z:  # old Windows tools (Compress-Archive) write "data\ai\a.png"
        z.writestr("data\\ai\\a.png", png)
        z.writestr("data\\human\\b.png", png)
        z.writestr("data\\misc\\c.png", png)
    records = open_dataset(archive)
    assert [(r.ref, r.label) for r in records] == [(f"{archive}!data\\ai\\a.png", AI),
                                                    (f"{archive}!data\\human\\b.png", HUMAN)]
    assert all(read_record_bytes(r) == png for r in records)


@pytest.mark.parametrize("layout", ["top folder, backslashes", "root, backslashes", "top folder, ./ prefix"])
def test_a_zipped_manifest_made_on_windows_is_found_and_its_files_read(tmp_path: Path, layout: str):
    png = encode(make_image(1, 0, 16))
    top, sep = {"top folder, backslashes": ("data\\", "\\"), "root, backslashes": ("", "\\"),
                "top folder, ./ prefix": ("./data/", "/")}[layout]
    archive = tmp_path / "win.zip"
    with zipfile.ZipFile(archive, "w") as z:  # folders that name no class: only the manifest can label them
        z.writestr(f"{top}manifest.csv", "path,label,source\nimgs\\a.png,ai,s1\nimgs/b.png,human,s2\n")
        z.writestr(f"{top}imgs{sep}a.png", png)
        z.writestr(f"{top}imgs{sep}b.png", png)
    records = open_dataset(archive)
    assert [(r.ref, r.label, r.source) for r in records] == [
        (f"{archive}!{top}imgs{sep}a.png", AI, "s1"), (f"{archive}!{top}imgs{sep}b.png", HUMAN, "s2")]
    assert [read_record_bytes(r) for r in records] == [png, png]


@pytest.mark.parametrize("top", ["", "données/"])
def test_a_zipped_manifest_finds_non_ascii_names_stored_without_the_utf8_flag(tmp_path: Path, top: str):
    """Such names read as cp437 ('caf├⌐'), so the manifest's 'café' named no member and every image failed."""
    png = encode(make_image(1, 0, 16))
    archive = tmp_path / "noflag.zip"
    names = {f"{top}manifest.csv": "path,label\nimgs/café-ü.png,ai\nimgs/b.png,human\n".encode(),
             f"{top}imgs/café-ü.png": png, f"{top}imgs/b.png": png}
    with zipfile.ZipFile(archive, "w") as z:  # zipfile sets the flag itself: ASCII stand-ins, patched afterwards
        for k, (name, data) in enumerate(names.items()):
            z.writestr(f"{k}" * len(name.encode()), data)
    data = archive.read_bytes()
    for k, name in enumerate(names):
        assert data.count(f"{k}".encode() * len(name.encode())) == 2
        data = data.replace(f"{k}".encode() * len(name.encode()), name.encode())
    archive.write_bytes(data)
    records = open_dataset(archive)
    assert [r.label for r in records] == [AI, HUMAN]
    assert [read_record_bytes(r) for r in records] == [png, png]


def test_name_parts_and_image_suffixes_agree_with_pathlib_on_odd_names():
    """They replaced PurePosixPath for speed (opening CIFAKE's zip: 9.8 -> 4.4 s); they must split names as it does."""
    import itertools
    from pathlib import PurePosixPath

    from synthdetect.images import IMAGE_SUFFIXES
    from synthdetect.train.datasets import _is_image_name, name_parts

    pieces = ["", "/", "//", "\\\\", ".", "..", "a", "ai", "x.PNG", ".png", "png.", "a.b.jpg", "._x.jpg", "__MACOSX",
              "dir.jpg/", "sp ace.webp", "é.jpeg"]
    names = ["".join(combo) for n in (1, 2, 3) for combo in itertools.product(pieces, repeat=n)]
    assert len(names) > 5000
    for name in names:
        assert name_parts(name) == PurePosixPath(name.replace("\\", "/")).parts, name
        assert _is_image_name(name) == (PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES), name
