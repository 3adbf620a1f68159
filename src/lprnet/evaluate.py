"""Accuracy of a recognizer on labelled real plates.

Inputs are the layouts :mod:`lprnet.data.real` reads: folders of crops labelled by file name
(``皖A12345.jpg``, ``皖A12345_3.jpg``) or single such files, ``path,plate`` CSV/TSV manifests,
and folders of full CCPD images (rectified from the vertices in their names); the layout is
detected, or named with a ``folder:``, ``manifest:`` or ``ccpd:`` prefix.  Reports whole-plate
accuracy, per-character accuracy (1 - character error rate from the edit distance) and a confusion
summary: the most frequent substitutions (true -> read) plus counts of dropped and inserted
characters.  A plate reached twice (a file given twice, or a folder and a manifest listing the same
file) is scored once; the repeats are counted, and a repeat with another label is reported by name.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lprnet.charset import Charset
from lprnet.core.process import IMAGE_EXTENSIONS, ImageError, display_path, label_from_filename
from lprnet.data.real import (
    DataError,
    Problem,
    Sample,
    label_conflicts,
    load_crop,
    scan_source,
    split_by_label,
    split_kind_prefix,
)
from lprnet.recognizer import Recognizer


def edit_ops(truth: str, pred: str) -> tuple[int, list[tuple[str, str]], int, int]:
    """(edit distance, substitutions, deletions, insertions) aligning pred to truth.

    The Levenshtein distance, from a minimal alignment that prefers a substitution where one
    ties with a deletion and an insertion (so one misread character is one error, one confusion).
    Hand-written for that preference: ``rapidfuzz.distance.Levenshtein.editops`` gives the same distance but
    breaks such ties the other way (``'BBBA'`` -> ``'皖AAB'``: two confusions, a deletion and an insertion
    where this counts four confusions), which would move counts between the confusion table and the
    drop/insert totals.
    """
    n, m = len(truth), len(pred)
    d = [[i + j if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j - 1] + (truth[i - 1] != pred[j - 1]), d[i - 1][j] + 1, d[i][j - 1] + 1)
    subs: list[tuple[str, str]] = []
    dels = ins = 0
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (truth[i - 1] != pred[j - 1]):
            if truth[i - 1] != pred[j - 1]:
                subs.append((truth[i - 1], pred[j - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            dels, i = dels + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    subs.reverse()
    return d[n][m], subs, dels, ins


def sign_test(only_a: int, only_b: int) -> float:
    """Two-sided exact sign test (McNemar's, exact) for two readers of the same plates: ``only_a`` plates
    only reader A reads right, ``only_b`` only B.  The probability, if both were equally good, of a split at
    least this uneven; 1.0 when no plate separates them."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"counts must be >= 0, got {only_a}, {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass
class EvalReport:
    n: int = 0
    correct: int = 0
    chars_total: int = 0
    char_errors: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)
    substitutions: Counter[tuple[str, str]] = field(default_factory=Counter)
    deletions: int = 0
    insertions: int = 0
    wrong: list[dict[str, str]] = field(default_factory=list)
    repeats: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def char_accuracy(self) -> float:
        # 1 - character error rate, floored at 0 (insertions can exceed the characters there are)
        return max(0.0, 1.0 - self.char_errors / self.chars_total) if self.chars_total else 0.0

    def to_json(self, top: int = 10) -> dict[str, Any]:
        return {
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "char_accuracy": self.char_accuracy,
            "unreadable": self.unreadable,
            "confusions": [{"true": a, "read": b, "count": c}
                           for (a, b), c in self.substitutions.most_common(top)],
            "deletions": self.deletions,
            "insertions": self.insertions,
            "repeats_skipped": self.repeats,
            "wrong": self.wrong,
        }


def paired(a: EvalReport, b: EvalReport) -> tuple[int, int]:
    """Plates only reader ``a`` reads right and plates only ``b`` does, from two reports on the same plates.

    The plates are matched by file name and label (what a report keeps of a misread plate), so two
    files of one name and label in different folders count as one; feed the pair to :func:`sign_test`.
    """
    if a.n != b.n:
        raise ValueError(f"the reports score different plates ({a.n} and {b.n}): not a pair")
    wrong_a = Counter((w["path"], w["true"]) for w in a.wrong)
    wrong_b = Counter((w["path"], w["true"]) for w in b.wrong)
    return sum((wrong_b - wrong_a).values()), sum((wrong_a - wrong_b).values())


def labelled_samples(paths: Sequence[str | os.PathLike[str]], charset: Charset | None = None,
                     max_steps: int | None = None, labels: bool = True) -> tuple[list[Sample], list[Problem], int]:
    """The labelled plates under ``paths``, by name what could not become one, and the repeats skipped.

    A single image file is labelled by its name; anything else goes through
    :func:`lprnet.data.real.scan_source` (layout detected unless prefixed ``KIND:``).  A plate
    (file, and corners for a scene) reached again is kept once; a repeat that carries another label
    is a problem, since no reading can be right for both.  With ``charset``, a label it cannot write
    (or, for the Chinese charset, not 7 or 8 characters long, a stray ``IMG_0001.jpg``, or fitting no GA 36
    layout) is a problem too,
    named rather than scored as a misreading.  ``labels=False`` is for reading the images alone: a plate
    reached again under another label is then a repeat, not a problem.
    """
    found: list[Sample] = []
    problems: list[Problem] = []
    for raw in paths:
        p, kind = split_kind_prefix(raw)
        if kind is None and p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir():
            found.append(Sample(p, label_from_filename(p)))  # read errors are reported when it is recognized
            continue
        try:
            got, bad = scan_source(p, kind)
        except (DataError, OSError) as e:
            problems.append(Problem(str(p), str(e).removeprefix(f"{p}: ")))
            continue
        found.extend(got)
        problems.extend(bad)
    if charset is not None:
        found, unlabelled = _scorable(found, charset, max_steps)
        problems.extend(unlabelled)
    samples, conflicts, repeats = label_conflicts(found)
    if labels:
        problems.extend(Problem(found[i].where(), f"{why}; scored once, as the first") for i, why in conflicts)
    return samples, problems, repeats + (0 if labels else len(conflicts))


def unlabelled_images(paths: Sequence[str | os.PathLike[str]],
                      on_error: Callable[[str], None] | None = None) -> Iterator[Path | np.ndarray]:
    """The images :func:`evaluate` would read under ``paths`` (CCPD scenes rectified), without their
    labels: the input for estimating province shares (``--provinces auto``, ``lprnet provinces
    ccpd:DIR``) from the images themselves, as a deployed camera would.  What cannot become an image
    is skipped and, with ``on_error``, named to it as ``"PATH: why"``."""
    samples, problems, _ = labelled_samples(paths, labels=False)
    report = on_error or (lambda msg: None)
    for pr in problems:
        report(display_path(f"{pr.where}: {pr.message}"))
    for _, item in _inputs(samples, lambda s, e: report(display_path(str(e)))):  # an ImageError names its file
        yield item


def _inputs(samples: Sequence[Sample], on_error: Callable[[Sample, ImageError], None]
            ) -> Iterator[tuple[Sample, Path | np.ndarray]]:
    """``(sample, what the recognizer reads)``: a crop's path (the recognizer reads it and reports a bad
    file) or a scene's rectified crop (BGR, as OpenCV reads it); scenes that cannot be cropped go to
    ``on_error``."""
    for s in samples:
        if s.quad is None:
            yield s, s.path
            continue
        try:
            yield s, load_crop(s)
        except ImageError as e:
            on_error(s, e)


def _scorable(samples: list[Sample], charset: Charset, max_steps: int | None = None
              ) -> tuple[list[Sample], list[Problem]]:
    """Samples whose label the charset can write (and, for the Chinese charset, 7 or 8 characters long in a GA 36
    layout); the others as problems."""
    keep, bad = split_by_label(samples, charset, max_steps)
    return keep, [Problem(s.where(), "; ".join(why) + " (not scored)") for s, why in bad]


def evaluate(recognizer: Recognizer, paths: Sequence[str | os.PathLike[str]], batch_size: int = 100,
             progress: bool | None = False) -> EvalReport:
    """Recognize every labelled plate under ``paths`` (see the module docstring) and score it.

    Files that cannot be read and dataset entries that cannot become a plate are listed in
    ``unreadable`` by name; everything else is still scored.  ``progress`` shows a bar on stderr (``None``: when
    stderr is a terminal).
    """
    from tqdm import tqdm

    samples, problems, repeats = labelled_samples(paths, recognizer.charset, recognizer.config.output_length)
    rep = EvalReport(repeats=repeats)
    # names as printable text (display_path): a file name that is not UTF-8 must not break the JSON or the table
    rep.unreadable.extend({"path": display_path(pr.where), "error": display_path(pr.message)} for pr in problems)
    fed: list[Sample] = []

    def not_scored(path: str | os.PathLike[str], error: str) -> None:
        where = display_path(path)  # the error names the file already, as ImageError does: once is enough
        rep.unreadable.append({"path": where, "error": display_path(error).removeprefix(f"{where}: ")})

    def images() -> Iterator[Path | np.ndarray]:
        for s, item in _inputs(samples, lambda s, e: not_scored(s.path, str(e))):
            fed.append(s)
            yield item

    results = recognizer.iter_recognize(images(), channel_order="bgr", batch_size=batch_size)
    bar = tqdm(results, total=len(samples), desc="reading plates", unit="plate",
               disable=None if progress is None else not progress, file=sys.stderr)
    for k, res in enumerate(bar):
        sample = fed[k]
        f = sample.path
        if not res.ok:
            not_scored(f, res.error or "")
            continue
        truth = sample.plate
        rep.n += 1
        rep.chars_total += len(truth)
        if res.plate == truth:
            rep.correct += 1
            continue
        dist, subs, d, i = edit_ops(truth, res.plate)
        rep.char_errors += dist
        rep.substitutions.update(subs)
        rep.deletions += d
        rep.insertions += i
        rep.wrong.append({"path": display_path(Path(f).name), "true": truth, "read": res.plate})
    return rep
