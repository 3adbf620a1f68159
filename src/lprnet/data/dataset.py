"""Torch datasets for training: synthetic shards, real crops, a resumable mixing sampler, collate.

* :class:`ShardDataset` -- pre-rendered synthetic shards (``.npz`` with ``images`` N x H x W x 3
  uint8 BGR and ``labels``), held in memory or, for large sets, memory-mapped from an
  uncompressed ``.npy`` cache written once beside the shards;
* :class:`RealDataset` -- real samples (:mod:`lprnet.data.real`), cropped/rectified to the input
  size on first use and cached;
* :class:`ArrayDataset` -- images and labels already in memory (e.g. a generated validation set);
* :class:`MixSampler` + :class:`MixedDataset` -- an endless stream mixing sources with fixed
  ratios (``synth:0.8,real:0.2``).  Item ``k`` of the stream is a pure function of
  ``(seed, k)``: the source by an exact deterministic interleave, the index by a per-source,
  per-epoch permutation, the augmentation by ``rng(seed, k)``.  Resuming from a position is
  therefore exact whatever the number of DataLoader workers, and ranks of a DDP job take
  interleaved items of the same stream;
* :class:`Collate` -- ``(images float32 N x 3 x H x W via preprocess, targets concatenated,
  target_lengths, texts)`` for ``nn.CTCLoss``.

Every item is ``(bgr_uint8_image, text)``; the one preprocessing path is
:func:`lprnet.core.process.preprocess`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import sys
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lprnet.charset import Charset, ctc_min_steps
from lprnet.config import ModelConfig
from lprnet.core.process import IMAGE_EXTENSIONS, preprocess
from lprnet.data import real
from lprnet.errors import describe_error, first_line

Item = tuple[np.ndarray, str]
ShardMode = Literal["auto", "memory", "mmap"]
MEMORY_LIMIT_BYTES = 2 << 30  # "auto" keeps shards in memory below this many image bytes
#: RealDataset keeps the plate regions of CCPD scenes (for jittered views; ~280 KB each) in memory up to this many
#: bytes, and reads the rest again when drawn
REGION_CACHE_BYTES = 2 << 30


# --------------------------------------------------------------------------- sources


def find_shards(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """``.npz`` shard files of a folder (sorted), or the given files."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.npz") if not q.name.startswith(".")))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such shard file or directory")
    if not out:
        images = any(q.suffix.lower() in IMAGE_EXTENSIONS for p in map(Path, paths) if p.is_dir() for q in p.iterdir())
        raise FileNotFoundError(f"no .npz shards in {', '.join(map(str, paths))}" + (
            "; it holds image files: labelled crops are read with real:DIR (synth: is for `lprnet synth --format "
            "shards` output)" if images else ""))
    return out


def _missing_plates(folder: Path, found: int) -> str | None:
    """What is wrong when a shard folder holds fewer plates than its ``meta.json`` (``lprnet synth``'s) says:
    a render that was interrupted would otherwise train on part of its data; None when nothing is."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        want = int(meta["n"])
    except (OSError, ValueError, KeyError, TypeError):  # no meta.json (shards of another origin) or not ours
        return None
    if found >= want:
        return None
    return (f"its meta.json says {want} plates, the shards hold {found}: an interrupted `lprnet synth`? "
            "Run it again with the same arguments to finish it")


def _warn_if_incomplete(folder: Path, found: int) -> None:
    why = _missing_plates(folder, found)
    if why:
        warnings.warn(f"{folder}: {why}", stacklevel=3)


def check_shards(path: str | os.PathLike[str], charset: Charset, lengths: Sequence[int] | None,
                 max_steps: int | None, formats: Sequence[Sequence[str]] | None = None) -> real.CheckReport:
    """``lprnet check-data`` for a synthetic shard folder (``synth:DIR``): every shard readable, every label a
    training label (:func:`~lprnet.data.real.label_problems`), as many plates as its ``meta.json`` says.
    Each plate is an entry, named ``SHARD[index]``; an unreadable shard is one."""
    report = real.CheckReport()

    def problem(where: str | Path, what: str) -> None:
        report.problems.append(real.Problem(str(where), what))

    try:
        shards = find_shards(path)
    except FileNotFoundError as e:
        problem(path, first_line(e).removeprefix(f"{path}: "))
        report.checked = report.bad_entries = 1
        return report
    found = 0
    for p in shards:
        try:
            with np.load(p, allow_pickle=False) as z:  # one opening: the labels, then the images' header
                labels = z["labels"].astype(str).tolist()
                why = _shard_shape_problem(*_npz_member_header(z.zip, "images"), len(labels))
        except _SHARD_ERRORS as e:
            why = f"not a readable shard ({describe_error(e)})"
        if why:  # training refuses the shard: one bad entry, its plates uncounted
            problem(p, why)
            report.checked += 1
            report.bad_entries += 1
            continue
        found += len(labels)
        report.checked += len(labels)
        for j, text in enumerate(labels):
            why = real.label_problems(text, charset, lengths, max_steps, formats)
            report.bad_entries += bool(why)
            for m in why:
                problem(f"{p}[{j}]", m)
    if Path(path).is_dir() and (why := _missing_plates(Path(path), found)):
        problem(path, why)  # the folder as a whole: one entry more, as an unreadable source is
        report.checked += 1
        report.bad_entries += 1
    return report


def check_sources(paths: Sequence[str], *, kind: str | None = None, charset: Charset = real.DEFAULT_CHARSET,
                  lengths: Sequence[int] | None = (7, 8), check_images: bool = True,
                  workers: int = 4, formats: Sequence[Sequence[str]] | None = None) -> real.CheckReport:
    """``lprnet check-data``: paths (folders, manifests, CCPD folders; see :func:`~lprnet.data.real.check_dataset`)
    and ``lprnet train --data`` specs as written there (``real:DIR:0.5``, ``ccpd:DIR``, ``synth:SHARDS``) in one
    report. A spec's ``real`` is detected per path, as training does; ``folder``/``manifest``/``ccpd`` force that
    layout; ``synth`` goes to :func:`check_shards`. A path that exists is a path even if it looks like a spec.
    Raises ``ValueError`` for a malformed spec."""
    sources: list[str] = []
    shards: list[str] = []
    for p in paths:
        prefix, colon, _ = p.partition(":")
        if colon and prefix in SPEC_KINDS and not Path(p).exists():
            spec = parse_source(p)
            if spec.kind == "synth":
                shards.append(spec.path)
            else:
                sources.append(spec.path if spec.kind == "real" else f"{spec.kind}:{spec.path}")
        else:
            sources.append(p)
    report = (real.check_dataset(sources, kind=kind, charset=charset, lengths=lengths, check_images=check_images,
                                 workers=workers, formats=formats) if sources else real.CheckReport())
    for d in shards:
        r = check_shards(d, charset, lengths, real.DEFAULT_STEPS, formats)
        report.problems.extend(r.problems)
        report.checked += r.checked
        report.bad_entries += r.bad_entries
    return report


#: what reading a damaged ``.npz`` raises (bad zip, bad CRC, bad deflate stream, truncation, missing member)
_SHARD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


def _npz_member_bytes(path: Path, name: str) -> int:
    try:
        with zipfile.ZipFile(path) as z:
            return z.getinfo(f"{name}.npy").file_size
    except _SHARD_ERRORS as e:
        raise ValueError(f"{path}: not a readable shard ({describe_error(e)})") from None


def _npz_member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an open ``.npz`` archive, from its header (nothing decompressed past it)."""
    with archive.open(f"{name}.npy") as f:
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


def _shard_shape_problem(shape: tuple[int, ...], dtype: np.dtype, n_labels: int) -> str | None:
    """What is wrong with a shard's images array next to its labels (None: nothing)."""
    if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8 or shape[0] != n_labels:
        return f"images must be N x H x W x 3 uint8 matching {n_labels} labels, got {shape} {dtype}"
    return None


def _default_cache_dir(shard_dir: Path) -> Path:
    """``<shard dir>/.mmap`` when writable, else a per-folder cache under ``~/.cache/lprnet/mmap``."""
    if os.access(shard_dir, os.W_OK):
        return shard_dir / ".mmap"
    key = hashlib.sha1(str(shard_dir.resolve()).encode()).hexdigest()[:16]
    return Path("~/.cache/lprnet/mmap").expanduser() / key


def _mmap_images(shard: Path, cache_dir: Path) -> np.ndarray:
    """The shard's images memory-mapped from ``cache_dir/<stem>.images.npy`` (written once)."""
    cache = cache_dir / f"{shard.stem}.images.npy"
    st = shard.stat()
    stamp = cache_dir / f"{shard.stem}.images.src"
    want = f"{st.st_size} {st.st_mtime_ns}"
    if not (cache.exists() and stamp.exists() and stamp.read_text() == want):
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            with np.load(shard, allow_pickle=False) as z:
                images = z["images"]
        except _SHARD_ERRORS as e:
            raise ValueError(f"{shard}: not a readable shard ({type(e).__name__}: {e})") from None
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, images)
        os.replace(tmp, cache)
        tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(want)
        os.replace(tmp, stamp)
    return np.load(cache, mmap_mode="r")


class ShardDataset(Dataset[Item]):
    """Pre-rendered synthetic shards as one dataset of ``(image, text)``.

    ``mode="memory"`` decompresses everything into RAM; ``"mmap"`` writes each shard's images
    once to an uncompressed ``.npy`` in ``cache_dir`` (default ``<shard dir>/.mmap``, or
    ``~/.cache/lprnet/mmap/<hash>`` when the shard folder is read-only) and
    memory-maps it, so DataLoader workers share pages; ``"auto"`` picks memory below 2 GiB.
    With ``charset``, samples whose labels it cannot encode are dropped (with a warning); with
    ``ctc_steps`` too (the model's output length), so are labels too long for that many CTC steps
    (CTC's ``zero_infinity`` would otherwise train on them silently with a zero loss).
    """

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 charset: Charset | None = None, mode: ShardMode = "auto",
                 cache_dir: str | os.PathLike[str] | None = None, ctc_steps: int | None = None) -> None:
        self.paths = find_shards(paths)
        if mode == "auto":
            total = sum(_npz_member_bytes(p, "images") for p in self.paths)
            mode = "memory" if total <= MEMORY_LIMIT_BYTES else "mmap"
        if mode not in ("memory", "mmap"):
            raise ValueError(f"mode must be 'auto', 'memory' or 'mmap', got {mode!r}")
        self.mode = mode
        self.images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for p in self.paths:
            try:
                with np.load(p, allow_pickle=False) as z:
                    lab = z["labels"]
                    imgs = z["images"] if mode == "memory" else None
            except _SHARD_ERRORS as e:
                raise ValueError(f"{p}: not a readable shard ({describe_error(e)})") from None
            if imgs is None:
                imgs = _mmap_images(p, Path(cache_dir) if cache_dir else _default_cache_dir(p.parent))
            why = _shard_shape_problem(imgs.shape, imgs.dtype, len(lab))
            if why:
                raise ValueError(f"{p}: {why}")
            self.images.append(imgs)
            labels.append(lab.astype(str))
        self.offsets = np.cumsum([0] + [len(x) for x in labels]).tolist()
        all_labels = np.concatenate(labels) if labels else np.array([], str)
        if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
            _warn_if_incomplete(Path(paths), len(all_labels))
        keep = np.ones(len(all_labels), bool)
        if charset is not None:
            chars = set("".join(all_labels.tolist()))
            bad = {c for c in chars if c not in charset or c == charset.blank}
            if bad:
                keep = np.array([not (set(s) & bad) for s in all_labels.tolist()])
            keep &= np.char.str_len(all_labels) > 0
            if not keep.all():
                warnings.warn(f"{self.paths[0].parent}: dropped {int((~keep).sum())} of {len(keep)} "
                              f"synthetic samples whose labels the charset cannot encode "
                              f"({''.join(sorted(bad))!r})", stacklevel=2)
        if ctc_steps is not None:
            fits = np.array([ctc_min_steps(t) <= ctc_steps for t in all_labels.tolist()], bool)
            if not fits[keep].all():
                long = all_labels[keep & ~fits]
                warnings.warn(f"{self.paths[0].parent}: dropped {len(long)} of {len(keep)} synthetic samples whose "
                              f"labels the model's {ctc_steps} CTC steps cannot hold, e.g. {str(long[0])!r}",
                              stacklevel=2)
            keep &= fits
        self.index = np.flatnonzero(keep)
        self.labels = all_labels[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Item:
        g = int(self.index[i])
        s = bisect.bisect_right(self.offsets, g) - 1
        return np.asarray(self.images[s][g - self.offsets[s]]), str(self.labels[i])


class RealDataset(Dataset[Item]):
    """Real samples cropped (CCPD: rectified) to ``input_size``, cached after the first read.

    With ``charset``, samples whose labels cannot be training labels (``lprnet check-data``'s
    :func:`~lprnet.data.real.label_problems`: characters outside it, the wrong length, more than the model's
    CTC steps, for the Chinese charset no GA 36 layout) are dropped with a warning.  :meth:`preload` reads every
    image and drops the ones that cannot be read (each named in one warning); reading an image outside it raises
    :class:`~lprnet.core.process.ImageError` naming the file. Call :meth:`preload` before forking DataLoader
    workers to fill the cache once and share it.
    """

    def __init__(self, samples: Sequence[real.Sample], input_size: tuple[int, int] = (94, 24),
                 charset: Charset | None = None, margin: float = 0.0, cache: bool = True,
                 scene_jitter: bool = True) -> None:
        samples = list(samples)
        if charset is not None:
            samples, bad = real.split_by_label(samples, charset, ctc_steps(charset, input_size))
            if bad:
                warnings.warn(f"dropped {len(bad)} real samples whose labels cannot be training labels, e.g. "
                              f"{bad[0][0].where()}: {bad[0][1][0]} (`lprnet check-data` lists them all)",
                              stacklevel=2)
        self.samples = samples
        self.labels = [s.plate for s in samples]
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.margin = float(margin)
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.scene_jitter = bool(scene_jitter)
        self._regions: dict[int, tuple[np.ndarray, tuple[real.Point, ...]]] = {}
        self._cache_regions = cache
        self._region_bytes = 0  # approximate under preload's threads: a bound, not a ledger

    def __len__(self) -> int:
        return len(self.samples)

    def _region(self, i: int) -> tuple[np.ndarray, tuple[real.Point, ...]]:
        got = self._regions.get(i)
        if got is None:
            got = real.load_plate_region(self.samples[i])
            if self._cache_regions and self._region_bytes + got[0].nbytes <= REGION_CACHE_BYTES:
                self._regions[i] = got
                self._region_bytes += got[0].nbytes
        return got

    def augmented(self, i: int, rng: np.random.Generator) -> Item:
        """Sample ``i`` as a training view: scenes (CCPD) re-cropped with jittered corners and margin
        (:func:`~lprnet.data.real.scene_view`, when ``scene_jitter``), then :func:`augment`."""
        if self.scene_jitter and self.samples[i].quad is not None:
            region, quad = self._region(i)
            img = real.scene_view(region, quad, rng, self.input_size)
        else:
            img = self[i][0]
        return augment(img, rng), self.labels[i]

    def _load(self, i: int) -> np.ndarray:
        return real.load_crop(self.samples[i], self.input_size, self.margin)

    def __getitem__(self, i: int) -> Item:
        if self.cache is None:
            return self._load(i), self.labels[i]
        img = self.cache.get(i)
        if img is None:
            img = self.cache[i] = self._load(i)
        return img, self.labels[i]

    def _try_load(self, i: int) -> np.ndarray | str:
        try:
            return self._load(i)
        except (ValueError, OSError) as e:  # ImageError (unreadable, corners outside the scene), a failed read
            return first_line(e)

    def preload(self, workers: int = 4, progress: bool = False) -> None:
        """Read every crop now (threads), so forked workers share one cache.  Samples whose image cannot be
        read are dropped, the count and the first of them named in one warning.  Without a cache
        (``cache=False``) nothing is read here, and an unreadable image raises when it is drawn.  ``progress``
        shows a bar on stderr (tens of thousands of CCPD scenes take minutes)."""
        if self.cache is None:
            return
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm

        todo = [i for i in range(len(self)) if i not in self.cache]
        unreadable: list[str] = []
        with ThreadPoolExecutor(max(1, workers)) as ex:
            loads = tqdm(ex.map(self._try_load, todo), total=len(todo), disable=not progress, unit="image",
                         desc="reading real samples", file=sys.stderr, leave=False)
            for i, img in zip(todo, loads, strict=True):
                if isinstance(img, str):
                    unreadable.append(img)
                else:
                    self.cache[i] = img
            if unreadable:
                keep = [i for i in range(len(self)) if i in self.cache]
                self.samples = [self.samples[i] for i in keep]
                self.labels = [self.labels[i] for i in keep]
                self.cache = {new: self.cache[old] for new, old in enumerate(keep)}
                self._regions = {new: self._regions[old] for new, old in enumerate(keep) if old in self._regions}
                warnings.warn(f"dropped {len(unreadable)} real samples whose image cannot be read, e.g. "
                              f"{unreadable[0]} (`lprnet check-data` lists them all)", stacklevel=2)
            if self.scene_jitter and self._cache_regions:
                scenes = [i for i, s in enumerate(self.samples) if s.quad is not None and i not in self._regions]
                list(tqdm(ex.map(self._cache_region, scenes), total=len(scenes), disable=not progress,
                          unit="scene", desc="caching plate regions", file=sys.stderr, leave=False))

    def _cache_region(self, i: int) -> None:
        """Read scene ``i``'s plate region into the cache, unless the cache is full (then nothing is read now)."""
        if self._region_bytes < REGION_CACHE_BYTES:
            self._region(i)


class ArrayDataset(Dataset[Item]):
    """Images and labels already in memory."""

    def __init__(self, images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str]) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = [str(s) for s in labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Item:
        return np.asarray(self.images[i]), self.labels[i]


# --------------------------------------------------------------------------- source specs


@dataclass(frozen=True)
class SourceSpec:
    """``kind:PATH[:ratio]`` as given on the command line (``synth``, ``real``, ``ccpd``...)."""

    kind: str
    path: str
    ratio: float = 1.0

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}:{self.ratio:g}"


SPEC_KINDS = ("synth", "real", "folder", "manifest", "ccpd")


def parse_source(spec: str) -> SourceSpec:
    """Parse ``synth:DIR[:ratio]``, ``real:DIR_or_manifest[:ratio]``, ``ccpd:DIR[:ratio]``.

    ``real`` detects folder/manifest/CCPD layouts; ``folder`` and ``manifest`` force one.
    """
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in SPEC_KINDS or not rest:
        raise ValueError(f"data source {spec!r} must look like KIND:PATH[:RATIO] with KIND one of "
                         f"{', '.join(SPEC_KINDS)}")
    path, ratio = rest, 1.0
    head, sep, tail = rest.rpartition(":")
    if sep and head:
        try:
            ratio = float(tail)
            path = head
        except ValueError:
            pass
    if not ratio > 0 or not np.isfinite(ratio):
        raise ValueError(f"data source {spec!r}: the ratio must be a positive number")
    return SourceSpec(kind, path, ratio)


def ctc_steps(charset: Charset, input_size: tuple[int, int]) -> int:
    """The CTC steps (output length) of a model with this charset and input size: the longest label a
    training source may hold is checked against it."""
    return ModelConfig(charset=charset, input_size=tuple(input_size)).output_length  # type: ignore[arg-type]


def build_source(spec: SourceSpec, charset: Charset, input_size: tuple[int, int],
                 margin: float = 0.0, shard_mode: ShardMode = "auto", scene_jitter: bool = True) -> Dataset[Item]:
    """The dataset for one source spec."""
    if spec.kind == "synth":
        steps = ctc_steps(charset, input_size)
        return ShardDataset(spec.path, charset=charset, mode=shard_mode, ctc_steps=steps)
    kind = {"real": None, "folder": "folder", "manifest": "manifest", "ccpd": "ccpd"}[spec.kind]
    samples, problems = real.scan_source(spec.path, kind)
    if problems:  # malformed manifest rows, CCPD names, broken links: skipped, but not without a word
        warnings.warn(f"{spec.path}: skipped {len(problems)} entries that cannot become samples, e.g. {problems[0]} "
                      f"(see `lprnet check-data {spec.path}`)", stacklevel=2)
    if not samples:
        raise real.DataError(f"{spec.path}: no usable samples (see `lprnet check-data {spec.path}`)")
    samples, note = first_of_each_plate(samples, str(spec.path))
    if note:
        warnings.warn(note, stacklevel=2)
    return RealDataset(samples, input_size, charset, margin, scene_jitter=scene_jitter)


def first_of_each_plate(samples: Sequence[real.Sample], where: str) -> tuple[list[real.Sample], str | None]:
    """One sample per plate (file, and corners for a scene), the first listed, as ``lprnet eval`` scores them, and a
    note naming what was left out (None when nothing was): a plate listed twice with one label is read once, and
    one listed with two labels (:func:`~lprnet.data.real.label_conflicts`) keeps its first, since no reading can
    be right for both."""
    kept, conflicts, repeats = real.label_conflicts(samples)
    said = []
    if conflicts:
        i, why = conflicts[0]
        said.append(f"{len(conflicts)} entries label a plate listed before differently, e.g. "
                    f"{samples[i].where()}: {why} (the first label kept; `lprnet check-data {where}` lists "
                    "them)")
    if repeats:
        said.append(f"{repeats} entries repeat a plate listed before with its label (read once)")
    return kept, f"{where}: " + "; ".join(said) if said else None


# --------------------------------------------------------------------------- mixing


def _permutation(seed: int, source: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x5EED, source, epoch]).permutation(n)


class MixSampler(Sampler[tuple[int, int, int]]):
    """Endless, resumable stream of ``(k, source, index)`` mixing sources by ``ratios``.

    Position ``k`` counts items of the global stream (all ranks).  Source choice is an exact
    interleave (of every ``1/ratio`` items one goes to that source, nested for more than two
    sources), so every batch has the requested mix; the ``j``-th draw of source ``s`` is
    ``perm(seed, s, j // n_s)[j % n_s]``: each epoch of a source is a fresh shuffle.  Rank
    ``r`` of ``world_size`` takes the ``r``-th block of ``block`` consecutive items of every
    ``block * world_size`` (``block`` = the per-rank batch size): each rank's batch is a stretch of the
    interleave, so it has the mix too (taking every ``world_size``-th item instead would give each rank
    one source of a 1:1 mix on two ranks).  One process takes every item, whatever ``block``.
    """

    def __init__(self, sizes: Sequence[int], ratios: Sequence[float], seed: int = 0,
                 rank: int = 0, world_size: int = 1, start: int = 0, block: int = 1) -> None:
        if len(sizes) != len(ratios) or not sizes:
            raise ValueError("need one ratio per source and at least one source")
        if any(n <= 0 for n in sizes):
            raise ValueError(f"every source needs samples, sizes are {list(sizes)}")
        if any(not r > 0 for r in ratios):
            raise ValueError(f"ratios must be positive, got {list(ratios)}")
        self.sizes = [int(n) for n in sizes]
        fr = [Fraction(r).limit_denominator(10_000) for r in ratios]
        if any(f == 0 for f in fr):  # the interleave is exact to 1/10000: a smaller share would never be drawn
            raise ValueError(f"ratios below 1/10000 cannot be mixed exactly, got {list(ratios)}")
        total = sum(fr)
        # share of source i among sources i.. (the nested interleave)
        self._shares = [fr[i] / sum(fr[i:]) for i in range(len(fr))]
        self.ratios = [float(f / total) for f in fr]
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.block = int(block)
        self.start = int(start)
        self._perm_cache: dict[int, tuple[int, np.ndarray]] = {}

    def locate(self, k: int) -> tuple[int, int]:
        """(source, draw number within that source) of stream item ``k``."""
        for s, share in enumerate(self._shares[:-1]):
            a, b = share.numerator, share.denominator
            before = (k * a) // b  # items of source s among the first k of this level
            if ((k + 1) * a) // b > before:
                return s, before
            k -= before
        return len(self._shares) - 1, k

    def item(self, k: int) -> tuple[int, int, int]:
        s, j = self.locate(k)
        n = self.sizes[s]
        epoch, r = divmod(j, n)
        cached = self._perm_cache.get(s)
        if cached is None or cached[0] != epoch:
            cached = self._perm_cache[s] = (epoch, _permutation(self.seed, s, epoch, n))
        return k, s, int(cached[1][r])

    def set_position(self, start: int) -> None:
        """Start the next iteration at global stream position ``start``."""
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        b, span = self.block, self.block * self.world_size
        j = 0
        while True:  # with start a multiple of span (a step boundary), rank r's batches are whole blocks
            yield self.item(self.start + (j // b) * span + self.rank * b + j % b)
            j += 1


class MixedDataset(Dataset[Item]):
    """Indexed by :class:`MixSampler` items; applies :func:`augment` to sources flagged for it,
    seeded by the stream position so results do not depend on worker scheduling."""

    def __init__(self, sources: Sequence[Dataset[Item]], augment: Sequence[bool] | None = None,
                 seed: int = 0) -> None:
        self.sources = list(sources)
        self.augment = list(augment) if augment is not None else [False] * len(self.sources)
        if len(self.augment) != len(self.sources):
            raise ValueError("need one augment flag per source")
        self.seed = int(seed)

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> Item:
        k, s, i = key
        if self.augment[s]:
            rng = np.random.default_rng([self.seed, 0xA06, k])
            src = self.sources[s]
            if isinstance(src, RealDataset):
                return src.augmented(i, rng)
            img, text = src[i]
            return augment(img, rng), text
        return self.sources[s][i]


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light, label-preserving jitter: small affine (shift/scale/rotation/shear), brightness/
    contrast, occasional blur and noise. Deterministic given ``rng``."""
    h, w = img.shape[:2]
    ang = rng.uniform(-3.0, 3.0)
    scale = rng.uniform(0.93, 1.07)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, scale)
    m[0, 1] += rng.uniform(-0.1, 0.1)  # horizontal shear
    m[0, 2] += rng.uniform(-0.04, 0.04) * w
    m[1, 2] += rng.uniform(-0.08, 0.08) * h
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    f = out.astype(np.float32)
    f = (f - 127.5) * rng.uniform(0.75, 1.25) + 127.5 + rng.uniform(-30, 30)
    if rng.random() < 0.3:
        f = cv2.GaussianBlur(f, (3, 3), rng.uniform(0.3, 1.0))
    if rng.random() < 0.3:
        f += rng.normal(0.0, rng.uniform(2, 8), f.shape).astype(np.float32)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- collate


def encode_targets(texts: Sequence[str], charset: Charset) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated class indices and per-plate lengths (int64) for ``nn.CTCLoss``."""
    codes = [charset.encode(t) for t in texts]
    targets = torch.tensor([c for cs in codes for c in cs], dtype=torch.long)
    lengths = torch.tensor([len(cs) for cs in codes], dtype=torch.long)
    return targets, lengths


class Collate:
    """``[(image, text)] -> (images N x 3 x H x W float32, targets, target_lengths, texts)``."""

    def __init__(self, charset: Charset, input_size: tuple[int, int] = (94, 24)) -> None:
        self.charset = charset
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def __call__(self, batch: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        imgs = [b[0] for b in batch]
        texts = [b[1] for b in batch]
        x = torch.from_numpy(preprocess(imgs, self.input_size))
        targets, lengths = encode_targets(texts, self.charset)
        return x, targets, lengths, texts


def worker_init(_: int) -> None:
    """DataLoader worker init: keep OpenCV single-threaded (workers are the parallelism)."""
    cv2.setNumThreads(1)


def describe(ds: Any) -> str:
    """A short description of a dataset for logs and provenance."""
    if isinstance(ds, ShardDataset):
        return f"{len(ds)} synthetic samples in {len(ds.paths)} shard(s) ({ds.mode})"
    if isinstance(ds, RealDataset):
        return f"{len(ds)} real samples"
    return f"{len(ds)} samples"
