"""DDP: two CPU processes on gloo under torchrun end with identical weights; only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[2] / "src"
PLATES = ["皖A12345", "京AD12345", "沪C21F13", "粤B8888Z", "川JK0707", "苏E00001", "浙F9A9A9", "鲁Q12345"]

WORKER = """
import json, os, sys
import torch
from lprnet.train import make_config, train

if os.environ.get("STEP_SECONDS"):  # each rank's steps take this long (comma-separated, by rank)
    import time as real
    from types import SimpleNamespace

    from lprnet.train import trainer

    dt = float(os.environ["STEP_SECONDS"].split(",")[int(os.environ["RANK"])])
    clock = {"t": 0.0}

    def perf_counter():
        clock["t"] += dt
        return clock["t"]

    trainer.time = SimpleNamespace(perf_counter=perf_counter, time=real.time, strftime=real.strftime)
on_step = None
if os.environ.get("HANG_AT_STEP") and os.environ["RANK"] == "1":  # rank 1 stops taking part, without dying
    import time

    def on_step(step):
        if step == int(os.environ["HANG_AT_STEP"]):
            time.sleep(3600)
res = train(make_config(**json.loads(sys.argv[1])), on_step=on_step)
torch.save(res.state_dict, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


def _torchrun(tmp_path: Path, cfg: dict, timeout: float = 180, **env_extra: str) -> subprocess.CompletedProcess:
    """torchrun with 2 ranks, collectives timing out after 30 s unless ``cfg`` says otherwise.

    Output goes to files, not pipes: the ranks run in sessions of their own, and a pipe they hold
    would keep ``communicate`` waiting after torchrun is gone.  On ``timeout`` torchrun gets SIGTERM,
    which it passes on to its ranks, so a deadlocked run fails the test and leaves nothing behind."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", **env_extra)
    cfg = {"ddp_timeout_s": 30, **cfg}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp_path / "worker.py"), json.dumps(cfg), str(tmp_path)]
    out_path, err_path = tmp_path / "torchrun.out", tmp_path / "torchrun.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise AssertionError(f"torchrun did not finish in {timeout} s (a deadlock?)\n"
                                 f"{err_path.read_text()[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out_path.read_text(), err_path.read_text())


def test_time_budget_plan_is_rank_zeros_on_every_rank(tmp_path: Path) -> None:
    """Rank 1 measures 100x slower steps than rank 0; both follow rank 0's plan (else one rank would stop
    while the other waits in its next all-reduce)."""
    rng = np.random.default_rng(0)
    (tmp_path / "synth").mkdir()
    np.savez_compressed(tmp_path / "synth" / "shard-00000.npz",
                        images=rng.integers(0, 256, (8, 24, 94, 3), dtype=np.uint8), labels=np.array(PLATES))
    (tmp_path / "worker.py").write_text(WORKER)
    # rank 0: 0.01 s a step, budget 0.5 s -> 50 steps, planned at step 30; rank 1 alone would stop at step 30
    cfg = dict(data=[f"synth:{tmp_path / 'synth'}"], val_synth_n=0, steps=1000, time_budget_s=0.5,
               batch_size=2, lr=3e-3, warmup_steps=1, workers=0, threads=1, seed=3, log_every=1,
               eval_every=1000, ckpt_every=1000, progress=False, out=str(tmp_path / "run"), device="cpu")
    proc = _torchrun(tmp_path, cfg, STEP_SECONDS="0.01,1.0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == ck["planned_steps"] == 50


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "synth").mkdir()
    np.savez_compressed(tmp_path / "synth" / "shard-00000.npz",
                        images=rng.integers(0, 256, (8, 24, 94, 3), dtype=np.uint8), labels=np.array(PLATES))
    (tmp_path / "worker.py").write_text(WORKER)
    cfg = dict(data=[f"synth:{tmp_path / 'synth'}"], val_synth=str(tmp_path / "synth"), val_synth_n=0,
               steps=3, batch_size=2, lr=3e-3, warmup_steps=1, workers=0, threads=1, seed=3, log_every=1,
               eval_every=3, ckpt_every=2, eval_batch_size=8, progress=False, out=str(tmp_path / "run"),
               device="cpu")
    proc = _torchrun(tmp_path, cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    run = tmp_path / "run"
    assert (run / "final.safetensors").exists() and (run / "checkpoints" / "last.pt").exists()
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 3 and len(ck["rng"]) == 2 and ck["sampler"]["position"] == 3 * 2 * 2
    assert not any(p.name.startswith(".") for p in run.rglob("*"))  # no stray temp files


def test_a_rank_that_stops_taking_part_fails_the_run_within_the_timeout(tmp_path: Path) -> None:
    """Rank 1 hangs (alive, outside any collective) after step 2: rank 0's next all-reduce fails after
    ``ddp_timeout_s`` and torchrun stops the run, instead of both waiting for gloo's 30 minutes."""
    rng = np.random.default_rng(0)
    (tmp_path / "synth").mkdir()
    np.savez_compressed(tmp_path / "synth" / "shard-00000.npz",
                        images=rng.integers(0, 256, (8, 24, 94, 3), dtype=np.uint8), labels=np.array(PLATES))
    (tmp_path / "worker.py").write_text(WORKER)
    cfg = dict(data=[f"synth:{tmp_path / 'synth'}"], val_synth_n=0, steps=6, batch_size=2, lr=3e-3,
               warmup_steps=1, workers=0, threads=1, seed=3, log_every=1, eval_every=1000, ckpt_every=1000,
               progress=False, out=str(tmp_path / "run"), device="cpu", ddp_timeout_s=5)
    t0 = time.monotonic()
    proc = _torchrun(tmp_path, cfg, timeout=90, HANG_AT_STEP="2")
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 75  # the 5 s timeout, with torchrun's start and stop on a loaded machine
    assert "timed out" in (proc.stdout + proc.stderr).lower() or "timeout" in (proc.stdout + proc.stderr).lower()
    assert not (tmp_path / "rank0.pt").exists()


def test_a_bad_val_dir_stops_every_rank_with_rank_zeros_message(tmp_path: Path) -> None:
    """Rank 0 alone reads --val-dir; when it cannot, the other ranks stop with its message (they died in DDP's
    next collective with a gloo "Connection closed by peer" traceback)."""
    rng = np.random.default_rng(0)
    (tmp_path / "synth").mkdir()
    (tmp_path / "empty").mkdir()
    np.savez_compressed(tmp_path / "synth" / "shard-00000.npz",
                        images=rng.integers(0, 256, (8, 24, 94, 3), dtype=np.uint8), labels=np.array(PLATES))
    (tmp_path / "worker.py").write_text(WORKER)
    cfg = dict(data=[f"synth:{tmp_path / 'synth'}"], val_synth_n=0, val_dir=str(tmp_path / "empty"), steps=2,
               batch_size=2, warmup_steps=1, workers=0, threads=1, progress=False, out=str(tmp_path / "run"),
               device="cpu")
    proc = _torchrun(tmp_path, cfg)
    assert proc.returncode != 0
    assert f"TrainError: rank 0: --val-dir {tmp_path / 'empty'}: no labelled plates found there" in proc.stderr
    assert "Connection closed by peer" not in proc.stderr
