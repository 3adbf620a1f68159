"""Offline batch recognition with Ray Data: many files in, one results table out.

The pipeline (:func:`run_batch`)::

    paths --from_items--> read tasks (bytes, or a read error) --map_batches--> actor pool
          (one Recognizer per actor: decode, recognize a batch) --> driver writes Parquet/CSV

* Inputs come from :func:`collect_inputs`: a folder (recursed, as ``lprnet recognize`` does) or
  a CSV/TSV manifest (its ``path`` column, paths relative to the manifest's folder; other columns
  ignored). A file name that is not valid UTF-8 is read, and written to the results escaped.
* Every input path gives exactly one output row ``path, plate, confidence, error``
  (:data:`SCHEMA`). A file that is missing, empty, corrupt or not an image -- or a batch whose
  inference raises -- gets ``error`` set, ``plate`` empty and ``confidence`` null; the job
  goes on.
* The weights file is read on the driver and its bytes travel to the actors through Ray's
  object store (put once; each actor gets a reference), so workers on other nodes need ``lprnet``
  installed but not the weights file (the bundled default weights travel the same way).
* Results are streamed to one file on the driver in input order (``preserve_order``), so
  memory stays bounded; an output path ending in ``/`` (or an existing folder) instead
  makes each worker write Parquet part files there (``Dataset.write_parquet``), for jobs
  too large to funnel through the driver.

Ray is imported inside the functions, so importing this module does not need it.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lprnet.core.process import (
    DECODE_MODES,
    IMAGE_EXTENSIONS,
    ImageError,
    decode_image_bytes,
    display_path,
    list_images,
)
from lprnet.errors import describe_error, sigterm_raises
from lprnet.weights import chmod_as_created

if TYPE_CHECKING:
    from lprnet.recognizer import Recognizer

SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("plate", pa.string(), nullable=False),
    pa.field("confidence", pa.float64()),
    pa.field("error", pa.string()),
])
OUT_SUFFIXES = (".parquet", ".csv")


class BatchJobError(ValueError):
    """A job that cannot start (bad input, output or weights); the message says why."""


# --------------------------------------------------------------------------- inputs


def _path_column(manifest: Path) -> tuple[list[str], list[str]]:
    """The ``path`` column of a CSV/TSV manifest (other columns, ``plate`` included, ignored), relative
    paths taken from the manifest's folder; rows without a path become warnings naming their line."""
    from lprnet.data.real import DataError, manifest_table

    try:
        _, header, body, starts = manifest_table(manifest)
    except DataError as e:
        raise BatchJobError(str(e)) from None
    if "path" not in header:
        raise BatchJobError(f"{manifest}: the manifest header must name a 'path' column")
    ip = header.index("path")
    out, warnings = [], []
    for n, row in zip(starts, body):
        if not row or all(not c.strip() for c in row):
            continue
        rel = row[ip].strip() if len(row) > ip else ""
        if not rel:
            warnings.append(f"{manifest}:{n}: no path in this row; skipped")
            continue
        p = Path(rel)
        out.append(str(p if p.is_absolute() else manifest.parent / p))
    return out, warnings


def collect_inputs(source: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Image paths of a folder (recursive) or a CSV/TSV manifest, and warnings about skipped rows.

    A manifest needs a ``path`` column; any other column (a ``plate`` label, a camera id) is ignored,
    since recognition needs no labels: one input per listed path. Raises :class:`BatchJobError` when
    nothing can be listed.
    """
    p = Path(source)
    if p.is_dir():
        return [str(q) for q in list_images([p])], []
    if not p.is_file():
        raise BatchJobError(f"{p}: no such file or directory")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise BatchJobError(f"{p}: is an image; give its folder or a manifest (CSV/TSV with a 'path' column)")
    paths, warnings = _path_column(p)
    if not paths:
        raise BatchJobError(f"{p}: the manifest lists no path" + (f" ({warnings[0]})" if warnings else ""))
    return paths, warnings


# --------------------------------------------------------------------------- stages


#: the largest file the read stage loads: a 64 M-pixel BMP (the pixel limit) is 192 MB; a larger file is no plate
#: crop, and Arrow's binary column cannot hold a value of 2 GiB or more (one such file would abort the whole job)
MAX_FILE_BYTES = 256 << 20


def read_files(batch: pa.Table) -> pa.Table:
    """Read stage: ``path`` -> ``path, data, error``; a file that cannot be read (or is over
    :data:`MAX_FILE_BYTES`) gets ``error``."""
    paths = batch.column("path").to_pylist()
    data: list[bytes] = []
    errors: list[str | None] = []
    for i, p in enumerate(paths):
        paths[i] = shown = display_path(p)  # a name that is not UTF-8 is read, and written escaped
        try:
            size = os.stat(p).st_size
            if size > MAX_FILE_BYTES:
                data.append(b"")
                errors.append(f"{shown}: {size:,} bytes, more than the {MAX_FILE_BYTES:,} bytes an image file may "
                              "be")
                continue
            data.append(Path(p).read_bytes())
            errors.append(None)
        except FileNotFoundError:
            data.append(b"")
            errors.append(f"{shown}: no such file")
        except IsADirectoryError:
            data.append(b"")
            errors.append(f"{shown}: is a directory")
        except OSError as e:
            data.append(b"")
            errors.append(f"{shown}: cannot read ({e.strerror or e})")
    return pa.table({"path": pa.array(paths, pa.string()), "data": pa.array(data, pa.binary()),
                     "error": pa.array(errors, pa.string())})


class RecognizerActor:
    """Actor-pool stage: holds one :class:`~lprnet.recognizer.Recognizer` and recognizes batches.

    ``files`` maps file names to bytes (the weights, plus an OpenVINO ``.bin`` beside an
    ``.xml``); they are written to a private temporary folder and the first entry is loaded.
    It may also be ``(ref,)``, a reference to that mapping in Ray's object store: a reference
    nested in an argument reaches the actor as it is, so the actor's constructor arguments stay
    small and a restarted actor fetches the weights again while the driver holds the reference.
    ``None`` loads the bundled default weights of the worker's installation.  ``decode``
    (``"auto"``, ``"plate"`` or ``"greedy"``) and ``provinces`` (province shares such as
    ``"皖=0.8"``) are passed to :func:`~lprnet.recognizer.load`.
    """

    def __init__(self, files: dict[str, bytes] | tuple[Any] | None, backend: str | None = None,
                 threads: int | None = 1, decode: str = "auto", provinces: str | None = None) -> None:
        if isinstance(files, tuple):
            import ray

            files = ray.get(files[0])
        self.recognizer, self._tmp = load_shipped(files, backend=backend, threads=threads, decode=decode,
                                                  provinces=provinces)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist()
        errors: list[str | None] = batch.column("error").to_pylist()
        plates = [""] * len(paths)
        confidences: list[float | None] = [None] * len(paths)
        images, where = [], []
        for i, (p, blob) in enumerate(zip(paths, batch.column("data").to_pylist())):
            if errors[i] is not None:
                continue
            try:
                images.append(decode_image_bytes(blob, name=p))
                where.append(i)
            except ImageError as e:
                errors[i] = str(e)
        if images:
            try:
                results = self.recognizer.recognize(images, channel_order="bgr", batch_size=len(images))
            except Exception as e:  # a failing batch is recorded per image, never fatal
                for i in where:
                    errors[i] = f"{paths[i]}: recognition failed ({type(e).__name__}: {e})"
            else:
                for i, r in zip(where, results):
                    if r.ok:
                        plates[i], confidences[i] = r.plate, float(r.confidence)
                    else:
                        errors[i] = f"{paths[i]}: {r.error}"
        return pa.table([paths, plates, confidences, errors], schema=SCHEMA)


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class BatchSummary:
    """What a job did: images, failures, wall time of the pipeline and where results went."""

    n: int
    failures: int
    seconds: float
    out: Path

    @property
    def images_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")

    def to_text(self) -> str:
        return (f"{self.n} images, {self.failures} failed, {self.seconds:.1f} s, "
                f"{self.images_per_s:.1f} images/s -> {self.out}")


def output_kind(out: str | os.PathLike[str]) -> str:
    """``"parquet"``, ``"csv"`` or ``"parquet-dir"`` (a path ending in ``/`` or an existing folder)."""
    s = str(out)
    p = Path(s)
    if s.endswith(("/", os.sep)) or p.is_dir():
        return "parquet-dir"
    suffix = p.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise BatchJobError(f"{p}: the output must end in .parquet or .csv, or be a folder (DIR/)")
    return suffix[1:]


def _check_writable(folder: Path, out: Path) -> None:
    """Create ``folder`` and write a probe file there, so an output that cannot be written fails before Ray starts."""
    above = folder
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():  # mkdir would say "File exists" of a folder the user never named
        raise BatchJobError(f"{out}: {above} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lprnet-probe-"):
            pass
    except OSError as e:
        raise BatchJobError(f"{out}: the output cannot be written there ({e.strerror or e})") from None


def _check_not_an_input(out: Path, inputs: list[str], manifest: str | os.PathLike[str] | None) -> None:
    """Refuse an output file that is the manifest or one of the inputs: the job would overwrite what it reads."""
    target = os.path.realpath(out)
    if manifest is not None and os.path.realpath(manifest) == target:
        raise BatchJobError(f"{out}: is the input manifest; write the results to another file")
    for p in inputs:  # only a same-named input can be the same file (symbolic links aside)
        if os.path.basename(p) == out.name and os.path.realpath(p) == target:
            raise BatchJobError(f"{out}: is one of the input files; write the results to another file")


def load_shipped(files: dict[str, bytes] | None, **load_kw: Any
                 ) -> tuple[Recognizer, tempfile.TemporaryDirectory[str] | None]:
    """A recognizer from weights shipped as bytes (:func:`weights_files`) to a worker that may not see the driver's
    disk: they are written to a private temporary folder, kept while the returned folder object lives, and the
    first entry is loaded with ``load_kw`` (:func:`~lprnet.recognizer.load`'s options); ``None``: the bundled
    default weights of the worker's installation."""
    from lprnet.recognizer import load

    if not files:
        return load(None, **load_kw), None
    tmp = tempfile.TemporaryDirectory(prefix="lprnet-weights-")
    for name, blob in files.items():
        (Path(tmp.name) / name).write_bytes(blob)
    return load(Path(tmp.name) / next(iter(files)), **load_kw), tmp


def weights_files(weights: str | os.PathLike[str] | None, backend: str) -> dict[str, bytes]:
    """The weights file (the bundled default when None) and its companions, as bytes.

    The file is also opened once here with ``backend`` (weights exported to the checked cache
    for the runtimes), so that a bad file stops the job with a clear message naming it before
    Ray starts.
    """
    from lprnet.weights import WeightsError, build_model, default_weights_path

    try:
        p = Path(weights) if weights is not None else default_weights_path()
        if backend == "torch":
            build_model(p, form="deploy")
        else:
            from lprnet.export.runtimes import load_backend

            be, _ = load_backend(p, backend, threads=1)
            del be  # a check only: the session is not kept while the job runs
    except (WeightsError, ValueError, RuntimeError) as e:
        raise BatchJobError(str(e)) from None
    except OSError as e:
        raise BatchJobError(f"{e.filename or weights}: {e.strerror or e}") from None
    try:
        files = {p.name: p.read_bytes()}
        if p.suffix.lower() == ".xml":  # OpenVINO IR: the weights live in the .bin beside it
            files[p.with_suffix(".bin").name] = p.with_suffix(".bin").read_bytes()
    except OSError as e:
        raise BatchJobError(f"cannot read weights: {e.filename or p}: {e.strerror or e}") from None
    return files


def _write_stream(ds: Any, out: Path, kind: str, overwrite: bool = False) -> tuple[int, int]:
    """Stream the dataset to one file, atomically: into a temporary file of its own beside ``out`` (two jobs
    writing the same ``out`` never share one), then moved into place; without ``overwrite``, a file that
    appeared at ``out`` while the job ran is not replaced. Returns (rows, failures)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    n = failures = 0
    try:
        writer: Any = pq.ParquetWriter(tmp, SCHEMA) if kind == "parquet" else pacsv.CSVWriter(tmp, SCHEMA)
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                table = table.select(SCHEMA.names).cast(SCHEMA)
                writer.write_table(table)
                n += table.num_rows
                failures += table.num_rows - table.column("error").null_count
        finally:
            writer.close()
    except BaseException:  # Ctrl-C and SIGTERM (see run_batch) included: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise
    chmod_as_created(tmp)
    _publish(tmp, out, overwrite)
    return n, failures


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move a finished results file into place. Without ``overwrite``, a file that appeared at ``out`` while the
    job ran is not replaced: the results stay in ``tmp``, named in the error (a job's hours are not thrown
    away). A hard link publishes without a window for a race; where the filesystem has none (vfat, some
    network mounts), an exclusive create of ``out`` followed by a rename does."""
    if overwrite:
        os.replace(tmp, out)
        return
    appeared = BatchJobError(f"{out}: the output file appeared while the job ran; the results are kept in {tmp} "
                             "(move it into place, or rerun with --overwrite)")
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links here
        try:
            os.close(os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise appeared from None
        os.replace(tmp, out)
        return
    tmp.unlink()


def _auto_address() -> str:
    """What Ray's ``address="auto"`` resolves to (the head address the last ``ray start`` recorded, else a running
    head found here), or ``"auto"`` when Ray cannot say: then ``ray.init`` reports it. A recorded head that has
    since stopped would otherwise have ``ray.init`` retry it for minutes."""
    try:
        from ray._private.services import canonicalize_bootstrap_address  # not public: any failure falls back

        return canonicalize_bootstrap_address("auto") or "auto"
    except Exception:
        return "auto"


def init_ray(ray_address: str | None, actors: int, cpus_per_actor: float, object_store_memory: int | None) -> None:
    """Join ``ray_address`` (or ``$RAY_ADDRESS``), or start a local Ray sized for the job; one-line errors."""
    import ray

    address = ray_address or os.environ.get("RAY_ADDRESS")  # ray.init honours RAY_ADDRESS too
    where = (f"--ray-address {ray_address}" if ray_address else
             f"RAY_ADDRESS={address}" if address else "a local Ray")
    target = _auto_address() if address == "auto" else address
    if target != address:
        where += f" (resolved to {target})"
    host, sep, port = (target or "").rpartition(":")
    if sep and host and port.isdigit() and "://" not in target:  # HOST:PORT of a cluster's head (its GCS)
        try:  # ray.init retries an address where nothing answers for minutes, printing warnings
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as e:
            raise BatchJobError(f"{where}: nothing answers at {host}:{port} ({e.strerror or e}); is the cluster's "
                                "head running (`ray start --head`), and is this its address?") from None
    try:
        if address:  # joining a cluster: it has its own CPUs
            ray.init(address=address, ignore_reinit_error=True)
        else:  # "local": a new Ray, not the last `ray start` cluster Ray would otherwise join
            need = math.ceil(actors * cpus_per_actor) + 1
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True, object_store_memory=object_store_memory)
    except Exception as e:  # ConnectionError, ValueError, TimeoutError...: one line, no traceback
        raise BatchJobError(f"{where}: cannot {'connect to' if address else 'start'} Ray "
                            f"({describe_error(e)})") from None


def _write_parquet_dir(ds: Any, out: Path) -> tuple[int, int]:
    """Write the results as Parquet part files into a hidden folder beside ``out`` and move it into place only when
    every part is written: a killed or failed job leaves no folder of some of the results that reads as all of
    them. Returns (rows, failed rows)."""
    import shutil

    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        ds.write_parquet(str(stage))
        errors = pq.read_table(str(stage), columns=["error"]).column("error")
        if out.is_dir():
            out.rmdir()  # empty: checked before the job, and nothing else writes there
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return len(errors), len(errors) - errors.null_count


def run_batch(
    inputs: list[str],
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    batch_size: int = 64,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    threads_per_actor: int = 1,
    decode: str = "auto",
    provinces: str | None = None,
    ray_address: str | None = None,
    object_store_memory: int | None = None,
    progress: bool = True,
    manifest: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> BatchSummary:
    """Recognize ``inputs`` (file paths) on Ray and write one row per path to ``out``.

    Joins the cluster at ``ray_address`` (``"auto"``, ``"ray://host:10001"``, ...), else at
    ``$RAY_ADDRESS`` (set by ``ray job submit``), or, when neither is given and Ray is not
    already initialised in this process, starts a local Ray sized for the actor pool plus one
    CPU for reading, and shuts it down at the end.  An output file that already exists is
    refused unless ``overwrite``; one that is an input or the ``manifest`` listing them,
    always.
    """
    from lprnet.recognizer import resolve_backend

    try:
        backend = resolve_backend(weights, backend)  # None: the one the weights need (.onnx, .xml, else torch)
    except ValueError as e:
        raise BatchJobError(str(e)) from None
    if batch_size < 1 or actors < 1 or cpus_per_actor <= 0 or threads_per_actor < 1:
        raise BatchJobError("batch size, actors, CPUs and threads per actor must be positive")
    if decode not in DECODE_MODES:
        raise BatchJobError(f"unknown decode {decode!r}; expected one of {', '.join(DECODE_MODES)}")
    if not inputs:
        raise BatchJobError("no input images")
    kind = output_kind(out)
    out = Path(out)
    if kind == "parquet-dir" and out.is_dir() and any(out.iterdir()):
        raise BatchJobError(f"{out}: the output folder is not empty")
    if kind != "parquet-dir":
        _check_not_an_input(out, inputs, manifest)
        if os.path.lexists(out) and not overwrite:  # a link that leads nowhere too: the job would end refused
            raise BatchJobError(f"{out}: the output file exists; pass --overwrite to replace it")
    _check_writable(out if kind == "parquet-dir" else out.parent, out)
    files = weights_files(weights, backend)
    if decode == "plate" or provinces:  # fail here, not in every actor (a charset that cannot write
        from lprnet.recognizer import load  # plates, bad province shares)

        try:
            load(weights, backend=backend, decode=decode, provinces=provinces)  # threads untouched
        except ValueError as e:
            raise BatchJobError(f"{'--provinces' if provinces else '--decode plate'}: {e}") from e

    import ray
    import ray.data

    with contextlib.ExitStack() as handlers:
        handlers.enter_context(sigterm_raises())  # from before Ray starts: a kill during its start-up still shuts
        started = False                           # it down (no orphans)
        try:
            if not ray.is_initialized():
                started = True
                init_ray(ray_address, actors, cpus_per_actor, object_store_memory)
                # ray.init put its own SIGTERM handlers in place (sys.exit(15), and its core worker's stack dump
                # and abort): ours again, so that a kill still removes the partial output and ends with 143
                handlers.enter_context(sigterm_raises())
            ctx = ray.data.DataContext.get_current()
            saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
            ctx.execution_options.preserve_order = True
            ctx.enable_progress_bars = progress
            try:
                t0 = time.perf_counter()
                rows_per_block = max(batch_size, math.ceil(len(inputs) / 2000))
                blocks = max(min(actors, len(inputs)), math.ceil(len(inputs) / rows_per_block))  # every actor busy
                ds = ray.data.from_items([{"path": p} for p in inputs], override_num_blocks=blocks)
                ds = ds.map_batches(read_files, batch_format="pyarrow", batch_size=batch_size)
                files_ref = ray.put(files)  # held here until the job ends: a restarted actor reads it again
                ds = ds.map_batches(RecognizerActor, batch_format="pyarrow", batch_size=batch_size,
                                    fn_constructor_kwargs={"files": (files_ref,), "backend": backend,
                                                           "threads": threads_per_actor, "decode": decode,
                                                           "provinces": provinces},
                                    compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor)
                if kind == "parquet-dir":
                    n, failures = _write_parquet_dir(ds, out)
                else:
                    n, failures = _write_stream(ds, out, kind, overwrite)
                seconds = time.perf_counter() - t0
            finally:
                ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        finally:
            if started:
                ray.shutdown()
    if n != len(inputs):  # one row per input is the contract; say so loudly if broken
        print(f"warning: {len(inputs)} inputs but {n} result rows", file=sys.stderr)
    return BatchSummary(n, failures, seconds, out)
