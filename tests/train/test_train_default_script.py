"""``scripts/train_default.sh``, the documented one-liner, end to end at toy size: it renders its plates,
mixes the real sources named in ``REAL`` into the stream, and leaves trained weights that say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    env = dict(os.environ, N_TRAIN="48", N_VAL="16", BATCH="8", WARMUP="1", REAL=f"real:{real}:0.5",
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
    assert any("6 real samples" in d for d in meta.provenance["data"]), meta.provenance["data"]
    # a second call finds the run's checkpoint and resumes it instead of starting over
    proc = subprocess.run(["bash", str(SCRIPT), str(run), "5", "cpu"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, meta = read_weights(run / "train" / "final.safetensors")
    assert meta.provenance["steps"] == 5 and meta.provenance["config"]["resume"] is True
