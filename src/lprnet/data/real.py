"""Real labelled plate data: folder, manifest and CCPD loaders, plate rectification, checks.

Three on-disk layouts are understood, each turned into a list of :class:`Sample`:

* ``folder`` -- crops labelled by file name, ``皖A12345.jpg`` or ``皖A12345_3.jpg``
  (:func:`lprnet.core.process.label_from_filename`), searched recursively;
* ``manifest`` -- a CSV or TSV file with a ``path,plate`` header (an optional ``kind``
  column), paths relative to the manifest's folder;
* ``ccpd`` -- full CCPD images whose names carry the bbox, the four plate vertices
  (BR, BL, TL, TR) and the plate as indices into :data:`PROVINCES` / :data:`ALPHABETS` /
  :data:`ADS`; :func:`load_crop` rectifies the plate with a perspective warp.

Loaders raise :class:`DataError` (listing problems) when ``strict`` and otherwise skip what
cannot become a sample.  :func:`check_dataset` goes through everything without stopping and
reports each bad label, unreadable file or malformed entry by name.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from lprnet.charset import CN_PLATE_FORMATS, DEFAULT_CHARSET, Charset, ctc_min_steps, layout_problem
from lprnet.config import ModelConfig
from lprnet.core.process import (
    IMAGE_EXTENSIONS,
    ImageError,
    decode_image_bytes,
    display_path,
    image_header,
    iter_tree,
    label_from_filename,
    read_file_bytes,
    read_image,
    walk_tree,
)

#: CTC output steps of the model at its default 94x24 input (18): the longest label it can read
DEFAULT_STEPS = ModelConfig().output_length

SourceKind = Literal["folder", "manifest", "ccpd"]
SOURCE_KINDS: tuple[str, ...] = ("folder", "manifest", "ccpd")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt")

# CCPD tables (CCPD2019/2020 README); the last entry "O" of each means "no character".
PROVINCES = "皖沪津渝冀晋蒙辽吉黑苏浙京闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新警学O"
ALPHABETS = "ABCDEFGHJKLMNPQRSTUVWXYZO"
ADS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789O"
CCPD_PLACEHOLDER = "O"

Point = tuple[float, float]


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the files and problems."""


@dataclass(frozen=True)
class Sample:
    """One labelled real plate.

    ``kind`` is the plate kind when known (``"blue"``, ``"green"``, ...), ``source`` the
    layout it came from, and ``quad`` the plate corners TL, TR, BR, BL in image pixels when
    the file is a full scene (CCPD) rather than a crop.
    """

    path: Path
    plate: str
    kind: str | None = None
    source: str = "folder"
    quad: tuple[Point, Point, Point, Point] | None = None
    row: str | None = field(default=None, compare=False)  # "manifest:line" of a manifest's sample

    def where(self) -> str:
        """The sample for a message: its file, and the manifest line that lists it when there is one (a wrong
        label is that line's, not the image's)."""
        return f"{self.row} ({display_path(self.path)})" if self.row else display_path(self.path)


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: the file (or ``manifest:line``) and what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:  # printable: a non-UTF-8 file name's bytes are written as \xff escapes
        return f"{display_path(self.where)}: {display_path(self.message)}"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`."""

    checked: int = 0
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    bad_entries: int = 0  # entries (files, manifest rows, unreadable sources) with at least one problem

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_files(self) -> list[str]:
        """The distinct places named by the problems (files, ``manifest:line``, sources)."""
        return sorted({p.where for p in self.problems})

    def summary(self) -> str:
        good = self.checked - self.bad_entries
        return (f"{self.checked} entries checked, {good} good, {self.bad_entries} with problems "
                f"({len(self.problems)} problems)")


# --------------------------------------------------------------------------- CCPD names


@dataclass(frozen=True)
class CcpdName:
    """The fields of a CCPD file name (see ``shared/notes/plates-and-data.md``)."""

    area: str
    tilt: tuple[int, int]
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2
    vertices: tuple[Point, Point, Point, Point]  # as in the name: BR, BL, TL, TR
    indices: tuple[int, ...]
    brightness: int
    blur: int
    plate: str

    @property
    def quad(self) -> tuple[Point, Point, Point, Point]:
        """The corners in TL, TR, BR, BL order (what :func:`rectify` takes)."""
        br, bl, tl, tr = self.vertices
        return (tl, tr, br, bl)


def _ints(s: str, sep: str, n: int | None, what: str) -> tuple[int, ...]:
    parts = s.split(sep)
    if n is not None and len(parts) != n:
        raise ValueError(f"{what} {s!r} needs {n} numbers separated by {sep!r}")
    if not all(p.isascii() and p.isdigit() for p in parts):  # int() would take "+1", " 1" and full-width digits
        raise ValueError(f"{what} {s!r} is not made of integers")
    return tuple(int(p) for p in parts)


def decode_ccpd_plate(indices: Sequence[int]) -> str:
    """CCPD plate indices -> plate string (province, letter, then 5 or 6 from ADS).

    Raises ``ValueError`` for a wrong count, an index out of range or the ``O``
    "no character" placeholder.
    """
    if len(indices) not in (7, 8):
        raise ValueError(f"plate has {len(indices)} indices, expected 7 (blue) or 8 (green)")
    tables = [PROVINCES, ALPHABETS] + [ADS] * (len(indices) - 2)
    out = []
    for pos, (i, table) in enumerate(zip(indices, tables, strict=True)):
        if not 0 <= i < len(table):
            raise ValueError(f"plate index {i} at position {pos + 1} is out of range 0..{len(table) - 1}")
        ch = table[i]
        if ch == CCPD_PLACEHOLDER and i == len(table) - 1:
            raise ValueError(f"position {pos + 1} is the 'O' (no character) placeholder")
        out.append(ch)
    return "".join(out)


def parse_ccpd_name(name: str | os.PathLike[str]) -> CcpdName:
    """Parse a CCPD file name (path or bare name); ``ValueError`` says which field is bad.

    >>> parse_ccpd_name("025-95_113-154&383_386&473-386&473_177&454_154&383_363&402-"
    ...                 "0_0_22_27_27_33_16-37-15.jpg").plate
    '皖AY339S'
    """
    stem = Path(name).stem
    fields = stem.split("-")
    if len(fields) != 7:
        raise ValueError(f"CCPD names have 7 '-'-separated fields, this one has {len(fields)}")
    area, tilt, bbox, verts, plate, bright, blur = fields
    if not (area.isascii() and area.isdigit()):
        raise ValueError(f"area field {area!r} is not digits")
    t = _ints(tilt, "_", 2, "tilt")
    corners = bbox.split("_")
    if len(corners) != 2:
        raise ValueError(f"bbox {bbox!r} needs two corners x&y_x&y")
    b = _ints(corners[0], "&", 2, "bbox corner") + _ints(corners[1], "&", 2, "bbox corner")
    vs = verts.split("_")
    if len(vs) != 4:
        raise ValueError(f"vertices {verts!r} need four points x&y separated by '_'")
    pts = tuple(tuple(float(v) for v in _ints(p, "&", 2, "vertex")) for p in vs)
    idx = _ints(plate, "_", None, "plate")
    text = decode_ccpd_plate(idx)
    (br,) = _ints(bright, "_", 1, "brightness")
    (bl,) = _ints(blur, "_", 1, "blurriness")
    return CcpdName(area, (t[0], t[1]), (b[0], b[1], b[2], b[3]), pts, idx, br, bl, text)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rectification


def rectify(image: np.ndarray, quad: Sequence[Point], out_size: tuple[int, int] = (94, 24),
            margin: float = 0.0) -> np.ndarray:
    """Warp the plate with corners ``quad`` (TL, TR, BR, BL) to an ``out_size`` (w, h) crop.

    ``margin`` keeps that fraction of the plate's width (left/right) and height (top/bottom)
    of surroundings around it, e.g. ``0.05``; pixels beyond the image edge replicate it.
    """
    w, h = (int(v) for v in out_size)
    if w < 1 or h < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    src = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    # the plate occupies the inner (1 / (1 + 2m)) of the output in each direction
    mx = w * margin / (1 + 2 * margin)
    my = h * margin / (1 + 2 * margin)
    dst = np.array([[mx, my], [w - mx, my], [w - mx, h - my], [mx, h - my]], dtype=np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _plate_size(q: np.ndarray) -> tuple[float, float]:
    """Mean width (top and bottom edges) and height (left and right) of corners TL, TR, BR, BL."""
    return (float(np.linalg.norm(q[1] - q[0]) + np.linalg.norm(q[2] - q[3])) / 2,
            float(np.linalg.norm(q[3] - q[0]) + np.linalg.norm(q[2] - q[1])) / 2)


def plate_region(image: np.ndarray, quad: Sequence[Point], pad: tuple[float, float] = (0.5, 1.0),
                 max_plate_width: int = 376) -> tuple[np.ndarray, tuple[Point, Point, Point, Point]]:
    """The part of a scene around the plate, and the plate corners in it.

    Keeps ``pad`` (x, y) times the plate's width and height of surroundings on each side (clipped to
    the image) and scales the region down so the plate is at most ``max_plate_width`` pixels wide:
    all a jittered re-crop (:func:`scene_view`) needs, at a fraction of the scene's memory.
    """
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    pw, ph = (max(v, 1.0) for v in _plate_size(q))
    h, w = image.shape[:2]
    x0 = max(int(np.floor(q[:, 0].min() - pad[0] * pw)), 0)
    y0 = max(int(np.floor(q[:, 1].min() - pad[1] * ph)), 0)
    x1 = min(int(np.ceil(q[:, 0].max() + pad[0] * pw)) + 1, w)
    y1 = min(int(np.ceil(q[:, 1].max() + pad[1] * ph)) + 1, h)
    region = image[y0:y1, x0:x1]
    q = q - (x0, y0)
    s = min(1.0, max_plate_width / pw)
    if s < 1.0:
        size = (max(1, round(region.shape[1] * s)), max(1, round(region.shape[0] * s)))
        region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        q = q * (size[0] / (x1 - x0), size[1] / (y1 - y0))
    pts = tuple((float(x), float(y)) for x, y in q)
    return np.ascontiguousarray(region), pts  # type: ignore[return-value]


def scene_view(image: np.ndarray, quad: Sequence[Point], rng: np.random.Generator,
               out_size: tuple[int, int] = (94, 24), corner: tuple[float, float] = (0.025, 0.10),
               margin: tuple[float, float] = (0.02, 0.12), box_p: float = 0.25) -> np.ndarray:
    """A training view of a labelled scene's plate, different on every draw.

    Each corner moves by up to ``corner`` (x, y) of the plate's width and height, a margin drawn
    from ``margin`` is kept around it, and with probability ``box_p`` the axis-aligned box around
    the moved corners is cropped instead of the plate quadrilateral (a detector's box, with the
    background a tilted plate leaves in its corners).  From one annotated scene it draws the
    tight, loose, shifted, rectified and unrectified crops a recognizer meets behind different
    detectors, where a fixed rectified crop teaches one framing.
    """
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    pw, ph = _plate_size(q)
    q = q + rng.uniform(-1.0, 1.0, (4, 2)) * (corner[0] * pw, corner[1] * ph)
    if rng.random() < box_p:
        (x0, y0), (x1, y1) = q.min(axis=0), q.max(axis=0)
        q = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    pts = [(float(x), float(y)) for x, y in q]
    return rectify(image, pts, out_size, float(rng.uniform(*margin)))


def _quad_problem(quad: Sequence[Point], shape: tuple[int, ...]) -> str | None:
    """Why a quad cannot be rectified (degenerate, not convex, outside the image), or None."""
    q = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    h, w = shape[:2]
    if (q[:, 0] < -1).any() or (q[:, 1] < -1).any() or (q[:, 0] > w + 1).any() or (q[:, 1] > h + 1).any():
        return f"plate vertices {q.astype(int).tolist()} lie outside the {w}x{h} image"
    cross = []
    for i in range(4):
        a, b, c = q[i], q[(i + 1) % 4], q[(i + 2) % 4]
        cross.append((b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]))
    if not (all(c > 0 for c in cross) or all(c < 0 for c in cross)):
        return f"plate vertices {q.astype(int).tolist()} are not a convex quadrilateral (TL, TR, BR, BL)"
    # the corners go round clockwise on the screen from the top left: a mirrored or rotated list would warp the
    # plate mirrored or upside down (a plate tilted by more than 45 degrees cannot be told from a rotated list)
    dx, dy = (q[1] + q[2] - q[0] - q[3]) / 2  # from the left edge's middle to the right edge's
    if not all(c > 0 for c in cross) or dx <= abs(dy):
        return (f"plate vertices {q.astype(int).tolist()} are not in the order top-left, top-right, bottom-right, "
                "bottom-left (CCPD: bottom-right, bottom-left, top-left, top-right): the crop would be mirrored or "
                "rotated")
    return None


def load_crop(sample: Sample, out_size: tuple[int, int] | None = None, margin: float = 0.0) -> np.ndarray:
    """The plate crop of ``sample`` as BGR uint8.

    Crops (folder/manifest samples without ``quad``) are returned as stored, or resized to
    ``out_size`` when given; scenes with a ``quad`` are rectified to ``out_size``
    (default 94x24). Raises :class:`~lprnet.core.process.ImageError` naming the file.
    """
    if sample.quad is not None:
        return rectify(_read_scene(sample), sample.quad, out_size or (94, 24), margin)
    img = read_image(sample.path)
    if out_size is not None and img.shape[:2] != (out_size[1], out_size[0]):
        img = cv2.resize(img, tuple(out_size))
    return img


def _read_scene(sample: Sample) -> np.ndarray:
    """The scene image of a sample with ``quad``, its corners checked against it; errors name the file."""
    img = read_image(sample.path)
    why = _quad_problem(sample.quad, img.shape)  # type: ignore[arg-type]
    if why:
        raise ImageError(f"{sample.path}: {why}")
    return img


def load_plate_region(sample: Sample) -> tuple[np.ndarray, tuple[Point, Point, Point, Point]]:
    """:func:`plate_region` of a scene sample (one with ``quad``); errors name the file."""
    if sample.quad is None:
        raise ValueError(f"{sample.path}: not a scene with plate corners")
    return plate_region(_read_scene(sample), sample.quad)


# --------------------------------------------------------------------------- loaders


def _finish(samples: list[Sample], problems: list[Problem], strict: bool, what: str) -> list[Sample]:
    if problems and strict:
        shown = "\n  ".join(map(str, problems[:10]))
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{what}: {len(problems)} problem(s):\n  {shown}{more}\n"
                        "(run `lprnet check-data` for the full list, or load with strict=False to skip them)")
    return samples


def _images_under(root: Path) -> tuple[list[Path], list[Problem]]:
    """The image files under ``root``, sorted (as :func:`~lprnet.core.process.list_images`), and a problem
    for each image name that leads nowhere (a broken symbolic link) and each folder that cannot be listed, which
    would otherwise vanish unseen."""
    files: list[Path] = []
    broken: list[Path] = []
    unlisted: list[Path] = []
    for q in walk_tree(root, unlisted):
        if q.suffix.lower() in IMAGE_EXTENSIONS:
            if q.is_file():
                files.append(q)
            elif q.is_symlink() and not q.exists():
                broken.append(q)
    problems = [Problem(str(q), "broken symbolic link (its target does not exist)") for q in sorted(broken)]
    problems += [Problem(str(q), "a folder that cannot be listed (no permission?): the images in it were not read")
                 for q in sorted(unlisted)]
    return sorted(files), problems


#: the file a folder of JPEGs from ``lprnet synth`` holds while the render runs (hidden, not an image)
UNFINISHED_MARKER = ".lprnet-synth-unfinished"


def _scan_folder(root: Path) -> tuple[list[Sample], list[Problem]]:
    if not root.is_dir():
        return [], [Problem(str(root), "not a directory")]
    files, problems = _images_under(root)
    if (root / UNFINISHED_MARKER).is_file():  # its plates are a part of what was asked for
        problems.insert(0, Problem(str(root), f"an unfinished `lprnet synth` render ({len(files)} crops, no "
                                              "labels.csv; killed?): render it again into an empty folder"))
    return [Sample(p, label_from_filename(p), source="folder") for p in files], problems


def manifest_table(path: Path) -> tuple[list[str], list[str], list[list[str]], list[int]]:
    """A CSV/TSV manifest as (its header as written, the header's names stripped and lower-cased, the rows after
    it, the line each of those rows starts on).  Tab-separated when the suffix is ``.tsv`` or the header holds a
    tab; a BOM is ignored; a quoted field may hold line breaks (a file name with a newline, as our own CSV
    output quotes it).  Raises :class:`DataError` naming the file when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # line breaks as written, for csv
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read manifest ({e})") from None
    if not text:
        raise DataError(f"{path}: empty manifest (expected a 'path,plate' header)")
    first = re.split(r"[\r\n]", text, maxsplit=1)[0]  # the header line, without splitting the whole file
    delim = "\t" if (path.suffix.lower() == ".tsv" or "\t" in first) else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    rows: list[list[str]] = []
    starts: list[int] = []
    line = 1
    try:
        for row in reader:
            rows.append(row)
            starts.append(line)
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{line}: cannot parse manifest ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty manifest (expected a 'path,plate' header)")
    return rows[0], [h.strip().lower() for h in rows[0]], rows[1:], starts[1:]


def _scan_manifest(path: Path) -> tuple[list[Sample], list[Problem]]:
    """A manifest's samples, each with its ``manifest:line`` (``Sample.row``), and its malformed rows."""
    try:
        written, header, body, starts = manifest_table(path)
    except DataError as e:
        return [], [Problem(str(path), str(e).removeprefix(f"{path}: "))]
    if "path" not in header or "plate" not in header:
        return [], [Problem(f"{path}:1", f"header {written!r} must name the columns 'path' and 'plate'")]
    ip, il = header.index("path"), header.index("plate")
    ik = header.index("kind") if "kind" in header else None
    base = path.parent
    samples: list[Sample] = []
    problems: list[Problem] = []
    for n, row in zip(starts, body):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            problems.append(Problem(f"{path}:{n}", f"{len(row)} fields, the header has {len(header)}"))
            continue
        rel, plate = row[ip].strip(), row[il].strip()
        if rel != row[ip] and not os.path.exists(base / rel) and os.path.exists(base / row[ip]):
            rel = row[ip]  # spaces that belong to the file's name (a quoted field), not to the layout
        if not rel or not plate:
            problems.append(Problem(f"{path}:{n}", "empty path or plate"))
            continue
        kind = (row[ik].strip() or None) if ik is not None else None
        p = Path(rel)
        samples.append(Sample(p if p.is_absolute() else base / p, plate, kind, "manifest", row=f"{path}:{n}"))
    return samples, problems


def _scan_ccpd(root: Path) -> tuple[list[Sample], list[Problem]]:
    if not root.is_dir():
        return [], [Problem(str(root), "not a directory")]
    samples: list[Sample] = []
    files, problems = _images_under(root)
    for p in files:
        try:
            c = parse_ccpd_name(p.name)
        except ValueError as e:
            problems.append(Problem(str(p), f"bad CCPD name: {e}"))
            continue
        kind = "green" if len(c.plate) == 8 else "blue"
        samples.append(Sample(p, c.plate, kind, "ccpd", c.quad))
    return samples, problems


def load_folder(root: str | os.PathLike[str], strict: bool = True) -> list[Sample]:
    """Crops named by their plate (``皖A12345.jpg``, ``皖A12345_3.jpg``), recursively."""
    return _finish(*_scan_folder(Path(root)), strict, str(root))


def load_manifest(path: str | os.PathLike[str], strict: bool = True) -> list[Sample]:
    """A CSV/TSV manifest with a ``path,plate[,kind]`` header; paths relative to its folder."""
    return _finish(*_scan_manifest(Path(path)), strict, str(path))


def load_ccpd(root: str | os.PathLike[str], strict: bool = True) -> list[Sample]:
    """Full CCPD images under ``root``; each sample carries the plate ``quad`` to rectify."""
    return _finish(*_scan_ccpd(Path(root)), strict, str(root))


def detect_kind(path: str | os.PathLike[str]) -> SourceKind:
    """``manifest`` for a CSV/TSV file, ``ccpd`` for a folder of CCPD-named images, else ``folder``."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            raise DataError(f"{p}: is an image, not a dataset (give its folder or a manifest)")
        if p.suffix.lower() == ".npz":
            raise DataError(f"{p}: is a shard of rendered plates, not a manifest (give its folder as synth:DIR)")
        return "manifest"
    if not p.is_dir():
        raise DataError(f"{p}: no such file or directory")
    names = []
    for q in iter_tree(p):  # lazy: 20 names, not the whole tree
        if q.suffix.lower() in IMAGE_EXTENSIONS:
            names.append(q.name)
            if len(names) >= 20:
                break
    parsed = 0
    for n in names:
        try:
            parse_ccpd_name(n)
            parsed += 1
        except ValueError:
            pass
    if any(p.glob("*.npz")) and (not names or (p / "meta.json").is_file()):  # `lprnet synth --format shards`'s
        raise DataError(f"{p}: holds shards of rendered plates (.npz), not labelled images: give it as synth:{p}")
    return "ccpd" if names and parsed * 2 >= len(names) else "folder"


_SCANNERS = {"folder": _scan_folder, "manifest": _scan_manifest, "ccpd": _scan_ccpd}


def split_kind_prefix(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """``ccpd:DIR`` -> (DIR, "ccpd"); no known ``KIND:`` prefix, or a path that exists as written -> (path, None)."""
    text = os.fspath(spec)
    kind, sep, rest = text.partition(":")
    if sep and kind in SOURCE_KINDS and not Path(text).exists():
        return Path(rest), kind
    return Path(text), None


def scan_source(path: str | os.PathLike[str], kind: str | None = None) -> tuple[list[Sample], list[Problem]]:
    """Samples and structural problems of one dataset (``kind`` detected when None)."""
    k = kind or detect_kind(path)
    if k not in _SCANNERS:
        raise DataError(f"unknown dataset kind {k!r}; expected one of {SOURCE_KINDS}")
    return _SCANNERS[k](Path(path))


def load_source(path: str | os.PathLike[str], kind: str | None = None, strict: bool = True) -> list[Sample]:
    """Load one dataset of any layout (``kind`` detected when None)."""
    return _finish(*scan_source(path, kind), strict, str(path))


# --------------------------------------------------------------------------- checks


def default_lengths(charset: Charset) -> tuple[int, ...] | None:
    """Plate lengths a label must have by default: 7 or 8 for the Chinese charset (GA 36), any for another."""
    return (7, 8) if charset == DEFAULT_CHARSET else None


def default_formats(charset: Charset) -> tuple[tuple[str, ...], ...] | None:
    """Layouts a label must fit by default: GA 36's (:data:`~lprnet.charset.CN_PLATE_FORMATS`, the layouts the
    plate decoding reads) for the Chinese charset, none for another."""
    return CN_PLATE_FORMATS if charset == DEFAULT_CHARSET else None


def split_by_label(samples: Iterable[Sample], charset: Charset = DEFAULT_CHARSET, max_steps: int | None = DEFAULT_STEPS
                   ) -> tuple[list[Sample], list[tuple[Sample, list[str]]]]:
    """The samples whose label can be a plate label for ``charset`` (:func:`label_problems`, with the lengths
    of :func:`default_lengths` and the layouts of :func:`default_formats`), and the others with their reasons."""
    lengths, formats = default_lengths(charset), default_formats(charset)
    keep: list[Sample] = []
    bad: list[tuple[Sample, list[str]]] = []
    for s in samples:
        why = label_problems(s.plate, charset, lengths, max_steps, formats)
        if why:
            bad.append((s, why))
        else:
            keep.append(s)
    return keep, bad


def label_problems(plate: str, charset: Charset = DEFAULT_CHARSET,
                   lengths: Iterable[int] | None = (7, 8), max_steps: int | None = DEFAULT_STEPS,
                   formats: Sequence[Sequence[str]] | None = None) -> list[str]:
    """Reasons ``plate`` cannot be a training label (empty list when it is fine).  ``max_steps`` is the
    model's CTC output length (18 at 94x24): a longer label can never be read, and CTC's ``zero_infinity``
    would train on it silently with a loss of 0.  With ``formats`` (:func:`default_formats`), a label of the
    right characters and length must also fit one of those layouts: ``皖AI2345`` or ``1234567`` is a mislabel
    (or a swapped column) that the plate decoding could never read."""
    if not plate:
        return ["empty label"]
    out = []
    bad = charset.invalid_chars(plate)
    if bad:
        why = f" ({charset.blank!r} is the CTC blank, not a plate character)" if charset.blank in bad else ""
        out.append(f"label {plate!r} has characters outside the charset: {''.join(bad)!r}{why}")
    if max_steps is not None and ctc_min_steps(plate) > max_steps:
        out.append(f"label {plate!r} needs {ctc_min_steps(plate)} CTC steps and the model has {max_steps}: "
                   "it can never be read")
    lengths = tuple(lengths) if lengths is not None else ()
    if lengths and len(plate) not in lengths:
        out.append(f"label {plate!r} has {len(plate)} characters, expected "
                   f"{' or '.join(map(str, lengths))}")
    if formats and not out and (why := layout_problem(plate, formats)):
        out.append(f"label {plate!r} fits no GA 36 plate layout: {why}")
    return out


def _file_problem(s: Sample, decode: bool = True) -> str | None:
    """Why a sample's file is unusable (without its name), or None: it cannot be read, or decoded (``decode``), or
    a scene's corners do not fit the image (without decoding: the size in its header)."""
    name = display_path(s.path)
    try:
        data = read_file_bytes(s.path)
        img = decode_image_bytes(data, name) if decode else None
    except ImageError as e:
        return str(e).removeprefix(f"{name}: ")
    if s.quad is None:
        return None
    if img is not None:
        return _quad_problem(s.quad, img.shape)
    header = image_header(data)
    if header is None:
        return "not an image: its header cannot be read"
    w, h, _, turn = header
    return _quad_problem(s.quad, (w, h) if turn in (5, 6, 7, 8) else (h, w))  # EXIF turns 5-8: a quarter turn


def label_conflicts(samples: Sequence[Sample]) -> tuple[list[Sample], list[tuple[int, str]], int]:
    """One sample per plate (its file, and its corners for a scene) in the order met: ``(kept, conflicts,
    repeats)``. A repeat with the same label is only counted; a repeat with another label is a conflict, given as
    ``(its index in samples, "labelled X here and Y before")``, since no reading can be right for both."""
    first: dict[tuple[str, Any], Sample] = {}
    kept: list[Sample] = []
    conflicts: list[tuple[int, str]] = []
    repeats = 0
    for i, s in enumerate(samples):
        try:
            where = os.path.realpath(s.path)
        except ValueError:  # a NUL byte in a manifest's path: no file, named when it is read
            where = str(s.path)
        seen = first.setdefault((where, s.quad), s)
        if seen is s:
            kept.append(s)
        elif seen.plate == s.plate:
            repeats += 1
        else:
            conflicts.append((i, f"labelled {s.plate!r} here and {seen.plate!r} before"))
    return kept, conflicts, repeats


def check_dataset(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], kind: str | None = None,
                  charset: Charset = DEFAULT_CHARSET, lengths: Iterable[int] | None = (7, 8),
                  check_images: bool = True, workers: int = 4, max_steps: int | None = DEFAULT_STEPS,
                  formats: Sequence[Sequence[str]] | None = None) -> CheckReport:
    """Check one or more datasets without stopping at the first problem.

    Reports, by file name: malformed manifest rows or CCPD names, labels with characters
    outside ``charset``, of a length not in ``lengths`` or (with ``formats``) fitting none of those layouts,
    missing/unreadable/corrupt images (decoded in ``workers`` threads when ``check_images``; otherwise only
    missing or unreadable files, and scenes' sizes from their headers) and CCPD vertices that cannot be
    rectified, and sources without a single entry.  A manifest row's label problems name the row
    (``manifest:line``) and its image.
    ``report.samples`` holds the samples without problems; the summary counts entries (files,
    manifest rows), so a file listed on two bad rows counts twice.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    lengths = tuple(lengths) if lengths is not None else None
    report = CheckReport()
    candidates: list[Sample] = []  # a manifest's carry their ``manifest:line`` (``row``)
    for spec in paths:
        path, prefixed = split_kind_prefix(spec)  # ``ccpd:DIR`` as everywhere else
        try:
            k = kind or prefixed or detect_kind(path)
            samples, problems = scan_source(path, k)
        except DataError as e:
            report.problems.append(Problem(str(path), str(e).removeprefix(f"{path}: ")))
            report.checked += 1
            report.bad_entries += 1
            continue
        if not samples and not problems:  # training would refuse it: "no usable samples"
            what = "no rows after the header" if k == "manifest" else f"no {'/'.join(IMAGE_EXTENSIONS)} images in it"
            problems = [Problem(str(path), f"no samples: {what}")]
        report.problems.extend(problems)
        report.checked += len(samples) + len(problems)
        report.bad_entries += len(problems)  # each a manifest row, a CCPD name or a whole source
        candidates.extend(samples)
    bad: dict[int, list[Problem]] = {}
    for i, s in enumerate(candidates):
        row = s.row
        # a manifest row's label is wrong in the manifest: name the row (a file may be listed on several rows)
        bad_label = [Problem(str(s.path), m) if row is None else Problem(row, f"{m} (image {s.path})")
                     for m in label_problems(s.plate, charset, lengths, max_steps, formats)]
        if bad_label:
            bad[i] = bad_label
    labelled = [i for i in range(len(candidates)) if i not in bad]  # rows whose labels are plates
    for j, why in label_conflicts([candidates[i] for i in labelled])[1]:  # one image, two labels: no reading is
        i, row = labelled[j], candidates[labelled[j]].row                 # right for both
        bad[i] = [Problem(str(candidates[i].path) if row is None else row,
                          why if row is None else f"{why} (image {candidates[i].path})")]
    if candidates:
        with ThreadPoolExecutor(max(1, workers)) as ex:
            for i, why in enumerate(ex.map(functools.partial(_file_problem, decode=check_images), candidates)):
                if why:  # the file is what is wrong: name it, and the manifest row that lists it
                    row = candidates[i].row
                    bad.setdefault(i, []).append(Problem(str(candidates[i].path),
                                                         why if row is None else f"{why} (row {row})"))
    for i, s in enumerate(candidates):
        if i in bad:
            report.bad_entries += 1
            report.problems.extend(bad[i])
        else:
            report.samples.append(s)
    return report
