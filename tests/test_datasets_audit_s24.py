"""Datasets as users hand them over: damaged and password-protected zips, names stored twice, broken symlinks,
manifests saved with semicolons or tabs (audit, session 24)."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest

from synth_data import encode, make_image
from synthdetect.train.dataset_summary import summarize_dataset
from synthdetect.train.datasets import AI, HUMAN, DatasetError, Record, open_dataset, read_record_bytes
from synthdetect.train.duplicates import file_digest


def _png(label: int, seed: int) -> bytes:
    return encode(make_image(label, seed, size=16))


def _zip(path: Path, entries: list[tuple[str, bytes | str]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return path


def _set_flag_and_method(path: Path, *, flag: int = 0, method: int | None = None) -> None:
    """Rewrite every local and central header: OR ``flag`` into the flag bits, and set the compression method."""
    data = bytearray(path.read_bytes())
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        while at != -1:
            data[at + flag_at] |= flag
            if method is not None:
                data[at + method_at:at + method_at + 2] = method.to_bytes(2, "little")
            at = data.find(signature, at + 1)
    path.write_bytes(bytes(data))


def test_a_damaged_or_truncated_zip_is_one_error_naming_it(tmp_path: Path):
    good = _zip(tmp_path / "good.zip", [("ai/0.png", _png(1, 0)), ("real/0.png", _png(0, 1))]).read_bytes()
    at = good.find(b"PK\x01\x02")
    (tmp_path / "directory.zip").write_bytes(good[:at] + b"XX" + good[at + 2:])  # a damaged central directory
    (tmp_path / "truncated.zip").write_bytes(good[:100])  # a download cut short
    for name in ("directory.zip", "truncated.zip"):
        with pytest.raises(DatasetError) as caught:  # was BadZipFile's traceback, or "not a ... zip archive"
            open_dataset(tmp_path / name)
        assert str(caught.value).startswith(f"{tmp_path / name}: cannot be read as a zip archive (")
        assert "\n" not in str(caught.value)


def test_a_password_protected_member_is_one_unreadable_file_not_a_crash(tmp_path: Path, caplog):
    path = _zip(tmp_path / "locked.zip", [("ai/0.png", _png(1, 0)), ("real/0.png", _png(0, 1))])
    _set_flag_and_method(path, flag=0x1)
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.datasets"):
        records = open_dataset(path)
    assert "2 of 2 entries are password-protected" in caplog.text
    with pytest.raises(OSError, match="password-protected"):  # was RuntimeError, which no caller counts
        read_record_bytes(records[0])
    assert file_digest(records[0]) is None
    summary = summarize_dataset(records)
    assert summary["unreadable_count"] == 2 and "password-protected" in summary["unreadable"][0]


def test_a_password_protected_manifest_is_one_error_naming_it(tmp_path: Path):
    path = _zip(tmp_path / "locked.zip", [("manifest.csv", "path,label\na.png,ai\n"), ("a.png", _png(1, 0))])
    _set_flag_and_method(path, flag=0x1)
    with pytest.raises(DatasetError, match=r"locked\.zip!manifest\.csv: the manifest cannot be read: password"):
        open_dataset(path)


def test_a_member_stored_with_an_unsupported_compression_method_is_an_os_error(tmp_path: Path):
    path = _zip(tmp_path / "deflate64.zip", [("ai/0.png", _png(1, 0)), ("real/0.png", _png(0, 1))])
    _set_flag_and_method(path, method=9)  # Deflate64, which Windows Explorer writes for large files
    records = open_dataset(path)
    with pytest.raises(OSError, match="compression method"):  # was NotImplementedError
        read_record_bytes(records[0])
    assert summarize_dataset(records)["unreadable_count"] == 2


def test_a_name_stored_twice_in_a_zip_is_one_record_and_said(tmp_path: Path, caplog):
    path = tmp_path / "twice.zip"
    with pytest.warns(UserWarning, match="Duplicate name"):
        _zip(path, [("ai/0.png", _png(1, 0)), ("ai/0.png", _png(1, 5)), ("real/0.png", _png(0, 1))])
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.datasets"):
        records = open_dataset(path)
    # before: two records for one readable entry, and the summary called two different images identical copies
    assert sorted((r.ref, r.label) for r in records) == [(f"{path}!ai/0.png", AI), (f"{path}!real/0.png", HUMAN)]
    assert "1 name(s) are stored more than once in the zip, e.g. ai/0.png" in caplog.text
    assert summarize_dataset(records)["identical_files"]["groups"] == 0


def test_a_broken_symlink_in_a_class_folder_is_counted_not_dropped(tmp_path: Path):
    for label, folder in ((1, "ai"), (0, "real")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "0.png").write_bytes(_png(label, label))
    (tmp_path / "real" / "moved.png").symlink_to(tmp_path / "gone.png")
    records = open_dataset(tmp_path)
    assert str(tmp_path / "real" / "moved.png") in [r.ref for r in records]  # was left out without a word
    summary = summarize_dataset(records)
    assert summary["unreadable_count"] == 1 and "moved.png" in summary["unreadable"][0]


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_a_manifest_saved_with_semicolons_or_tabs_is_read(tmp_path: Path, delimiter: str):
    (tmp_path / "a;b.png").write_bytes(_png(1, 0))  # a separator inside a quoted path stays part of it
    (tmp_path / "c.png").write_bytes(_png(0, 1))
    manifest = tmp_path / "labels.csv"
    manifest.write_text(delimiter.join(["Path", "Label", "Source"]) + "\r\n"
                        + delimiter.join(['"a;b.png"', "fake", "s 1"]) + "\r\n"
                        + delimiter.join(["c.png", "real", "s 2"]) + "\r\n")
    records = open_dataset(manifest)  # was: "needs 'path' and 'label' columns (found 'path;label;source')"
    assert [(Path(r.ref).name, r.label, r.source) for r in records] == [("a;b.png", AI, "s 1"), ("c.png", HUMAN, "s 2")]


def test_an_empty_label_cell_says_no_label(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,ai\nb.png,\n")
    with pytest.raises(DatasetError, match=r"m\.csv:3: no label \(2 of 2 columns"):  # was: unknown label ''
        open_dataset(manifest)


def test_a_zip_whose_manifest_is_not_where_it_is_read_says_so(tmp_path: Path):
    path = _zip(tmp_path / "nested.zip", [("meta/manifest.csv", "path,label\n../img/a.png,ai\n"),
                                          ("img/a.png", _png(1, 0))])
    with pytest.raises(DatasetError, match=r"it holds meta/manifest\.csv, which is not read as the manifest"):
        open_dataset(path)


def test_a_manifest_with_old_mac_line_endings_is_read(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(_png(1, 0))
    (tmp_path / "b.png").write_bytes(_png(0, 1))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,label\ra.png,ai\rb.png,real\r")  # was csv.Error's traceback
    assert [(Path(r.ref).name, r.label) for r in open_dataset(manifest)] == [("a.png", AI), ("b.png", HUMAN)]


def test_a_quote_never_closed_is_one_error_naming_the_line(tmp_path: Path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('path,label\na.png,ai\n"b.png,real\n' + "c.png,real\n" * 20_000)  # one cell past csv's limit
    with pytest.raises(DatasetError, match=r"m\.csv:\d+: field larger than field limit .*never closed"):
        open_dataset(manifest)  # was csv.Error's traceback
    manifest.write_text('path,label\na.png,ai\n"b.png,real\nc.png,real\n')
    with pytest.raises(DatasetError, match=r"m\.csv:3: no label .*a quote in it is never closed"):
        open_dataset(manifest)


def test_a_label_map_naming_no_folder_is_said(tmp_path: Path, caplog):
    for label, folder in ((1, "ai"), (0, "photos")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "0.png").write_bytes(_png(label, label))
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.datasets"):
        records = open_dataset(tmp_path, label_map={"photo": HUMAN})  # a typo for photos
    assert [r.label for r in records] == [AI]
    assert "--label photo: no folder of that name holds images (top folders: ai, photos)" in caplog.text


def test_a_source_split_says_when_rows_name_no_source(tmp_path: Path, caplog):
    from synthdetect.train.splits import split_records

    records = [Record(f"/d/{s or 'none'}-{i}.png", i % 2, source=s) for s in ("a", "b", "c", None) for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.splits"):
        split_records(records, "source", val_fraction=0.25, test_fraction=0.25, copies="keep")
    assert "4 of 16 records name no source; the split treats them as one source, (no source)" in caplog.text


def test_a_folder_that_cannot_be_listed_is_named_not_skipped_unseen(tmp_path: Path, monkeypatch, caplog):
    import os

    for label, folder in ((1, "ai"), (0, "real")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "0.png").write_bytes(_png(label, label))
    (tmp_path / "ai" / "locked").mkdir()
    scandir = os.scandir

    def refuse_locked(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)  # as a folder without read permission does for a user
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.datasets"):
        assert len(open_dataset(tmp_path)) == 2
    assert f"cannot list {tmp_path / 'ai' / 'locked'} (Permission denied); the images in it are left out" in caplog.text


def test_the_summary_counts_an_image_over_the_pixel_limit_as_unreadable_as_training_does(tmp_path: Path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)  # 900 MP claimed by a 60-byte file
    (tmp_path / "ai").mkdir()
    (tmp_path / "ai" / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                               + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    summary = summarize_dataset(open_dataset(tmp_path))
    # was: readable, 30000 px on the short side, where training and evaluation refuse it
    assert summary["unreadable_count"] == 1 and "too many pixels" in summary["unreadable"][0]
    assert summary["per_class"]["ai"]["short_side_px"] is None


def test_an_empty_dataset_path_is_refused_instead_of_reading_the_working_folder(tmp_path: Path, monkeypatch):
    (tmp_path / "ai").mkdir()
    (tmp_path / "ai" / "0.png").write_bytes(_png(1, 0))
    monkeypatch.chdir(tmp_path)  # before: the working folder was read as the dataset (an unset $DATA)
    with pytest.raises(DatasetError, match=r'an empty path \(""\) names no dataset'):
        open_dataset("")


def test_a_zipped_manifest_in_a_top_folder_finds_paths_written_from_the_zip_root(tmp_path: Path):
    path = _zip(tmp_path / "rooted.zip", [("data/manifest.csv", "path,label\ndata/img/a.png,ai\nimg/b.png,real\n"),
                                          ("data/img/a.png", _png(1, 0)), ("data/img/b.png", _png(0, 1))])
    records = open_dataset(path)  # was data/data/img/a.png: no such member, and the file unreadable
    assert [r.ref for r in records] == [f"{path}!data/img/a.png", f"{path}!data/img/b.png"]
    assert summarize_dataset(records)["unreadable_count"] == 0


def test_symbolic_links_stored_in_a_zip_are_said(tmp_path: Path, caplog):
    path = _zip(tmp_path / "links.zip", [("ai/0.png", _png(1, 0)), ("real/0.png", _png(0, 1))])
    with zipfile.ZipFile(path, "a") as archive:  # as `zip -ry` stores a link: its target's name, mode S_IFLNK
        link = zipfile.ZipInfo("real/1.png")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "../elsewhere/1.png")
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.datasets"):
        records = open_dataset(path)
    assert "1 entries are symbolic links stored as links, e.g. real/1.png" in caplog.text
    assert summarize_dataset(records)["unreadable_count"] == 1  # still counted and named, not left out


def test_files_in_hidden_or_nas_thumbnail_folders_are_not_read_as_data(tmp_path, caplog):
    """A Synology share puts @eaDir/x.jpg/SYNOPHOTO_THUMB_M.jpg beside every photo: it took its class folder's label
    and, as a near-copy that only byte-identical copies would catch, could sit on both sides of a split."""
    import logging
    import zipfile

    from PIL import Image

    from synthdetect.train.datasets import HIDDEN_FOLDERS, open_dataset

    root = tmp_path / "data"
    for folder in ("ai", "real", "ai/@eaDir/a0.png", "real/.thumbnails", ".git/ai"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i, folder in enumerate(("ai", "real", "ai/@eaDir/a0.png", "real/.thumbnails", ".git/ai")):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / folder / f"img{i}.png")
    (root / "real" / ".hidden-file.png").write_bytes((root / "real" / "img1.png").read_bytes())
    with caplog.at_level(logging.WARNING, logger="synthdetect.train.datasets"):
        records = open_dataset(root)
    assert sorted(Path(r.ref).relative_to(root).as_posix() for r in records) == [
        "ai/img0.png", "real/.hidden-file.png", "real/img1.png"]  # a hidden file, named, is still data
    assert records.skipped == {HIDDEN_FOLDERS: 3}
    assert "3 file(s) in hidden or thumbnail folders are not read as data" in caplog.text
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in root.rglob("*.png"):
            z.write(file, file.relative_to(root).as_posix())
    assert open_dataset(archive).skipped == {HIDDEN_FOLDERS: 3}
