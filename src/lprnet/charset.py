"""Character sets: the ordered list of classes a model predicts, with the CTC blank.

A :class:`Charset` is the single source of truth for class count, index <-> character
mapping and the blank index.  The default is the reference LPRNet's 68-class Chinese set
(31 provinces, digits, 24 letters without I/O, then I, O and the blank ``-``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PROVINCES = "京沪津渝冀晋蒙辽吉黑苏浙皖闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
DIGITS = "0123456789"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O (plates do not use them in serials)
BLANK = "-"
SERIAL = DIGITS + LETTERS
NEW_ENERGY = "ABCDEFGHJK"  # GA 36 new-energy letters: D, A, B, C, E electric; F, G, H, J, K hybrid

#: GA 36 layouts of Chinese plates as the default charset can write them, one string of allowed
#: characters per position: blue/yellow (7 characters), green small car (new-energy letter 3rd)
#: and green large vehicle (new-energy letter last).  Used by grammar-constrained decoding.
CN_PLATE_FORMATS: tuple[tuple[str, ...], ...] = (
    (PROVINCES, LETTERS) + (SERIAL,) * 5,
    (PROVINCES, LETTERS, NEW_ENERGY, SERIAL) + (DIGITS,) * 4,
    (PROVINCES, LETTERS) + (DIGITS,) * 5 + (NEW_ENERGY,),
)


def fits_format(text: str, formats: Sequence[Sequence[str]] = CN_PLATE_FORMATS) -> bool:
    """True when ``text`` has one of the layouts in ``formats`` (see :data:`CN_PLATE_FORMATS`)."""
    return any(len(text) == len(f) and all(c in allowed for c, allowed in zip(text, f)) for f in formats)


def layout_problem(text: str, formats: Sequence[Sequence[str]] = CN_PLATE_FORMATS) -> str | None:
    """None when ``text`` fits one of ``formats``; otherwise what is wrong with it, measured against the layout of
    its length that it follows longest (e.g. ``character 3 'I' cannot stand there``).

    >>> layout_problem("皖AI2345")
    "character 3 'I' cannot stand there (I and O are not used on plates)"
    """
    same = [f for f in formats if len(f) == len(text)]
    if not same:
        return f"{len(text)} characters: no layout has that many"
    best = -1
    for f in same:
        bad = next((i for i, (c, allowed) in enumerate(zip(text, f)) if c not in allowed), None)
        if bad is None:
            return None
        best = max(best, bad)
    c = text[best]
    why = " (I and O are not used on plates)" if c in "IO" else ""
    return f"character {best + 1} {c!r} cannot stand there{why}"


def ctc_min_steps(text: str) -> int:
    """CTC output steps a label needs at least: one per character, plus a blank between equal neighbours."""
    return len(text) + sum(a == b for a, b in itertools.pairwise(text))


@dataclass(frozen=True)
class Charset:
    """An ordered set of single-character classes; ``blank`` is one of them (the CTC blank).

    >>> cs = Charset.chinese()
    >>> cs.num_classes, cs.blank_index, cs.encode("皖A12345")[:2]
    (68, 67, [12, 41])
    """

    chars: tuple[str, ...]
    blank: str = BLANK
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        object.__setattr__(self, "chars", chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"charset entries must be single characters, got {bad[:5]!r}")
        seen: dict[str, int] = {}
        dups = []
        for i, c in enumerate(chars):
            if c in seen:
                dups.append(c)
            seen[c] = i
        if dups:
            raise ValueError(f"charset has duplicate characters: {''.join(dups)!r}")
        if self.blank not in seen:
            raise ValueError(f"charset must contain the blank {self.blank!r}")
        if len(chars) < 2:
            raise ValueError("charset needs at least one character besides the blank")
        object.__setattr__(self, "_index", seen)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def chinese(cls) -> Charset:
        """The reference LPRNet charset (68 classes, blank last)."""
        return cls(tuple(PROVINCES + DIGITS + LETTERS + "IO" + BLANK))

    @classmethod
    def from_string(cls, s: str, blank: str = BLANK) -> Charset:
        """Build from a string of characters in class order; the blank is appended if absent."""
        if blank not in s:
            s = s + blank
        return cls(tuple(s), blank=blank)

    # ---------------------------------------------------------------- properties
    @property
    def num_classes(self) -> int:
        return len(self.chars)

    @property
    def blank_index(self) -> int:
        return self._index[self.blank]

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, c: object) -> bool:
        return c in self._index

    def __str__(self) -> str:
        return "".join(self.chars)

    # ---------------------------------------------------------------- mapping
    def index(self, c: str) -> int:
        try:
            return self._index[c]
        except KeyError:
            raise KeyError(f"character {c!r} is not in the charset") from None

    def encode(self, text: str) -> list[int]:
        """Map a plate string to class indices; raises ``ValueError`` naming unknown characters."""
        unknown = sorted({c for c in text if c not in self._index or c == self.blank})
        if unknown:
            raise ValueError(f"label {text!r} has characters outside the charset: {''.join(unknown)!r}")
        return [self._index[c] for c in text]

    def decode(self, indices: Iterable[int]) -> str:
        """Map class indices (blanks already removed or not) to a string, skipping blanks."""
        b = self.blank_index
        return "".join(self.chars[i] for i in indices if i != b)

    def invalid_chars(self, text: str) -> list[str]:
        """Characters of ``text`` that cannot be labels (unknown or the blank)."""
        return sorted({c for c in text if c not in self._index or c == self.blank})

    def to_json(self) -> dict[str, str]:
        return {"chars": "".join(self.chars), "blank": self.blank}

    @classmethod
    def from_json(cls, d: dict[str, str] | Sequence[str]) -> Charset:
        if isinstance(d, dict):
            return cls(tuple(d["chars"]), blank=d.get("blank", BLANK))
        return cls(tuple(d))


DEFAULT_CHARSET = Charset.chinese()
