"""Accuracy of a recognizer on folders labelled by file name (``皖A12345.jpg``, ``皖A12345_3.jpg``).

Reports whole-plate accuracy, per-character accuracy (1 - character error rate from the
edit distance) and a confusion summary: the most frequent substitutions (true -> read)
plus counts of dropped and inserted characters.
"""

from __future__ import annotations

import difflib
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lprnet.core.process import label_from_filename, list_images
from lprnet.recognizer import Recognizer


def edit_ops(truth: str, pred: str) -> tuple[int, list[tuple[str, str]], int, int]:
    """(edit distance, substitutions, deletions, insertions) aligning pred to truth."""
    subs: list[tuple[str, str]] = []
    dels = ins = 0
    sm = difflib.SequenceMatcher(a=truth, b=pred, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "replace":
            n = min(i2 - i1, j2 - j1)
            subs.extend(zip(truth[i1:i1 + n], pred[j1:j1 + n]))
            dels += max(0, (i2 - i1) - n)
            ins += max(0, (j2 - j1) - n)
        elif tag == "delete":
            dels += i2 - i1
        elif tag == "insert":
            ins += j2 - j1
    return len(subs) + dels + ins, subs, dels, ins


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

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def char_accuracy(self) -> float:
        return 1.0 - self.char_errors / self.chars_total if self.chars_total else 0.0

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
            "wrong": self.wrong,
        }


def evaluate(recognizer: Recognizer, paths: Sequence[str | os.PathLike[str]], batch_size: int = 100) -> EvalReport:
    """Recognize every image under ``paths`` and compare with the file-name labels."""
    files = list_images(paths)
    rep = EvalReport()
    for f, res in zip(files, recognizer.iter_recognize(files, batch_size=batch_size)):
        if not res.ok:
            rep.unreadable.append({"path": str(f), "error": res.error or ""})
            continue
        truth = label_from_filename(f)
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
        rep.wrong.append({"path": Path(f).name, "true": truth, "read": res.plate})
    return rep
