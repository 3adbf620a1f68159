"""``scripts/train_default.sh``, the documented one-liner, end to end at toy size: it renders its plates,
mixes the real sources named in ``REAL`` into the stream, passes ``TIME_BUDGET`` on, and leaves trained weights
that say so."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from lprnet.data.synth import random_plate_text, render_plate
from lprnet.weights import read_weights

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_default.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_train_default_script_mixes_real_data_and_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    real = tmp_path / "my-crops"
    real.mkdir()
    for _ in range(6):
        t = random_plate_text("blue", rng)
        cv2.imwrite(str(real / f"{t}.jpg"), render_plate(t, "blue", rng))
    run = tmp_path / "run"
    env = dict(os.environ, N_TRAIN="48", N_VAL="16", BATCH="8", WARMUP="1", REAL=f"real:{real}:0.5", TIME_BUDGET="1h",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(SCRIPT), str(run), "3", "cpu"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"weights: {run}/train/best.safetensors" in proc.stdout
    _, meta = read_weights(run / "train" / "best.safetensors")
    data = meta.provenance["config"]["data"]
    assert data == [f"synth:{run}/synth-train", f"real:{real}:0.5"], data
    assert meta.provenance["steps"] == 3 and meta.provenance["batch_size"] == 8
    assert meta.provenance["config"]["time_budget_s"] == 3600.0  # TIME_BUDGET reaches the trainer (STEPS caps it)
    assert any("6 real samples" in d for d in meta.provenance["data"]), meta.provenance["data"]
    # a second call finds the run's checkpoint and resumes it instead of starting over
    proc = subprocess.run(["bash", str(SCRIPT), str(run), "5", "cpu"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, meta = read_weights(run / "train" / "final.safetensors")
    assert meta.provenance["steps"] == 5 and meta.provenance["config"]["resume"] is True


LEASE = SCRIPT.parent / "gpu_lease_train.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_lease_script_runs_from_src_and_keeps_to_its_time_budget(tmp_path: Path) -> None:
    """The lease script at toy size on the CPU: the package runs from src/ through ``python -m lprnet`` (nothing
    installed), the time budget, not the step cap, ends the run, ``SET`` reaches the config, and the results land
    in OUT."""
    out, run = tmp_path / "out", tmp_path / "run"
    env = dict(os.environ, OUT=str(out), RUN=str(run), PY=sys.executable, DEVICE="cpu", STEPS="5000",
               TIME_BUDGET="6s", BATCH="8", N_TRAIN="200", N_VAL="16", WARMUP="2", WHEELS=str(tmp_path / "none"),
               SET="log_every=1 grad_clip=4.5", OMP_NUM_THREADS="1",
               PATH="/usr/bin:/bin")  # no lprnet entry point on PATH
    proc = subprocess.run(["bash", str(LEASE)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for f in ("best.safetensors", "final.safetensors", "metrics.csv", "curves.png", "config.json", "run.log"):
        assert (out / f).is_file(), f
    _, meta = read_weights(out / "final.safetensors")
    config = meta.provenance["config"]
    assert config["time_budget_s"] == 6.0 and config["log_every"] == 1 and config["grad_clip"] == 4.5
    rendered = json.loads((run / "synth-train" / "meta.json").read_text())  # the last rounds' mix of crops
    assert (rendered["loose_crops"], rendered["grayscale"]) == (0.45, 0.2)
    steps = meta.provenance["steps"]
    assert 30 <= steps < 5000  # planned from the measured step time: first at step 30 (20 measured, 10 more)
    # the budget ended the run: measured at step 20 and re-planned every 10 steps, it goes on past a step only
    # while the training time there is under the budget -- 10 steps before the end it was (or the end is the
    # first re-planning); a bound in steps, not seconds, holds on a loaded machine too
    time_at = {int(r["step"]): float(r["time_s"]) for r in csv.DictReader((out / "metrics.csv").open())
               if r["train_loss"]}
    assert max(time_at) == steps and len(time_at) == steps
    assert steps == 30 or time_at[steps - 10] < 6.0, (steps, time_at[steps - 10])


def test_python_dash_m_lprnet_is_the_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "lprnet", "info", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "Usage: python -m lprnet info" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_gpu_lease_script_stops_at_its_deadline_and_keeps_what_it_has(tmp_path: Path) -> None:
    """The time budget counts training steps only; DEADLINE bounds the whole script, so that the results reach OUT
    inside the device tool's timeout: a run still training then is stopped, and its best weights and metrics are
    copied (exit 124; 137 when Python swallowed the SIGINT -- a KeyboardInterrupt raised inside a weakref callback
    is only printed, seen once in a fresh-clone run -- and the SIGKILL 15 s later ended the run: the same kept
    results)."""
    out, run = tmp_path / "out", tmp_path / "run"
    env = dict(os.environ, OUT=str(out), RUN=str(run), PY=sys.executable, DEVICE="cpu", STEPS="100000",
               TIME_BUDGET="30m", BATCH="8", N_TRAIN="100", N_VAL="16", WARMUP="2", WHEELS=str(tmp_path / "none"),
               EVAL_EVERY="5", CKPT_EVERY="5", DEADLINE="30", OMP_NUM_THREADS="1", PATH="/usr/bin:/bin")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(LEASE)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (124, 137), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - t0 < 30 + 15 + 20  # the deadline, the grace before SIGKILL, the copy
    assert "stopped at DEADLINE=30s" in proc.stderr
    assert (out / "best.safetensors").is_file() and (out / "metrics.csv").is_file()
    assert not (out / "final.safetensors").exists()  # the run was stopped, not finished
    left = subprocess.run(["pgrep", "-f", str(run / "train")], capture_output=True, text=True)
    assert left.stdout == "", left.stdout  # nothing of the run goes on after the script


def test_lease_site_unpacks_the_carried_wheels_and_puts_src_first(tmp_path: Path) -> None:
    """The lent machine has no network: ``scripts/lease_site.sh`` (sourced by both lease scripts) unpacks the
    carried wheels with pip offline into SITE and exports PYTHONPATH with SITE and src/ on it."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "leasetoy-0.1-py3-none-any.whl", "w") as whl:
        whl.writestr("leasetoy.py", "VALUE = 41 + 1\n")
        whl.writestr("leasetoy-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: leasetoy\nVersion: 0.1\n")
        whl.writestr("leasetoy-0.1.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("leasetoy-0.1.dist-info/RECORD", "")
    site = tmp_path / "site"
    env = dict(os.environ, PY=sys.executable, WHEELS=str(wheels), SITE=str(site), PYTHONPATH="")
    script = ('. scripts/lease_site.sh && "$PY" -c "import leasetoy, lprnet, sys; '
              'print(leasetoy.VALUE, lprnet.__file__, sys.path.index(\'$SITE\') > sys.path.index(\'$PWD/src\'))"')
    proc = subprocess.run(["sh", "-c", script], cwd=SCRIPT.parent.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    value, package, src_first = proc.stdout.split()
    assert value == "42" and (site / "leasetoy.py").is_file() and src_first == "True"
    assert Path(package).resolve() == (SCRIPT.parent.parent / "src" / "lprnet" / "__init__.py").resolve()
