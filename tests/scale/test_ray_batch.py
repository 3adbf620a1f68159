"""``lprnet batch`` on a local Ray: every input once, failures per image, results as ``recognize``."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import lprnet  # noqa: E402
from lprnet.charset import Charset  # noqa: E402
from lprnet.cli import app  # noqa: E402
from lprnet.config import ModelConfig  # noqa: E402
from lprnet.core.process import list_images  # noqa: E402
from lprnet.data.synth import write_folder  # noqa: E402
from lprnet.model import LPRNet  # noqa: E402
from lprnet.scale.ray_batch import BatchJobError, collect_inputs, output_kind  # noqa: E402
from lprnet.weights import WeightsMeta, save_weights  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # Ray's own, from DataContext
              pytest.mark.xdist_group("ray")]  # one worker starts Ray at a time: its start-up times out under load
runner = CliRunner()
COMMON = ["--actors", "1", "--cpus-per-actor", "1", "--batch-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (``lprnet batch`` joins it and leaves it running); "local": a new one even
    where a `ray start` cluster (or a stale record of one in /tmp/ray) is on the machine."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             object_store_memory=200 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """~250 synthetic crops in nested folders, 2 corrupt files, 1 empty file, random weights."""
    d = tmp_path_factory.mktemp("batch")
    torch.manual_seed(3)
    w = save_weights(d / "w.safetensors", LPRNet().eval().state_dict(), WeightsMeta())
    root = d / "imgs"
    write_folder(root / "a", 120, seed=11, progress=False)
    write_folder(root / "b" / "c", 130, seed=12, progress=False)
    (root / "b" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "b" / "c" / "noise.png").write_bytes(os.urandom(300))
    (root / "empty.jpg").write_bytes(b"")
    bad = {str(root / "b" / "corrupt.jpg"), str(root / "b" / "c" / "noise.png"), str(root / "empty.jpg")}
    files = [str(p) for p in list_images([root])]
    assert len(files) == 253
    expected = {r.path: r for r in lprnet.load(w).recognize(files, batch_size=32)}
    assert {p for p, r in expected.items() if not r.ok} == bad
    return w, root, files, bad, expected


def _check(rows: list[dict], inputs: list[str], bad: set[str], expected: dict) -> None:
    paths = [r["path"] for r in rows]
    assert paths == inputs  # every input exactly once, in input order
    for r in rows:
        if r["path"] in bad or not Path(r["path"]).exists():
            assert r["error"] and r["plate"] == "", r
            continue
        assert not r["error"], r
        want = expected[r["path"]]
        assert r["plate"] == want.plate, r
        assert math.isclose(float(r["confidence"]), want.confidence, rel_tol=1e-4), (r, want.confidence)


def test_folder_to_parquet(ray_session, job, tmp_path):
    w, root, files, bad, expected = job
    out = tmp_path / "results.parquet"
    res = runner.invoke(app, ["batch", str(root), "--out", str(out), "--weights", str(w), *COMMON])
    assert res.exit_code == 1, res.output  # some files failed: exit 1, but the job completed
    assert "253 images, 3 failed" in res.stdout
    table = pq.read_table(out)
    assert table.schema.names == ["path", "plate", "confidence", "error"]
    rows = table.to_pylist()
    _check(rows, files, bad, expected)
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert "empty file" in errors[str(root / "empty.jpg")]
    assert all(r["confidence"] is None for r in rows if r["error"])
    assert ray.is_initialized()  # joined the session, did not shut it down


def test_manifest_to_csv(ray_session, job, tmp_path):
    w, root, files, bad, expected = job
    picked = files[::7]
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        wr.writerow(["path", "plate"])
        wr.writerows([os.path.relpath(p, root), "皖A12345"] for p in picked)
        wr.writerow(["missing/皖A00000.jpg", "皖A00000"])
    inputs = [str(root / os.path.relpath(p, root)) for p in picked] + [str(root / "missing" / "皖A00000.jpg")]
    out = tmp_path / "out" / "results.csv"
    res = runner.invoke(app, ["batch", str(manifest), "--out", str(out), "--weights", str(w), *COMMON])
    assert res.exit_code == 1, res.output
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "plate", "confidence", "error"]
    _check(rows, inputs, bad, expected)
    assert "no such file" in rows[-1]["error"]


def test_path_only_manifest_to_parquet_folder(ray_session, job, tmp_path):
    w, _, files, bad, expected = job
    picked = [*files[:5], *sorted(bad)]
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in picked), encoding="utf-8")
    out = tmp_path / "parts"
    res = runner.invoke(app, ["batch", str(manifest), "--out", f"{out}/", "--weights", str(w), *COMMON])
    assert res.exit_code == 1, res.output
    assert f"{len(picked)} images, {len(bad)} failed" in res.stdout
    rows = sorted(pq.read_table(out).to_pylist(), key=lambda r: picked.index(r["path"]))
    _check(rows, picked, bad, expected)
    res = runner.invoke(app, ["batch", str(manifest), "--out", f"{out}/", "--weights", str(w), *COMMON])
    assert res.exit_code == 2 and "not empty" in res.output


def test_non_utf8_file_name_is_read_and_written_escaped(ray_session, job, tmp_path):
    """A file name that is not valid UTF-8 (bytes Python keeps as surrogates) neither kills the job nor loses
    its row: it is read and recognized, its path written with the bad bytes as \\x escapes."""
    w, _, files, _, expected = job
    d = tmp_path / "names"
    d.mkdir()
    odd = os.path.join(os.fsencode(d), b"\xff\xfeplate.jpg")
    Path(os.fsdecode(odd)).write_bytes(Path(files[0]).read_bytes())
    Path(d / "ok.jpg").write_bytes(Path(files[1]).read_bytes())
    out = tmp_path / "r.csv"
    res = runner.invoke(app, ["batch", str(d), "--out", str(out), "--weights", str(w), *COMMON])
    assert res.exit_code == 0, res.output
    with out.open(encoding="utf-8") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    escaped = str(d / "\\xff\\xfeplate.jpg")
    assert set(rows) == {escaped, str(d / "ok.jpg")}
    assert rows[escaped]["plate"] == expected[files[0]].plate and not rows[escaped]["error"]
    assert [r.path for r in lprnet.load(w).recognize([os.fsdecode(odd)])] == [escaped]  # the API names it alike


def test_decode_option(ray_session, job, tmp_path):
    """``--decode greedy`` reaches the actors: rows equal a greedy recognizer's, not the default's."""
    w, _, files, bad, expected = job
    picked = [f for f in files if f not in bad][:60]
    greedy = {r.path: r for r in lprnet.load(w, decode="greedy").recognize(picked, batch_size=32)}
    assert any(greedy[p].plate != expected[p].plate for p in picked)  # the two decodings differ here
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in picked), encoding="utf-8")
    out = tmp_path / "greedy.parquet"
    res = runner.invoke(app, ["batch", str(manifest), "--out", str(out), "--weights", str(w), "--decode", "greedy",
                              *COMMON])
    assert res.exit_code == 0, res.output
    _check(pq.read_table(out).to_pylist(), picked, set(), greedy)
    anhui = {r.path: r for r in lprnet.load(w, provinces="皖").recognize(picked, batch_size=32)}
    assert all(r.plate.startswith("皖") for r in anhui.values())
    assert any(not r.plate.startswith("皖") for p, r in expected.items() if p in anhui)
    out = tmp_path / "anhui.parquet"
    res = runner.invoke(app, ["batch", str(manifest), "--out", str(out), "--weights", str(w), "--provinces", "皖",
                              *COMMON])
    assert res.exit_code == 0, res.output
    _check(pq.read_table(out).to_pylist(), picked, set(), anhui)


def test_decode_errors_stop_before_ray(job, tmp_path):
    w, root, _, _, _ = job
    res = runner.invoke(app, ["batch", str(root), "--out", str(tmp_path / "r.csv"), "--weights", str(w),
                              "--decode", "beam", *COMMON])
    assert res.exit_code == 2 and "unknown decode 'beam'" in res.output
    cfg = ModelConfig(charset=Charset.from_string("0123456789"))
    custom = save_weights(tmp_path / "digits.safetensors", LPRNet.from_config(cfg).eval().state_dict(),
                          WeightsMeta(config=cfg))
    res = runner.invoke(app, ["batch", str(root), "--out", str(tmp_path / "r.csv"), "--weights", str(custom),
                              "--decode", "plate", *COMMON])
    assert res.exit_code == 2 and "--decode plate" in res.output, res.output
    assert not (tmp_path / "r.csv").exists()
    res = runner.invoke(app, ["batch", str(root), "--out", str(tmp_path / "r.csv"), "--weights", str(w),
                              "--provinces", "皖=0.7,苏=0.6", *COMMON])
    assert res.exit_code == 2 and "--provinces" in res.output and "sum to 1.3" in res.output, res.output


def test_inputs_and_arguments(job, tmp_path):
    w, root, files, _, _ = job
    paths, warnings = collect_inputs(root)
    assert paths == files and not warnings
    tsv = tmp_path / "list.tsv"
    tsv.write_text("id\tpath\n1\t/x/a.jpg\n2\trel/b.png\n3\t\n", encoding="utf-8")  # no plate column is fine
    assert collect_inputs(tsv) == (["/x/a.jpg", str(tmp_path / "rel" / "b.png")],
                                   [f"{tsv}:4: no path in this row; skipped"])
    # a plate column is ignored, empty or not, and so is any other column: one input per listed path
    man = tmp_path / "m.csv"
    man.write_text("path,plate,camera\na.jpg,,cam1\nb.jpg,皖A12345,cam2\nc.jpg,bad label,\n", encoding="utf-8")
    assert collect_inputs(man) == ([str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c.jpg")], [])
    (tmp_path / "nopath.csv").write_text("file,plate\na.jpg,皖A12345\n", encoding="utf-8")
    with pytest.raises(BatchJobError, match="'path' column"):
        collect_inputs(tmp_path / "nopath.csv")
    with pytest.raises(BatchJobError, match="no such file"):
        collect_inputs(tmp_path / "nothing")
    assert output_kind("r.parquet") == "parquet" and output_kind("r.CSV") == "csv"
    assert output_kind(str(tmp_path) + "/") == "parquet-dir"
    with pytest.raises(BatchJobError, match=r"\.parquet or \.csv"):
        output_kind("r.json")
    res = runner.invoke(app, ["batch", str(root), "--out", str(tmp_path / "r.json"), "--weights", str(w)])
    assert res.exit_code == 2 and ".parquet or .csv" in res.output
    res = runner.invoke(app, ["batch", str(root), "--out", str(tmp_path / "r.csv"),
                              "--weights", str(tmp_path / "nope.safetensors")])
    assert res.exit_code == 2 and "nope.safetensors" in res.output


def test_an_output_that_cannot_be_written_fails_before_ray(job, tmp_path):
    w, root, _, _, _ = job
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "r.csv", f"{tmp_path / 'afile' / 'parts'}/"):
        res = runner.invoke(app, ["batch", str(root), "--out", str(out), "--weights", str(w), *COMMON,
                                  "--ray-address", "ray://127.0.0.1:1"])  # Ray is never reached
        assert res.exit_code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in res.output, res.output
    res = runner.invoke(app, ["batch", str(root), "--out", "/proc/nope/r.csv", "--weights", str(w), *COMMON,
                              "--ray-address", "ray://127.0.0.1:1"])
    assert res.exit_code == 2 and "cannot be written there" in res.output, res.output


def test_an_interrupted_stream_leaves_no_temp_file(tmp_path):
    """Ctrl-C while results stream to OUT.csv: neither OUT.csv nor OUT.csv.tmp is left behind."""
    import pyarrow as pa

    from lprnet.scale.ray_batch import SCHEMA, _write_stream

    class Interrupted:
        def iter_batches(self, **kw):
            yield pa.table({"path": ["a.jpg"], "plate": ["皖A12345"], "confidence": [0.9], "error": [None]},
                           schema=SCHEMA)
            raise KeyboardInterrupt

    for name in ("r.csv", "r.parquet"):
        out = tmp_path / name
        with pytest.raises(KeyboardInterrupt):
            _write_stream(Interrupted(), out, name.rsplit(".", 1)[1])
        assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_a_file_appearing_at_the_output_during_the_job_is_not_replaced(tmp_path):
    """Each job streams into a temporary file of its own; without --overwrite, an OUT that appeared while the job
    ran is kept and the job says so; with it, OUT is replaced. No temporary file is left either way."""
    import pyarrow as pa

    from lprnet.scale.ray_batch import SCHEMA, _write_stream

    out = tmp_path / "r.csv"
    temps = []

    class Rows:
        def iter_batches(self, **kw):
            temps.extend(tmp_path.glob(".r.csv.*.tmp"))
            out.write_text("someone else's\n")  # another job finished first
            yield pa.table({"path": ["a.jpg"], "plate": ["皖A12345"], "confidence": [0.9], "error": [None]},
                           schema=SCHEMA)

    with pytest.raises(BatchJobError, match="appeared while the job ran; the results are kept in") as e:
        _write_stream(Rows(), out, "csv")
    assert out.read_text() == "someone else's\n" and len(temps) == 1
    assert str(temps[0]) in str(e.value) and "皖A12345" in temps[0].read_text()  # the job's work is not lost
    temps[0].unlink()
    temps.clear()
    assert _write_stream(Rows(), out, "csv", overwrite=True) == (1, 0)
    assert "皖A12345" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_results_are_published_where_the_filesystem_has_no_hard_links(tmp_path, monkeypatch):
    """vfat and some network mounts refuse os.link: the finished results must still land at OUT, not vanish."""
    import errno

    import pyarrow as pa

    from lprnet.scale import ray_batch

    def no_links(*a):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    class Rows:
        def iter_batches(self, **kw):
            yield pa.table({"path": ["a.jpg"], "plate": ["皖A12345"], "confidence": [0.9], "error": [None]},
                           schema=ray_batch.SCHEMA)

    monkeypatch.setattr(ray_batch.os, "link", no_links)
    out = tmp_path / "r.csv"
    assert ray_batch._write_stream(Rows(), out, "csv") == (1, 0)
    assert "皖A12345" in out.read_text() and sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_a_file_too_large_for_an_image_is_one_error_row(tmp_path, monkeypatch):
    """Arrow's binary column cannot hold a value of 2 GiB: one such file aborted the whole job. Files over the
    limit are named in their row and not read; the rest of the batch is."""
    import pyarrow as pa

    from lprnet.scale import ray_batch

    monkeypatch.setattr(ray_batch, "MAX_FILE_BYTES", 1000)
    (tmp_path / "big.jpg").write_bytes(b"\xff" * 1001)
    (tmp_path / "ok.jpg").write_bytes(b"\xff" * 1000)
    got = ray_batch.read_files(pa.table({"path": [str(tmp_path / "big.jpg"), str(tmp_path / "ok.jpg")]}))
    assert got.column("data").to_pylist() == [b"", b"\xff" * 1000]
    err = got.column("error").to_pylist()
    assert err[1] is None
    assert err[0] == f"{tmp_path / 'big.jpg'}: 1,001 bytes, more than the 1,000 bytes an image file may be"


def test_a_crashed_job_exits_2_with_one_line(tmp_path, monkeypatch):
    """Exit 1 means "some files failed"; a job that broke (Ray, Arrow) is exit 2 and one line, not a traceback."""
    from lprnet.scale import ray_batch

    def broken(*a, **kw):
        raise RuntimeError("ArrowCapacityError: array cannot contain more than 2147483646 bytes\nmore")

    monkeypatch.setattr(ray_batch, "run_batch", broken)
    write_folder(tmp_path / "imgs", 2, seed=1, progress=False)
    r = CliRunner().invoke(app, ["batch", str(tmp_path / "imgs"), "-o", str(tmp_path / "r.csv"), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "error: the batch job failed: RuntimeError: ArrowCapacityError: array cannot contain" in r.stderr
    assert "more" not in r.stderr.split("bytes", 1)[1]

    class RayTaskError(RuntimeError):  # Ray's wrapper: its text starts with the worker's title in colour codes
        cause = ValueError("the real reason\ndetails")

    def broken_in_a_worker(*a, **kw):
        raise RayTaskError("\x1b[36mray::MapBatches(RecognizerActor)\x1b[39m (pid=1)\n  File ...")

    monkeypatch.setattr(ray_batch, "run_batch", broken_in_a_worker)
    r = CliRunner().invoke(app, ["batch", str(tmp_path / "imgs"), "-o", str(tmp_path / "r.csv"), "--no-progress"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: the batch job failed: ValueError: the real reason"
    # the command's own usage errors are not reported as a crashed job
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["batch", str(tmp_path / "empty"), "-o", str(tmp_path / "r.csv"), "--no-progress"])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: no images found under {tmp_path / 'empty'}"


def test_ray_address_from_the_environment_joins_that_cluster(ray_session, job, tmp_path):
    """Under ``ray job submit`` RAY_ADDRESS names the cluster: the command joins it (ray.init with num_cpus
    was refused: "When connecting to an existing cluster, num_cpus and num_gpus must not be provided")."""
    import subprocess
    import sys

    w, _, files, bad, expected = job
    picked = [f for f in files if f not in bad][:6]
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in picked), encoding="utf-8")
    out = tmp_path / "r.csv"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    r = subprocess.run([sys.executable, "-m", "lprnet", "batch", str(manifest), "--out", str(out), "--weights", str(w),
                        *COMMON], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    with out.open(encoding="utf-8") as f:
        _check(list(csv.DictReader(f)), picked, set(), expected)


def test_a_parquet_folder_appears_only_when_every_part_is_written(tmp_path):
    """Results for a folder are written into a hidden folder and moved into place at the end: a job that fails or is
    killed part-way (SystemExit, as SIGTERM raises) leaves neither a folder of some of the results nor the hidden
    one; a finished job leaves its parts in the (empty) folder that was named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lprnet.scale.ray_batch import _write_parquet_dir

    table = pa.table({"path": ["a.jpg", "b.jpg"], "plate": ["皖A12345", None], "confidence": [0.9, None],
                      "error": [None, "b.jpg: not a readable image"]})

    class Killed:
        def write_parquet(self, folder: str) -> None:
            pq.write_table(table, f"{folder}/part-0.parquet")
            raise SystemExit(143)

    class Done:
        def write_parquet(self, folder: str) -> None:
            pq.write_table(table, f"{folder}/part-0.parquet")

    out = tmp_path / "results"
    with pytest.raises(SystemExit):
        _write_parquet_dir(Killed(), out)
    assert list(tmp_path.iterdir()) == []
    out.mkdir()  # named and empty, as the command allows
    assert _write_parquet_dir(Done(), out) == (2, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["results"] and pq.read_table(out).num_rows == 2


def test_an_output_that_is_a_dangling_link_is_refused_before_the_job(tmp_path):
    from lprnet.scale.ray_batch import run_batch

    img = tmp_path / "皖A12345.png"
    img.write_bytes(b"x")
    out = tmp_path / "r.csv"
    out.symlink_to(tmp_path / "gone" / "r.csv")
    with pytest.raises(BatchJobError, match="the output file exists; pass --overwrite"):
        run_batch([str(img)], out)


def test_a_cluster_address_where_nothing_answers_is_one_error_line():
    """ray.init retries an address where nothing listens for minutes; the job says so at once, by the option."""
    import socket
    import time

    from lprnet.scale.ray_batch import init_ray

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()  # (called directly: in this test process another test's Ray may be running already)
    with pytest.raises(BatchJobError, match=f"--ray-address 127.0.0.1:{port}: nothing answers at 127.0.0.1:{port}"):
        init_ray(f"127.0.0.1:{port}", actors=1, cpus_per_actor=1.0, object_store_memory=None)
    assert time.monotonic() - t0 < 30



def test_ray_address_auto_whose_recorded_head_has_stopped_is_one_error_line(tmp_path, monkeypatch):
    """``auto`` joins the head the last ``ray start`` recorded; a head that has since stopped was retried by
    ray.init for minutes. The job resolves the address as Ray does and says at once that nothing answers there."""
    import socket
    import time

    import ray._private.services as services

    from lprnet.scale.ray_batch import init_ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # where Ray looks for the recorded address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])  # no other Ray of this test run counts
    t0 = time.monotonic()
    with pytest.raises(BatchJobError, match=rf"--ray-address auto \(resolved to \S+:{port}\): nothing answers "
                                            rf"at \S+:{port}"):  # Ray names this host by its address
        init_ray("auto", actors=1, cpus_per_actor=1.0, object_store_memory=None)
    assert time.monotonic() - t0 < 30


def test_sigterm_during_a_job_removes_the_partial_output_and_exits_143(job, tmp_path):
    """``ray.init`` puts its own SIGTERM handlers in place (Python's ``sys.exit(15)``, its core worker's stack dump
    and abort, exit 134): the job puts ours back, so that a kill (a container's stop, ``timeout``) still removes the
    partial output, shuts Ray down and ends with 143 as documented."""
    import signal
    import subprocess
    import sys
    import time

    w, _, files, bad, _ = job
    good = next(f for f in files if f not in bad)
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\n" + f"{good}\n" * 3000, encoding="utf-8")  # long enough to be killed part-way
    out = tmp_path / "r.csv"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "lprnet", "batch", str(manifest), "--out", str(out), "--weights",
                             str(w), "--actors", "1", "--cpus-per-actor", "1", "--batch-size", "1", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(p.name.startswith(".r.csv.") for p in tmp_path.iterdir()):  # the job is writing
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "SIGTERM received" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.tsv"]  # no output, no temporary file


@pytest.mark.parametrize("name, want", [("m.onnx", "onnxruntime"), ("m.XML", "openvino"), ("w.safetensors", "torch")])
def test_a_job_and_a_service_without_a_backend_take_the_one_their_weights_need(
        name: str, want: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_batch and the Ray Serve application, as the CLI and lprnet.load: an .onnx or .xml file picks its runtime
    (before, the Python API passed "torch" and refused the export); the weights are checked with that backend."""
    import lprnet.scale.ray_batch as rb
    import lprnet.scale.ray_serve as rs

    seen: list[str] = []

    def stop(weights: object, backend: str) -> dict[str, bytes]:
        seen.append(backend)
        raise BatchJobError("stop here")

    monkeypatch.setattr(rb, "weights_files", stop)
    monkeypatch.setattr(rs, "weights_files", stop)
    for call in (lambda: rb.run_batch(["a.jpg"], tmp_path / "o.csv", weights=tmp_path / name),
                 lambda: rs.build_application(tmp_path / name)):
        with pytest.raises(BatchJobError, match="stop here"):
            call()
    assert seen == [want, want]
    with pytest.raises(BatchJobError, match="unknown backend 'tensorrt'"):
        rb.run_batch(["a.jpg"], tmp_path / "o.csv", weights=tmp_path / name, backend="tensorrt")
