"""Dataset readers (folders, CSV, zip), splits that never leak a source, and the dataset summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from synth_data import add_copies, write_folder, write_manifest, zip_tree
from synthdetect.train.dataset_summary import summarize_dataset
from synthdetect.train.datasets import AI, HUMAN, DatasetError, load_record, open_dataset, read_record_bytes
from synthdetect.train.duplicates import LISTED_COPIES, file_digest
from synthdetect.train.splits import SplitError, leave_one_source_out, split_records


@pytest.mark.parametrize("names", [("FAKE", "REAL"), ("ai", "real"), ("ai", "human"), ("1_fake", "0_real"),
                                   ("fake", "real")])
def test_class_folders_common_names(tmp_path: Path, names):
    write_folder(tmp_path, n_per_class=3, names=names)
    records = open_dataset(tmp_path)
    assert Counter(r.label for r in records) == {AI: 3, HUMAN: 3}
    assert all((r.label == AI) == (f"/{names[0]}/" in r.ref) for r in records)


def test_other_folder_names_need_a_label_map(tmp_path: Path):
    write_folder(tmp_path, n_per_class=2, names=("diffusion", "photos"))
    with pytest.raises(DatasetError, match="no labelled images"):
        open_dataset(tmp_path)
    records = open_dataset(tmp_path, label_map={"diffusion": AI, "photos": HUMAN})
    assert Counter(r.label for r in records) == {AI: 2, HUMAN: 2}


def test_images_under_no_class_folder_are_named_not_silently_dropped(tmp_path: Path, caplog):
    write_folder(tmp_path, n_per_class=2, names=("FAKE", "REAL"))
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "stray.png").write_bytes(next((tmp_path / "REAL").glob("*")).read_bytes())
    with caplog.at_level("WARNING", logger="synthdetect.train.datasets"):
        records = open_dataset(tmp_path)
    assert len(records) == 4
    assert "1 image file(s) are under no class folder and were left out, e.g. misc/stray.png" in caplog.text


def test_csv_manifest_resolves_relative_paths_and_keeps_source(tmp_path: Path):
    manifest = write_manifest(tmp_path / "d", {"s1": (2, 3), "s2": (1, 1)})
    records = open_dataset(manifest)
    assert len(records) == 7
    assert {r.source for r in records} == {"s1", "s2"}
    assert all(r.generator == f"gen-{r.source}" for r in records if r.label == AI)
    assert load_record(records[0]).size == (24, 24)


def test_zip_of_folders_and_zip_of_manifest_are_read_in_place(tmp_path: Path):
    write_folder(tmp_path / "f", n_per_class=2, names=("FAKE", "REAL"))
    records = open_dataset(zip_tree(tmp_path / "f", tmp_path / "f.zip"))
    assert Counter(r.label for r in records) == {AI: 2, HUMAN: 2}
    assert read_record_bytes(records[0])[:4] == b"\x89PNG"
    write_manifest(tmp_path / "m", {"s1": (2, 2)})
    records = open_dataset(zip_tree(tmp_path / "m", tmp_path / "m.zip"))
    assert len(records) == 4 and all(r.source == "s1" for r in records)
    assert load_record(records[-1]).size == (24, 24)


def _records(tmp_path: Path):
    sources = {"a": (10, 10), "b": (6, 9), "c": (12, 0), "d": (0, 14), "e": (5, 5), "f": (4, 7)}
    return open_dataset(write_manifest(tmp_path, sources, size=8))


@pytest.mark.parametrize("method", ["random", "stratified", "source"])
def test_splits_are_deterministic_for_a_seed(tmp_path: Path, method):
    records = _records(tmp_path)
    one = split_records(records, method, val_fraction=0.2, test_fraction=0.2, seed=3)
    two = split_records(records, method, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert (one.train, one.val, one.test) == (two.train, two.val, two.test)
    assert sorted(r.ref for r in one.train + one.val + one.test) == sorted(r.ref for r in records)


def _parts(split) -> tuple[list[str], list[str], list[str]]:
    return tuple([r.ref for r in part] for part in (split.train, split.val, split.test))


@pytest.mark.parametrize("method", ["random", "stratified", "source"])
def test_a_split_does_not_depend_on_the_order_of_the_manifest_rows(tmp_path: Path, method):
    import random

    records = _records_with_copies(tmp_path)  # copies too: which one is "earlier" must not follow the rows
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    one = split_records(records, method, val_fraction=0.2, test_fraction=0.2, seed=3)
    two = split_records(shuffled, method, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert _parts(one) == _parts(two)  # same files, same order (training's shuffle starts from it)
    assert [c.ref for c in one.unscored] == [c.ref for c in two.unscored]
    assert one.describe()["order"] == "sorted by file"


def test_a_card_rebuilds_its_split_whatever_order_it_was_drawn_in(tmp_path: Path):
    from synthdetect.train.splits import rebuild_card_split

    records = list(_records(tmp_path))[::-1]  # a manifest whose rows are not in path order

    def card_split(split) -> dict:
        counts = {"train": len(split.train), "validation": len(split.val), "test": len(split.test)}
        return {**split.describe(), "seed": 4, **{part: {"n": n} for part, n in counts.items()}}

    new = split_records(records, "stratified", val_fraction=0.2, test_fraction=0.1, seed=4, copies="keep")
    assert _parts(rebuild_card_split(records[::-1], card_split(new))) == _parts(new)
    # cards made before the order was recorded were drawn in the dataset's order, and are rebuilt so
    old = split_records(records, "stratified", val_fraction=0.2, test_fraction=0.1, seed=4, copies="keep",
                        order="as listed")
    old_card = {k: v for k, v in card_split(old).items() if k != "order"}
    assert _parts(rebuild_card_split(records, old_card)) == _parts(old) != _parts(new)


@pytest.mark.parametrize("method", ["random", "source", "loso"])
def test_a_card_of_any_split_method_rebuilds_that_split(tmp_path: Path, method: str):
    """Every card was rebuilt as a stratified split, whatever its method: a source card's test set was wrong."""
    from synthdetect.train.splits import rebuild_card_split

    records = _records_with_copies(tmp_path)
    split = split_records(records, method, val_fraction=0.25, test_fraction=0.25, seed=5,
                          holdout_sources=["b"] if method == "loso" else ())
    card = {**split.describe(), "seed": 5, "train": {"n": len(split.train)},
            "validation": {"n": len(split.val)}, "test": {"n": len(split.test)}}
    rebuilt = rebuild_card_split(list(records)[::-1], card, copies="exclude")
    assert _parts(rebuilt) == _parts(split)
    assert [c.ref for c in rebuilt.unscored] == [c.ref for c in split.unscored]
    with pytest.raises(SplitError, match="names source\\(s\\) zz that the records do not hold"):
        rebuild_card_split(records, {**card, "method": "source", "test_sources": ["zz"]})


def test_stratified_split_keeps_the_class_balance(tmp_path: Path):
    records = _records(tmp_path)
    split = split_records(records, "stratified", val_fraction=0.25, test_fraction=0.25, seed=1)
    for part in (split.val, split.test):
        share = sum(r.label for r in part) / len(part)
        assert abs(share - sum(r.label for r in records) / len(records)) < 0.05


@pytest.mark.parametrize("seed", range(5))
def test_source_split_never_shares_a_source(tmp_path: Path, seed):
    records = _records(tmp_path)
    split = split_records(records, "source", val_fraction=0.2, test_fraction=0.2, seed=seed)
    train, val, test = ({r.source for r in part} for part in (split.train, split.val, split.test))
    assert not train & val and not train & test and not val & test
    assert {r.label for r in split.val} == {AI, HUMAN}  # validation can calibrate
    assert set(split.val_sources) == val and set(split.held_out_sources) == test


def test_leave_one_source_out_holds_out_each_source_whole(tmp_path: Path):
    records = _records(tmp_path)
    folds = list(leave_one_source_out(records, val_fraction=0.2, seed=0))
    assert [f.held_out_sources for f in folds] == [[s] for s in "abcdef"]
    for fold in folds:
        (held,) = fold.held_out_sources
        assert {r.source for r in fold.test} == {held}
        assert held not in {r.source for r in fold.train + fold.val}
        assert not {r.source for r in fold.train} & {r.source for r in fold.val}
        assert len(fold.test) == sum(r.source == held for r in records)


def test_split_errors_are_clear(tmp_path: Path):
    records = _records(tmp_path)
    with pytest.raises(SplitError, match="exactly one --holdout-source"):
        split_records(records, "loso")
    with pytest.raises(SplitError, match="unknown source"):
        split_records(records, "loso", holdout_sources=["nope"])
    with pytest.raises(SplitError, match="needs --split source or loso"):
        split_records(records, "random", holdout_sources=["a"])
    with pytest.raises(SplitError, match="unknown copies rule 'drop' \\(one of exclude, keep\\)"):
        split_records(records, "stratified", copies="drop")


def _records_with_copies(tmp_path: Path):
    """48 images in sources a, b, c, and two copies of each AI image: one in its own source, one in the next."""
    manifest = write_manifest(tmp_path, {"a": (8, 8), "b": (8, 8), "c": (8, 8)}, size=8)
    source_of_row = {row: "abc"[row // 16] for row in range(48)}
    ai_rows = [row for row in range(48) if row % 16 < 8]
    copies = [(row, source_of_row[row], None) for row in ai_rows]
    copies += [(row, "bca"["abc".index(source_of_row[row])], None) for row in ai_rows]
    return open_dataset(add_copies(manifest, copies))


@pytest.mark.parametrize("method", ["random", "stratified", "source"])
def test_validation_and_test_never_score_a_copy_of_an_earlier_file(tmp_path: Path, method):
    records = _records_with_copies(tmp_path)
    kept = split_records(records, method, val_fraction=0.25, test_fraction=0.25, seed=2, copies="keep")
    split = split_records(records, method, val_fraction=0.25, test_fraction=0.25, seed=2)
    assert split.train == kept.train  # training is the same either way
    train_digests = {file_digest(r) for r in split.train}
    scored = [file_digest(r) for r in split.val + split.test]
    assert len(set(scored)) == len(scored) and not set(scored) & train_digests
    # nothing silently lost: every validation/test file is scored or named with the file it copies
    assert sorted([r.ref for r in split.val + split.test] + [c.ref for c in split.unscored]) == sorted(
        r.ref for r in kept.val + kept.test)
    assert split.unscored, "the copies should have put some validation or test file out of scoring"
    for copy in split.unscored:
        assert Path(copy.ref).read_bytes() == Path(copy.copy_of).read_bytes() and copy.ref != copy.copy_of
        assert copy.copy_of_part in ("train", "validation", "test")
    described = split.describe()["copies_not_scored"]
    assert sum(described["counts"].values()) == len(split.unscored) == described["listed"]
    assert described["files"][0]["copy_of"] == split.unscored[0].copy_of
    assert kept.describe()["copies_not_scored"].startswith("not looked for")


def test_the_card_lists_the_first_unscored_copies_and_counts_all(tmp_path: Path, monkeypatch):
    import synthdetect.train.duplicates as duplicates

    records = _records_with_copies(tmp_path)
    monkeypatch.setattr(duplicates, "LISTED_COPIES", 3)
    described = split_records(records, "stratified", val_fraction=0.25, test_fraction=0.25, seed=2).describe()
    assert len(described["copies_not_scored"]["files"]) == described["copies_not_scored"]["listed"] == 3
    assert sum(described["copies_not_scored"]["counts"].values()) > 3
    assert LISTED_COPIES == 100


def test_summary_warns_about_the_jpeg_vs_png_shortcut(tmp_path: Path):
    write_folder(tmp_path / "skewed", n_per_class=6, fmt=("PNG", "JPEG"))
    summary = summarize_dataset(open_dataset(tmp_path / "skewed"))
    assert summary["per_class"]["ai"]["formats"] == {"PNG": 6}
    assert summary["per_class"]["human"]["formats"] == {"JPEG": 6}
    assert any("JPEG vs PNG" in w for w in summary["warnings"])
    write_folder(tmp_path / "fair", n_per_class=6)
    assert not summarize_dataset(open_dataset(tmp_path / "fair"))["warnings"]


def test_summary_counts_identical_files_and_copies_labelled_both_ways(tmp_path: Path):
    manifest = write_manifest(tmp_path / "copied", {"a": (3, 3)}, size=8)
    summary = summarize_dataset(open_dataset(add_copies(manifest, [(0, "a", None), (0, "b", None), (4, "b", "ai")])))
    assert summary["identical_files"] == {"groups": 2, "files": 5, "both_labels": 1}
    copies = [w for w in summary["warnings"] if "byte-identical" in w]
    assert copies and copies[0].startswith("5 files are byte-identical copies of one another (2 groups, e.g. ")
    assert any(w.startswith("identical files carry both labels in 1 group(s) (e.g. ") for w in summary["warnings"])
    plain = summarize_dataset(open_dataset(write_manifest(tmp_path / "plain", {"a": (3, 3)}, size=8)))
    assert plain["identical_files"] == {"groups": 0, "files": 0, "both_labels": 0}


def test_summary_warns_about_size_differences(tmp_path: Path):
    write_folder(tmp_path / "a", n_per_class=3, size=64)
    write_folder(tmp_path / "b", n_per_class=3, size=16)
    records = [r for r in open_dataset(tmp_path / "a") if r.label == AI]
    records += [r for r in open_dataset(tmp_path / "b") if r.label == HUMAN]
    summary = summarize_dataset(records)
    assert summary["per_class"]["ai"]["short_side_px"]["median"] == 64
    assert any("image size" in w for w in summary["warnings"])


def test_wild_dev_leave_one_source_out_never_leaks(wild_dev: Path):
    records = open_dataset(wild_dev / "manifest.csv")
    for fold in leave_one_source_out(records, val_fraction=0.2, seed=0):
        sources = [{r.source for r in part} for part in (fold.train, fold.val, fold.test)]
        assert not sources[0] & sources[1] and not sources[0] & sources[2] and not sources[1] & sources[2]
        assert {r.label for r in fold.val} == {AI, HUMAN}


# -- labels, manifests and archives as people make them ------------------------------------------


def test_the_outermost_class_folder_decides_the_label(tmp_path: Path, caplog):
    """``nature``, ``natural`` and ``camera`` are human aliases; ``ai/nature/x.png`` is still an AI image."""
    write_folder(tmp_path / "ai" / "nature", n_per_class=2, names=("a", "b"))
    write_folder(tmp_path / "real" / "camera", n_per_class=2, names=("a", "b"))
    with caplog.at_level("WARNING", logger="synthdetect.train.datasets"):
        records = open_dataset(tmp_path, label_map={"a": AI, "b": HUMAN})
    assert all(r.label == (AI if "/ai/" in r.ref else HUMAN) for r in records) and len(records) == 8
    assert "folders naming both classes, e.g. ai/nature/a/000.png; the outermost class folder decided (ai)" in caplog.text
    summary = summarize_dataset(records)
    assert summary["per_class"]["ai"]["count"] == summary["per_class"]["human"]["count"] == 4


def test_csv_manifests_as_spreadsheets_write_them(tmp_path: Path):
    write_folder(tmp_path, n_per_class=2, names=("FAKE", "REAL"))
    rows = "FAKE/000.png, ai\r\nREAL/000.png , human\r\n"
    (tmp_path / "bom.csv").write_bytes("\ufeffpath,label\r\n".encode() + rows.encode())
    (tmp_path / "spaces.csv").write_text(" path , Label \n" + rows)
    for name in ("bom.csv", "spaces.csv"):
        assert [r.label for r in open_dataset(tmp_path / name)] == [AI, HUMAN]
    (tmp_path / "short.csv").write_text("path,label\nFAKE/000.png,ai\nREAL/000.png\n")
    with pytest.raises(DatasetError, match=r"short.csv:3: no label \(1 of 2 columns"):
        open_dataset(tmp_path / "short.csv")
    (tmp_path / "cols.csv").write_text("file,class\nFAKE/000.png,ai\n")
    with pytest.raises(DatasetError, match=r"cols.csv: a manifest needs 'path' and 'label' columns \(found 'file', 'class'\)"):
        open_dataset(tmp_path / "cols.csv")
    (tmp_path / "digits.csv").write_text("path,label\nFAKE/000.png,1\n")
    with pytest.raises(DatasetError, match=r"digits.csv:2: unknown label '1' .*--label 1=ai --label 0=human"):
        open_dataset(tmp_path / "digits.csv")


def test_zip_reads_only_its_manifest_and_skips_macos_metadata(tmp_path: Path):
    import zipfile

    write_folder(tmp_path / "f", n_per_class=2, names=("fake", "real"))
    (tmp_path / "f" / "fake" / "metadata.csv").write_text("prompt,seed\na cat,1\n")  # a generator's notes: data
    (tmp_path / "f" / "__MACOSX" / "fake").mkdir(parents=True)
    (tmp_path / "f" / "__MACOSX" / "fake" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "f" / "real" / "._001.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    for data in (tmp_path / "f", zip_tree(tmp_path / "f", tmp_path / "f.zip")):
        records = open_dataset(data)
        assert Counter(r.label for r in records) == {AI: 2, HUMAN: 2}
        summary = summarize_dataset(records)
        assert summary["skipped"] == {"macOS metadata (__MACOSX/, ._*)": 2} and summary["unreadable_count"] == 0
    with zipfile.ZipFile(tmp_path / "dot.zip", "w") as z:
        z.write(tmp_path / "f" / "fake" / "000.png", ".hidden/fake/000.png")
        z.write(tmp_path / "f" / "real" / "000.png", ".hidden/real/000.png")
        z.writestr("manifest.csv", "path,label\n./.hidden/fake/000.png,ai\n./.hidden/real/000.png,human\n")
        z.writestr(".hidden/bad.png", b"not an image at all")
        z.writestr("data.csv", "path,label\n./.hidden/bad.png,ai\n")
    records = open_dataset(tmp_path / "dot.zip")
    assert [r.ref.split("!")[1] for r in records] == [".hidden/fake/000.png", ".hidden/real/000.png"]
    assert all(load_record(r).size == (24, 24) for r in records)
    summary = summarize_dataset(open_dataset(tmp_path / "dot.zip", manifest="data.csv"))
    assert summary["unreadable"] == [f"{tmp_path / 'dot.zip'}!.hidden/bad.png: not an image (the file contains text)"]
