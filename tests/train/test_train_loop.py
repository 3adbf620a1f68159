"""The training loop: overfitting a tiny batch, exact resume after a kill, atomic checkpoints, exports."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from lprnet.charset import Charset
from lprnet.model import LPRNet
from lprnet.train import TrainConfig, TrainError, make_config, train
from lprnet.train.trainer import ctc_loss, load_checkpoint, make_ctc, save_checkpoint
from lprnet.weights import build_model, read_weights

PLATES = ["皖A12345", "京AD12345", "沪C21F13", "粤B8888Z", "川JK0707", "苏E00001", "浙F9A9A9", "鲁Q12345"]


def make_shard(path: Path, labels: list[str], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), 24, 94, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, labels=np.array(labels, dtype=str),
                        kinds=np.array(["blue"] * len(labels), dtype=str))
    return path


def make_folder(root: Path, labels: list[str], seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for t in labels:
        cv2.imwrite(str(root / f"{t}.png"), rng.integers(0, 256, (30, 110, 3), dtype=np.uint8))
    return root


def cfg_for(tmp: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        data=[f"synth:{tmp / 'synth'}"], val_synth=str(tmp / "val"), val_synth_n=0, steps=6, batch_size=4,
        lr=3e-3, warmup_steps=1, workers=0, threads=1, seed=7, log_every=1, eval_every=3, ckpt_every=3,
        eval_batch_size=8, progress=False, out=str(tmp / "run"))
    base.update(kw)
    return make_config(**base)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_shard(tmp_path / "synth" / "shard-00000.npz", PLATES, seed=0)
    make_shard(tmp_path / "val" / "shard-00000.npz", PLATES[:4], seed=9)
    make_folder(tmp_path / "real", PLATES[:3])
    return tmp_path


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_loss_decreases_on_a_tiny_fixed_batch(data: Path) -> None:
    cfg = cfg_for(data, steps=14, batch_size=8, dropout=0.0, lr=5e-3, warmup_steps=1, eval_every=14,
                  ckpt_every=100, val_synth=str(data / "synth"))
    res = train(cfg)
    losses = [float(r["train_loss"]) for r in read_metrics(res.out) if r["train_loss"]]
    assert len(losses) == 14
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2]), losses
    # outputs: final + best weights (with provenance), curves, config, checkpoint
    for name in ("final.safetensors", "best.safetensors", "curves.png", "config.json", "checkpoints/last.pt"):
        assert (res.out / name).exists(), name
    assert (res.out / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert json.loads((res.out / "config.json").read_text())["steps"] == cfg.steps
    _, meta = read_weights(res.out / "final.safetensors")
    prov = meta.provenance
    assert prov["steps"] == 14 and prov["samples"] == 14 * 8 and prov["trainer"] == "lprnet.train"
    assert "synth:" in prov["data"][0] and "command" in prov and "train_time_s" in prov
    model, _ = build_model(res.out / "best.safetensors")
    assert not model.training


@pytest.mark.parametrize("ema_decay", [0.0, 0.8])
def test_resume_after_kill_equals_straight_run(data: Path, ema_decay: float) -> None:
    common = dict(data=[f"synth:{data / 'synth'}:0.75", f"real:{data / 'real'}:0.25"], augment_real=True,
                  augment_synth=True, steps=6, ckpt_every=2, eval_every=3, ema_decay=ema_decay)
    straight = train(cfg_for(data, out=str(data / "straight"), **common))

    class Killed(Exception):
        pass

    def kill_at(step: int) -> None:
        if step == 5:  # after the checkpoint at step 4: step 5 is lost, as in a real kill
            raise Killed

    with pytest.raises(Killed):
        train(cfg_for(data, out=str(data / "resumed"), **common), on_step=kill_at)
    assert load_checkpoint(data / "resumed" / "checkpoints" / "last.pt")["step"] == 4
    with pytest.raises(TrainError, match="--resume"):
        train(cfg_for(data, out=str(data / "resumed"), **common))
    resumed = train(cfg_for(data, out=str(data / "resumed"), resume=True, **common))
    assert resumed.step == straight.step == 6
    for k, v in straight.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    a, _ = read_weights(straight.out / "final.safetensors")
    b, _ = read_weights(resumed.out / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the log of the resumed run has each step once, with the straight run's losses
    ls = [(r["step"], r["train_loss"]) for r in read_metrics(straight.out) if r["train_loss"]]
    lr_ = [(r["step"], r["train_loss"]) for r in read_metrics(resumed.out) if r["train_loss"]]
    assert ls == lr_
    assert straight.best_metric == resumed.best_metric


def test_ema_is_the_moving_average_of_the_trained_weights(data: Path) -> None:
    """With ``ema_decay`` the run trains exactly as without, and exports/evaluates the average of its steps."""
    common = dict(steps=4, ckpt_every=1, eval_every=2, log_every=1)
    raw: list[dict[str, torch.Tensor]] = []

    def grab(step: int) -> None:  # the checkpoint written at this step holds the raw weights after it
        sd = load_checkpoint(data / "plain" / "checkpoints" / "last.pt")["model"]
        raw.append({k: v.clone() for k, v in sd.items()})

    plain = train(cfg_for(data, out=str(data / "plain"), **common), on_step=grab)
    decay = 0.6
    avg = train(cfg_for(data, out=str(data / "avg"), ema_decay=decay, **common))
    # the average does not disturb training: same losses, same raw weights at the end
    assert [r["train_loss"] for r in read_metrics(plain.out)] == [r["train_loss"] for r in read_metrics(avg.out)]
    last_raw = load_checkpoint(avg.out / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(last_raw[k], raw[-1][k]) for k in last_raw)
    # the exported weights are the average: e_1 = w_1, e_k = decay * e_(k-1) + (1 - decay) * w_k
    expected = dict(raw[0])
    for w in raw[1:]:
        expected = {k: torch.lerp(e, w[k], 1 - decay) if e.is_floating_point() else e for k, e in expected.items()}
    exported, meta = read_weights(avg.out / "final.safetensors")
    assert meta.provenance["ema_decay"] == decay
    floats = [k for k, v in expected.items() if v.is_floating_point()]
    assert len(floats) > 10
    for k in floats:
        torch.testing.assert_close(exported[k], expected[k], rtol=1e-5, atol=1e-6, msg=k)
        assert torch.equal(avg.state_dict[k], exported[k]), k
    assert max(float((exported[k] - raw[-1][k]).abs().max()) for k in floats) > 1e-4  # not the raw weights
    # evaluation scores the average too: the raw weights are the same, so equal validation losses would
    # mean the raw weights were evaluated
    def val_losses(run: Path) -> list[str]:
        return [r["val_synth_loss"] for r in read_metrics(run) if r["val_synth_loss"]]

    assert len(val_losses(avg.out)) == 2
    assert all(a != b for a, b in zip(val_losses(plain.out), val_losses(avg.out), strict=True))


def test_worker_processes_do_not_change_the_stream(data: Path) -> None:
    common = dict(data=[f"synth:{data / 'synth'}:0.5", f"real:{data / 'real'}:0.5"], augment_real=True,
                  steps=2, val_synth=None, ckpt_every=10)
    a = train(cfg_for(data, out=str(data / "w0"), workers=0, **common))
    # the worker run goes through the CLI in its own process: DataLoader workers are forked, and
    # forking inside a pytest-xdist worker (execnet threads and pipes) intermittently killed that worker
    cfg = data / "w2.json"
    cfg.write_text(cfg_for(data, out=str(data / "w2"), workers=2, **common).model_dump_json(), encoding="utf-8")
    cli = [sys.executable, "-c", "from lprnet.cli import main; main()"]
    r = subprocess.run([*cli, "train", "--config", str(cfg), "--no-progress"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 steps" in r.stdout + r.stderr
    sd_a, _ = read_weights(a.out / "final.safetensors")
    sd_b, _ = read_weights(data / "w2" / "final.safetensors")
    assert sd_a.keys() == sd_b.keys() and len(sd_a) > 10
    for k, v in sd_a.items():
        assert torch.equal(v, sd_b[k]), k


def test_crash_mid_checkpoint_write_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.arange(4.0)})

    def crash(fd: int) -> None:
        raise OSError("disk full / killed mid-write")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="mid-write"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(10_000)})
    monkeypatch.undo()
    ck = load_checkpoint(path)
    assert ck["step"] == 1 and torch.equal(ck["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp left behind
    # a temp file left by a hard kill (no cleanup) does not disturb loading either
    (path.parent / ".last.pt.abc.tmp").write_bytes(b"PK\x03\x04 half a zip")
    assert load_checkpoint(path)["step"] == 1
    path.write_bytes(b"garbage")
    with pytest.raises(TrainError, match="not a loadable checkpoint"):
        load_checkpoint(path)


def test_run_folder_rules(data: Path) -> None:
    with pytest.raises(TrainError, match="needs --out"):
        train(cfg_for(data, out=None, resume=True))
    # --resume on an empty folder starts fresh; config.json records the settings
    res = train(cfg_for(data, steps=1, resume=True, val_synth=None, out=str(data / "fresh")))
    assert res.step == 1 and json.loads((res.out / "config.json").read_text())["steps"] == 1
    assert res.best_weights is None and res.final_weights is not None


def test_init_weights_starts_from_the_given_weights(data: Path) -> None:
    first = train(cfg_for(data, steps=2, out=str(data / "a")))
    init = first.out / "final.safetensors"
    # a tiny learning rate: the fine-tuned weights stay at the init, far from a fresh seed-7 model
    tuned = train(cfg_for(data, steps=1, lr=1e-12, warmup_steps=0, out=str(data / "b"), seed=8,
                          init_weights=str(init)))
    fresh = train(cfg_for(data, steps=1, lr=1e-12, warmup_steps=0, out=str(data / "c"), seed=8))
    sd_init, _ = read_weights(init)
    sd_tuned, _ = read_weights(tuned.out / "final.safetensors")
    sd_fresh, _ = read_weights(fresh.out / "final.safetensors")
    k = "container.0.weight"
    assert torch.allclose(sd_tuned[k], sd_init[k], atol=1e-6)
    assert not torch.allclose(sd_fresh[k], sd_init[k], atol=1e-3)
    assert "initialised from" in (tuned.out / "train.log").read_text(encoding="utf-8")


def test_init_weights_default_is_the_bundled_weights(data: Path) -> None:
    from lprnet.weights import default_weights_path

    tuned = train(cfg_for(data, steps=1, lr=1e-12, warmup_steps=0, out=str(data / "d"), init_weights="default"))
    sd_default, _ = read_weights(default_weights_path())
    sd_tuned, _ = read_weights(tuned.out / "final.safetensors")
    for k in ("backbone.0.weight", "backbone.11.block.2.weight", "container.0.weight"):
        assert torch.allclose(sd_tuned[k], sd_default[k], atol=1e-6), k
    assert "(the bundled default weights)" in (tuned.out / "train.log").read_text(encoding="utf-8")
    # no --set model=: the run trains the layout of its --init-weights (the bundled weights are lprnet_wide)
    variant = read_weights(default_weights_path())[1].config.variant
    assert read_weights(tuned.out / "final.safetensors")[1].config.variant == variant == "lprnet_wide"


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_steps_match_eager_ones(data: Path) -> None:
    # no dropout: compiled dropout draws its masks from the same generator but in its own way
    eager = train(cfg_for(data, steps=2, dropout=0.0, eval_every=100, ckpt_every=100, out=str(data / "eager")))
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = train(cfg_for(data, steps=2, dropout=0.0, eval_every=100, ckpt_every=100,
                             out=str(data / "compiled"), compile=True))
    assert counters["stats"]["unique_graphs"] >= 1  # it really went through Dynamo
    assert "torch.compile: on" in (compiled.out / "train.log").read_text(encoding="utf-8")
    rows = [[row for row in csv.DictReader((r.out / "metrics.csv").open(encoding="utf-8")) if row["train_loss"]]
            for r in (eager, compiled)]
    assert len(rows[0]) == len(rows[1]) == 2
    for a, b in zip(*rows):  # the same losses (kernels fuse differently: rounding only)
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-3)
    sd_e, _ = read_weights(eager.out / "final.safetensors")
    sd_c, _ = read_weights(compiled.out / "final.safetensors")
    assert sd_e.keys() == sd_c.keys()  # saved from the plain module: no "_orig_mod." prefix
    for k, v in sd_e.items():  # Adam moves each weight by about lr per step whatever its gradient's size, so
        # a near-zero gradient whose sign rounding flips can differ by 2 lr a step; nothing else moves them
        assert (sd_c[k] - v).abs().max() <= 2 * 2 * 3e-3 + 1e-6, k


def test_init_weights_errors_name_the_file(data: Path) -> None:
    bad = data / "not-weights.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(TrainError, match="not-weights.safetensors"):
        train(cfg_for(data, steps=1, init_weights=str(bad)))


def test_channels_last_step_has_the_nchw_loss_and_gradients() -> None:
    """One training step in NHWC: the NCHW loss to rounding, and its gradients to within what rounding moves.

    The gradient of this net is not smooth at the 1e-6 scale: a max-pool window whose top two values are
    that close routes its gradient to either (a float64 run with the input scaled by 1 + 1e-6 noise moves
    kernel gradients by ~0.6 %), and oneDNN's NHWC BatchNorm rounds differently (4e-6 against 2e-7 of
    NCHW), so NHWC gradients differ by ~1 %; a layout bug (a permuted tensor) differs by ~100 %.
    """
    cs = Charset.chinese()
    ctc = make_ctc(cs)
    torch.manual_seed(0)
    x = torch.randn(6, 3, 24, 94)
    targets = torch.randint(0, cs.blank_index, (6 * 7,))
    lengths = torch.full((6,), 7, dtype=torch.long)
    grads, loss = {}, {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(1)
        model = LPRNet(cs.num_classes, dropout=0.0).to(memory_format=fmt).train()
        out = ctc_loss(model(x.contiguous(memory_format=fmt)), targets, lengths, ctc)
        out.backward()
        loss[fmt] = out.item()
        grads[fmt] = {n: p.grad.contiguous() for n, p in model.named_parameters()}
    nchw, nhwc = grads[torch.contiguous_format], grads[torch.channels_last]
    assert loss[torch.channels_last] == pytest.approx(loss[torch.contiguous_format], rel=1e-5)
    kernels = [n for n, g in nchw.items() if g.dim() == 4]
    assert len(kernels) > 15 and all(float(nchw[n].norm()) > 0 for n in kernels)
    for n in kernels:
        assert float((nhwc[n] - nchw[n]).norm() / nchw[n].norm()) < 0.05, n
    flat = [torch.cat([g.flatten() for g in d.values()]) for d in (nchw, nhwc)]
    assert float((flat[1] - flat[0]).norm() / flat[0].norm()) < 0.02


def test_the_trainer_runs_in_channels_last_and_stores_contiguous_weights(data: Path) -> None:
    common = dict(steps=2, ckpt_every=2, eval_every=2, dropout=0.0)
    nchw = train(cfg_for(data, out=str(data / "nchw"), channels_last=False, **common))
    nhwc = train(cfg_for(data, out=str(data / "nhwc"), **common))  # the default
    first = [next(float(r["train_loss"]) for r in read_metrics(run.out) if r["train_loss"]) for run in (nchw, nhwc)]
    assert first[1] == pytest.approx(first[0], rel=1e-5)  # before any update: the same model, the same batch
    for run, nhwc_kernels in ((nchw, False), (nhwc, True)):
        live = load_checkpoint(run.out / "checkpoints" / "last.pt")["model"]
        kernels = [v for v in live.values() if v.dim() == 4 and v.shape[1] > 1 and v.shape[2] * v.shape[3] > 1]
        assert kernels and all((v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous())
                               == nhwc_kernels for v in kernels)
        stored, _ = read_weights(run.out / "final.safetensors")
        assert all(v.is_contiguous() for v in stored.values())
        assert all(v.is_contiguous() for v in run.state_dict.values())


class _StepClock:
    """A stand-in for the trainer's ``time`` module whose ``perf_counter`` advances ``dt`` per call: the
    trainer reads it at the start and the end of a step, so every step takes ``dt`` seconds of training time."""

    def __init__(self, dt: float) -> None:
        import time as real

        self.dt, self.t, self.time, self.strftime = dt, 0.0, real.time, real.strftime

    def perf_counter(self) -> float:
        self.t += self.dt
        return self.t


class _SlowingClock(_StepClock):
    """``_StepClock`` whose steps take ``slow`` seconds from step ``at`` on (the machine became loaded)."""

    def __init__(self, dt: float, slow: float, at: int) -> None:
        super().__init__(dt)
        self.slow, self.at, self.calls = slow, at, 0

    def perf_counter(self) -> float:
        self.calls += 1
        self.t += self.dt if (self.calls + 1) // 2 < self.at else self.slow
        return self.t


def test_time_budget_plans_the_run_length_and_completes_the_schedule(
        data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lprnet.train import trainer

    monkeypatch.setattr(trainer, "time", _StepClock(0.5))  # 0.5 s per step
    # measured from step 20 (past the warm-up), re-planned every 10 steps from step 30: 25 s / 0.5 s = 50 steps
    kw = dict(steps=1000, warmup_steps=1, log_every=5, eval_every=1000, ckpt_every=1000, time_budget_s=25.0)
    res = train(cfg_for(data, **kw))
    assert res.step == 50
    rows = [r for r in read_metrics(res.out) if r["train_loss"]]
    assert [int(r["step"]) for r in rows] == list(range(5, 55, 5))
    assert float(rows[-1]["time_s"]) == pytest.approx(25.0)
    # the cosine schedule was planned to end at step 50, so the last step ran at (nearly) the lowest lr
    assert float(rows[-1]["lr"]) == pytest.approx(3e-3 * trainer.lr_factor(49, 1, 50, 0.05), rel=1e-5)
    assert float(rows[-1]["lr"]) < 3e-3 * 0.06
    assert load_checkpoint(res.out / "checkpoints" / "last.pt")["planned_steps"] == 50
    # the budget never raises the step count above --steps, and without a budget --steps decides alone
    assert train(cfg_for(data, out=str(data / "capped"), **{**kw, "steps": 24})).step == 24
    assert train(cfg_for(data, out=str(data / "plain"), **{**kw, "steps": 33, "time_budget_s": None})).step == 33


def test_time_budget_overshoot_is_at_most_one_replanning_interval(
        data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps that slow down after a plan was made (another job took the CPU) cost at most one re-planning interval
    of slow steps past the budget: 30 steps of 0.5 s plan 50 steps for 25 s, then steps take 2 s; at step 40 the
    budget is spent (35 s) and the run stops there with its schedule ended."""
    from lprnet.train import trainer

    monkeypatch.setattr(trainer, "time", _SlowingClock(0.5, 2.0, at=31))
    kw = dict(steps=1000, warmup_steps=1, log_every=5, eval_every=1000, ckpt_every=1000, time_budget_s=25.0,
              val_synth=None)
    res = train(cfg_for(data, **kw))
    assert res.step == 40
    rows = [r for r in read_metrics(res.out) if r["train_loss"]]
    # 30 x 0.5 s + 10 x 2 s = 35 s: 10 s past the budget, within one interval of slow steps (10 x 2 s)
    assert float(rows[-1]["time_s"]) == pytest.approx(35.0)
    assert load_checkpoint(res.out / "checkpoints" / "last.pt")["planned_steps"] == 40


def test_time_budget_survives_a_kill_and_resume(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lprnet.train import trainer

    kw = dict(steps=1000, warmup_steps=1, log_every=5, eval_every=1000, ckpt_every=5, time_budget_s=25.0)
    monkeypatch.setattr(trainer, "time", _StepClock(0.5))
    straight = train(cfg_for(data, out=str(data / "straight"), **kw))

    class Killed(Exception):
        pass

    def kill_at(step: int) -> None:
        if step == 37:  # the checkpoint at step 35 holds the plan (50 steps) and 17.5 s of training time
            raise Killed

    monkeypatch.setattr(trainer, "time", _StepClock(0.5))
    with pytest.raises(Killed):
        train(cfg_for(data, out=str(data / "resumed"), **kw), on_step=kill_at)
    ck = load_checkpoint(data / "resumed" / "checkpoints" / "last.pt")
    assert (ck["step"], ck["planned_steps"], ck["train_time_s"]) == (35, 50, pytest.approx(17.5))
    monkeypatch.setattr(trainer, "time", _StepClock(2.0))  # a slower machine after the restart: 2 s per step
    resumed = train(cfg_for(data, out=str(data / "resumed"), resume=True, **kw))
    assert straight.step == resumed.step == 50  # the checkpointed plan is kept until it can be re-measured
    for k, v in straight.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
