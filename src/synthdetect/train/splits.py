"""Train / validation / test splits: random, stratified, by source, and leave-one-source-out.

Random splits of a scraped dataset put near-duplicates of one website or one
generator on both sides and flatter the model.  Source splits keep every
image of a source on one side, so validation asks the question users care
about: does it work on a source it has never seen?  All splits are
deterministic for a seed and do not depend on the order in which the dataset
lists its records (a manifest's rows).  Whatever the method, validation and
test files that are byte-identical to an earlier file are not scored (see
:mod:`synthdetect.train.duplicates`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from synthdetect.train.datasets import AI, HUMAN, Record, stratified_split
from synthdetect.train.duplicates import UnscoredCopy, describe_unscored, drop_scored_copies

logger = logging.getLogger(__name__)

SPLIT_METHODS = ("random", "stratified", "source", "loso")
#: exclude: copies of earlier files are not scored; keep: every file is scored, as cards made before 2026-11-22 were.
COPY_RULES = ("exclude", "keep")
UNKNOWN_SOURCE = "(no source)"
#: How records are ordered before a split is drawn, recorded on the card as ``training.split.order``.
#: "sorted by file": by path, so that the split depends only on the set of records and the seed; "as listed":
#: in the dataset's own order (a manifest's rows), as cards made before 2026-12-05 were, which name no order.
SPLIT_ORDERS = ("sorted by file", "as listed")


class SplitError(ValueError):
    pass


@dataclass
class Split:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    method: str
    held_out_sources: list[str] = field(default_factory=list)
    val_sources: list[str] = field(default_factory=list)
    copies: str = "keep"  # "exclude" once without_copies() has looked
    unscored: list[UnscoredCopy] = field(default_factory=list)
    order: str = "sorted by file"

    def describe(self) -> dict:
        out: dict = {"method": self.method, "order": self.order}
        if self.method == "stratified":
            out["method"] = "stratified random"  # the wording existing cards use
        if self.held_out_sources:
            out["test_sources"] = self.held_out_sources
        if self.val_sources:
            out["validation_sources"] = self.val_sources
        if self.copies == "exclude":
            out["copies_not_scored"] = describe_unscored(self.unscored)
        else:
            out["copies_not_scored"] = "not looked for: copies of training files may be scored"
        return out

    def without_copies(self) -> Split:
        """The same split with validation and test copies of earlier files taken out of scoring."""
        (train, val, test), unscored = drop_scored_copies([("train", self.train), ("validation", self.val),
                                                           ("test", self.test)])
        return Split(train, val, test, self.method, self.held_out_sources, self.val_sources, "exclude", unscored,
                     self.order)


def source_of(record: Record) -> str:
    return record.source or UNKNOWN_SOURCE


def random_split(records: Sequence[Record], fractions: Sequence[float], seed: int) -> list[list[Record]]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    cuts = np.cumsum(fractions)
    if not np.isclose(cuts[-1], 1.0):
        raise ValueError("split fractions must sum to 1")
    bounds = [0] + [int(round(c * len(records))) for c in cuts]
    return [[records[i] for i in order[bounds[k] : bounds[k + 1]]] for k in range(len(fractions))]


def _by_source(records: Sequence[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(source_of(record), []).append(record)
    return groups


def pick_sources(groups: dict[str, list[Record]], fraction: float, rng: np.random.Generator,
                 exclude: Sequence[str] = ()) -> list[str]:
    """Whole sources, in a seeded random order, until ``fraction`` of the images and both classes are covered.

    Sources holding both classes go first: a validation set of one class
    cannot calibrate a model or set a false-positive threshold.
    """
    names = [n for n in sorted(groups) if n not in exclude]
    total = sum(len(groups[n]) for n in names)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda n: len({r.label for r in groups[n]}) < 2)  # stable: mixed sources first
    chosen: list[str] = []
    count, classes = 0, set()
    target = fraction * total
    for name in order:
        if count >= target and classes >= {AI, HUMAN}:
            break
        labels, size = {r.label for r in groups[name]}, len(groups[name])
        needed = not labels <= classes  # brings a class the selection lacks
        if not needed and count + size > 1.5 * target and count > 0:
            continue  # would overshoot; a smaller source later may fit
        chosen.append(name)
        count += size
        classes |= labels
    return chosen


def split_records(
    records: Sequence[Record],
    method: str = "stratified",
    *,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
    holdout_sources: Sequence[str] = (),
    copies: str = "exclude",
    order: str = "sorted by file",
) -> Split:
    """Split ``records`` into train / validation / test.

    * ``random``: images shuffled; ``stratified``: the same, per class.
    * ``source``: whole sources go to test (``holdout_sources``, or picked at
      random for ``test_fraction``) and to validation; none is shared.
    * ``loso``: leave-one-source-out: exactly one named source is the test
      set; validation is made of other whole sources.

    With ``copies="exclude"`` (the default) the split is drawn as with
    ``"keep"``, then validation and test lose the files identical to an
    earlier one; training is the same either way.

    ``order="sorted by file"`` (the default) draws from the records sorted by path, so reordering a manifest's
    rows changes nothing; ``"as listed"`` rebuilds the splits of cards that record no order.
    """
    if copies not in COPY_RULES:
        raise SplitError(f"unknown copies rule '{copies}' (one of {', '.join(COPY_RULES)})")
    if order not in SPLIT_ORDERS:
        raise SplitError(f"unknown split order '{order}' (one of {', '.join(SPLIT_ORDERS)})")
    split = _draw_split(_ordered(records, order), method, val_fraction, test_fraction, seed, holdout_sources)
    split.order = order
    return split.without_copies() if copies == "exclude" else split


def record_sort_key(record: Record) -> tuple[str, int, str, str]:
    """The order splits are drawn in (``order="sorted by file"``): by path, then the other fields."""
    return record.ref, record.label, record.source or "", record.generator or ""


def rebuild_card_split(records: Sequence[Record], recorded: dict, copies: str = "keep") -> Split:
    """The split a card records (``training.split``), drawn again from the same records.

    Random and stratified splits: cards store each part's size and the seed, not the fractions asked for, so
    the fractions are read back from the sizes (rounded to whole percent, as ``--val-fraction``/``--test-fraction``
    are given), counting the copies a card left unscored and the files it could not read.  Source and loso
    splits: the card names the sources on each side.  Cards that name no ``order`` were drawn in the dataset's
    own order, and are again.
    """
    method = recorded.get("method", "stratified random")
    method = "stratified" if method == "stratified random" else method
    order = recorded.get("order", "as listed")
    if method in ("source", "loso"):
        groups = _by_source(_ordered(records, order))
        test_sources, val_sources = list(recorded.get("test_sources", [])), list(recorded.get("validation_sources", []))
        missing = [s for s in test_sources + val_sources if s not in groups]
        if missing:
            raise SplitError(f"the card's split names source(s) {', '.join(missing)} that the records do not hold")
        split = _source_parts(groups, method, test_sources, val_sources)
        split.order = order
        return split.without_copies() if copies == "exclude" else split
    if method not in ("random", "stratified"):
        raise SplitError(f"a card's split '{method}' cannot be rebuilt (one of {', '.join(SPLIT_METHODS)})")
    unscored = recorded.get("copies_not_scored")
    counts = unscored.get("counts", {}) if isinstance(unscored, dict) else {}
    sizes = {part: recorded[part]["n"] + recorded[part].get("unreadable", 0) + counts.get(part, 0)
             for part in ("train", "validation", "test")}
    total = sum(sizes.values())
    return split_records(records, method, val_fraction=round(sizes["validation"] / total, 2),
                         test_fraction=round(sizes["test"] / total, 2), seed=recorded["seed"], copies=copies,
                         order=order)


def _ordered(records: Sequence[Record], order: str) -> list[Record]:
    return sorted(records, key=record_sort_key) if order == "sorted by file" else list(records)


def _draw_split(records: list[Record], method: str, val_fraction: float, test_fraction: float, seed: int,
                holdout_sources: Sequence[str]) -> Split:
    if method not in SPLIT_METHODS:
        raise SplitError(f"unknown split '{method}' (one of {', '.join(SPLIT_METHODS)})")
    train_fraction = 1.0 - val_fraction - test_fraction
    if method in ("random", "stratified"):
        if holdout_sources:
            raise SplitError(f"--holdout-source needs --split source or loso, not {method}")
        split = random_split if method == "random" else stratified_split
        train, val, test = split(records, [train_fraction, val_fraction, test_fraction], seed)
        return Split(train, val, test, method)
    groups = _by_source(records)
    if len(groups) < 2:
        raise SplitError("a source split needs records with at least two sources (a 'source' column)")
    if UNKNOWN_SOURCE in groups:  # rows whose source cell is empty are pooled: say so, it may be an oversight
        logger.warning("%d of %d records name no source; the split treats them as one source, %s (fill in the "
                       "manifest's source column to hold them out by their real source)",
                       len(groups[UNKNOWN_SOURCE]), len(records), UNKNOWN_SOURCE)
    rng = np.random.default_rng(seed)
    holdout_sources = list(dict.fromkeys(holdout_sources))  # a source named twice is held out once, not twice
    unknown = [s for s in holdout_sources if s not in groups]
    if unknown:
        raise SplitError(f"unknown source(s) {', '.join(unknown)} (sources: {', '.join(sorted(groups))})")
    if method == "loso":
        if len(holdout_sources) != 1:
            raise SplitError("--split loso needs exactly one --holdout-source (the source left out)")
        test_sources = list(holdout_sources)
    elif holdout_sources:
        test_sources = list(holdout_sources)
    else:
        test_sources = pick_sources(groups, test_fraction, rng) if test_fraction > 0 else []
    rest = {n: g for n, g in groups.items() if n not in test_sources}
    rest_total = sum(len(g) for g in rest.values())
    # val_fraction is a share of all images; express it as a share of what is left after the test sources.
    val_share = min(val_fraction * len(records) / max(rest_total, 1), 1.0)
    val_sources = pick_sources(rest, val_share, rng)
    return _source_parts(groups, method, test_sources, val_sources)


def _source_parts(groups: dict[str, list[Record]], method: str, test_sources: Sequence[str],
                  val_sources: Sequence[str]) -> Split:
    """Whole sources on each side; training gets every source not held out."""
    train_sources = [n for n in groups if n not in test_sources and n not in val_sources]
    if not train_sources:
        raise SplitError("no source is left for training after holding out validation and test sources")
    train = [r for n in sorted(train_sources) for r in groups[n]]
    val = [r for n in sorted(val_sources) for r in groups[n]]
    test = [r for n in sorted(test_sources) for r in groups[n]]
    return Split(train, val, test, method, held_out_sources=sorted(test_sources), val_sources=sorted(val_sources))


def leave_one_source_out(records: Sequence[Record], *, val_fraction: float = 0.2, seed: int = 0) -> Iterator[Split]:
    """One split per source: that source is the test set (the LOSO folds)."""
    for source in sorted(_by_source(records)):
        yield split_records(records, "loso", val_fraction=val_fraction, seed=seed, holdout_sources=[source])
