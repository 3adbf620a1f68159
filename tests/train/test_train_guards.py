"""Guards of a run: --set beside the flags, non-finite values, bad seeds and counts, the metrics window on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from lprnet.train import ConfigError, TrainConfig, TrainError, make_config, train
from lprnet.train import trainer as trainer_mod
from lprnet.train.trainer import load_checkpoint, save_checkpoint
from lprnet.weights import read_weights
from train.test_train_loop import PLATES, _StepClock, cfg_for, make_folder, make_shard, read_metrics


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_shard(tmp_path / "synth" / "shard-00000.npz", PLATES, seed=0)
    make_shard(tmp_path / "val" / "shard-00000.npz", PLATES[:4], seed=9)
    return tmp_path


# --------------------------------------------------------------------------- --set and the flags


def _cli(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[int, str, TrainConfig | None]:
    """Run ``lprnet train ARGS`` with the training itself replaced: the exit code, the output and the config."""
    import lprnet.train
    from lprnet.cli import train as cli_train

    seen: list[TrainConfig] = []
    monkeypatch.setattr(lprnet.train, "train", lambda cfg, command=None: seen.append(cfg))
    app = typer.Typer()
    cli_train.register(app)
    res = CliRunner().invoke(app, ["train", "--data", "synth:/x", *args])
    return res.exit_code, res.output, (seen[0] if seen else None)


def test_set_reaches_fields_that_have_flags_and_given_flags_win(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    sets = ["--set", "lr=0.01", "--set", "batch_size=2", "--set", "seed=7", "--set", "ema_decay=0.5",
            "--set", "warmup_steps=0", "--set", "workers=0", "--set", "steps=3", "--set", "val_synth_n=0"]
    rc, out, cfg = _cli(monkeypatch, sets)
    assert rc == 0, out
    assert cfg is not None
    assert (cfg.lr, cfg.batch_size, cfg.seed, cfg.ema_decay, cfg.warmup_steps, cfg.workers, cfg.steps,
            cfg.val_synth_n) == (0.01, 2, 7, 0.5, 0, 0, 3, 0)
    # precedence: config file < --set < flags that are given
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.5, "seed": 1, "threads": 2, "steps": 9}))
    rc, out, cfg = _cli(monkeypatch, ["--config", str(tmp_path / "c.json"), *sets, "--seed", "9",
                                      "--set", "threads=null"])
    assert rc == 0, out
    assert cfg is not None and (cfg.lr, cfg.seed, cfg.threads, cfg.steps) == (0.01, 9, None, 3)
    # --set values are validated like everything else
    for bad, field in (("lr=-5", "lr"), ("lr=inf", "lr"), ("batch_size=true", "batch_size"), ("seed=-1", "seed"),
                       ("steps=null", "steps")):
        rc, out, cfg = _cli(monkeypatch, ["--set", bad])
        assert rc == 2 and field in out and cfg is None, (bad, out)


def test_bad_flags_fail_before_the_run_folder_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lprnet.cli import train as cli_train

    app = typer.Typer()
    cli_train.register(app)
    for flag, value in (("--lr", "inf"), ("--lr", "nan"), ("--seed", "-1"), ("--seed", str(2**32))):
        out = tmp_path / "run"
        res = CliRunner().invoke(app, ["train", "--data", f"synth:{tmp_path}", "--out", str(out), "--no-progress",
                                       flag, value])
        assert res.exit_code == 2 and flag.lstrip("-") in res.output, (flag, value, res.output)
        assert not out.exists()


# --------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("kw, msg", [
    ({"lr": float("inf")}, "lr: Input should be a finite number"),
    ({"lr": float("nan")}, "lr: Input should be a finite number"),
    ({"weight_decay": "inf"}, "weight_decay: Input should be a finite number"),
    ({"grad_clip": float("inf")}, "grad_clip"),
    ({"time_budget_s": float("inf")}, "time_budget_s"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**32}, "seed"),
    ({"steps": True}, "steps"),
    ({"batch_size": True}, "batch_size"),
    ({"seed": False}, "seed"),
    ({"workers": True}, "workers"),
    ({"log_every": True}, "log_every"),
    ({"lr": True}, "lr"),
])
def test_non_finite_floats_bad_seeds_and_boolean_numbers_are_refused(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        make_config(**{"data": ["synth:/x"], **kw})


def test_edge_seeds_and_switches_still_validate() -> None:
    assert make_config(data=["synth:/x"], seed=2**32 - 1).seed == 2**32 - 1
    assert make_config(data=["synth:/x"], seed=0, compile=True, progress=False).compile is True


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_config_file_with_boolean_steps_is_refused(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"c.{fmt}"
    p.write_text('{"steps": true, "weight_decay": 0.01}' if fmt == "json" else "steps: true\nweight_decay: .inf\n")
    with pytest.raises(ConfigError, match="steps") as e:
        make_config(p, data=["synth:/x"])
    if fmt == "yaml":
        assert "weight_decay: Input should be a finite number" in str(e.value)


# --------------------------------------------------------------------------- non-finite runs


def test_a_nan_loss_stops_the_run_and_the_last_checkpoint_resumes(data: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    common: dict[str, Any] = dict(steps=5, ckpt_every=2, eval_every=100, log_every=1, val_synth=None)
    straight = train(cfg_for(data, out=str(data / "straight"), **common))
    real_ctc = trainer_mod.ctc_loss
    calls = {"n": 0}

    def nan_at_step_3(*a: Any, **k: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real_ctc(*a, **k)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(trainer_mod, "ctc_loss", nan_at_step_3)
    run = data / "run"
    with pytest.raises(TrainError, match=r"step 3: the training loss .* is nan.*last checkpoint .* step 2"):
        train(cfg_for(data, out=str(run), **common))
    monkeypatch.undo()
    assert not (run / "final.safetensors").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert "step 3: the training loss" in (run / "train.log").read_text(encoding="utf-8")
    assert [r["step"] for r in read_metrics(run)] == ["1", "2"]  # the bad step is not logged
    # the last good checkpoint continues the run as if it had never failed
    resumed = train(cfg_for(data, out=str(run), resume=True, **common))
    assert resumed.step == 5
    for k, v in straight.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    assert read_metrics(straight.out) == [dict(r, time_s=s["time_s"], plates_per_s=s["plates_per_s"])
                                          for r, s in zip(read_metrics(run), read_metrics(straight.out), strict=True)]


def test_non_finite_weights_are_never_checkpointed_or_exported(data: Path) -> None:
    # lr=inf cannot pass the schema; forced past it, the first step turns the weights to inf/nan while its loss
    # (computed before the update) is finite
    cfg = cfg_for(data, steps=1, ckpt_every=1, eval_every=1, warmup_steps=0, ema_decay=0.5).model_copy(
        update={"lr": float("inf")})
    with pytest.raises(TrainError, match=r"step 1: the weights hold non-finite values.*no checkpoint"):
        train(cfg)
    run = Path(cfg.out or "")
    assert not (run / "final.safetensors").exists() and not (run / "best.safetensors").exists()
    assert not (run / "checkpoints" / "last.pt").exists()


class _InfGrad(torch.autograd.Function):
    """The identity whose gradient is inf: a finite loss with overflowing gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * float("inf")


def _inf_grads_at_step_2(monkeypatch: pytest.MonkeyPatch) -> None:
    real_ctc = trainer_mod.ctc_loss
    calls = {"n": 0}

    def ctc(*a: Any, **k: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real_ctc(*a, **k)
        return _InfGrad.apply(loss) if calls["n"] == 2 else loss

    monkeypatch.setattr(trainer_mod, "ctc_loss", ctc)


def test_a_non_finite_gradient_norm_stops_a_run_without_a_scaler(data: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _inf_grads_at_step_2(monkeypatch)
    with pytest.raises(TrainError, match=r"step 2: the gradient norm is (inf|nan).*step 1"):
        train(cfg_for(data, steps=4, ckpt_every=1, eval_every=100, val_synth=None))
    assert load_checkpoint(data / "run" / "checkpoints" / "last.pt")["step"] == 1


def test_a_grad_scaler_skips_overflowing_steps_without_stopping(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 on CUDA: the GradScaler skips a step whose gradients overflow and halves its scale; the run goes on
    (a CPU scaler stands in for the CUDA one)."""
    real_scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: real_scaler("cpu", enabled=True))
    _inf_grads_at_step_2(monkeypatch)
    res = train(cfg_for(data, steps=4, ckpt_every=1, eval_every=100, val_synth=None))
    assert res.step == 4
    assert load_checkpoint(res.out / "checkpoints" / "last.pt")["scaler"]["scale"] == 2.0**15  # one skipped step
    assert all(bool(torch.isfinite(v).all()) for v in res.state_dict.values())


# --------------------------------------------------------------------------- metrics after --resume


class Killed(Exception):
    pass


def _kill_at(n: int):
    def on_step(step: int) -> None:
        if step == n:
            raise Killed

    return on_step


def _losses(run: Path) -> list[tuple[str, str]]:
    return [(r["step"], r["train_loss"]) for r in read_metrics(run) if r["train_loss"]]


def test_resumed_metrics_equal_an_uninterrupted_run_when_log_every_does_not_divide_ckpt_every(data: Path) -> None:
    common: dict[str, Any] = dict(steps=8, log_every=2, ckpt_every=3, eval_every=100, val_synth=None)
    straight = train(cfg_for(data, out=str(data / "straight"), **common))
    with pytest.raises(Killed):  # the checkpoint at step 3 holds the window of step 3 (logged at step 4)
        train(cfg_for(data, out=str(data / "resumed"), **common), on_step=_kill_at(5))
    ck = load_checkpoint(data / "resumed" / "checkpoints" / "last.pt")
    assert ck["step"] == 3 and ck["window"]["n"] == 1
    train(cfg_for(data, out=str(data / "resumed"), resume=True, **common))
    assert _losses(straight.out) == _losses(data / "resumed")
    assert [s for s, _ in _losses(straight.out)] == ["2", "4", "6", "8"]


def test_checkpoints_without_the_window_still_resume(data: Path) -> None:
    common: dict[str, Any] = dict(steps=6, log_every=2, ckpt_every=3, eval_every=100, val_synth=None)
    with pytest.raises(Killed):
        train(cfg_for(data, **common), on_step=_kill_at(4))
    path = data / "run" / "checkpoints" / "last.pt"
    old = load_checkpoint(path)
    del old["window"]  # as written before the window was checkpointed
    save_checkpoint(path, old)
    res = train(cfg_for(data, resume=True, **common))
    assert res.step == 6 and [s for s, _ in _losses(res.out)] == ["2", "4", "6"]
    sd, _ = read_weights(res.out / "final.safetensors")
    assert all(bool(torch.isfinite(v).all()) for v in sd.values())


def test_a_run_resumed_on_another_number_of_ranks_continues_the_data_stream(data: Path) -> None:
    """A checkpoint written by 2 ranks of batch 4 at step 2 has consumed 16 samples; one process resuming it
    starts at sample 16 (not at step x its own 4 per step = 8, which would train items 8-15 again)."""
    common: dict[str, Any] = dict(steps=4, batch_size=4, log_every=1, ckpt_every=2, eval_every=100, val_synth=None)
    with pytest.raises(Killed):
        train(cfg_for(data, **common), on_step=_kill_at(3))
    path = data / "run" / "checkpoints" / "last.pt"
    ck = load_checkpoint(path)
    assert ck["step"] == 2 and ck["sampler"]["position"] == 8
    ck["sampler"]["position"] = 16  # as two ranks of batch 4 write it
    ck["rng"] = ck["rng"] * 2
    save_checkpoint(path, ck)
    seen: list[int] = []
    real_item = trainer_mod.D.MixSampler.item

    def item(self, k):  # type: ignore[no-untyped-def]
        seen.append(k)
        return real_item(self, k)

    trainer_mod.D.MixSampler.item = item  # type: ignore[method-assign]
    try:
        res = train(cfg_for(data, resume=True, **common))
    finally:
        trainer_mod.D.MixSampler.item = real_item  # type: ignore[method-assign]
    assert res.step == 4 and min(seen) == 16
    rows = read_metrics(res.out)
    assert [(r["step"], r["samples"]) for r in rows if r["train_loss"]][-2:] == [("3", "20"), ("4", "24")]
    assert load_checkpoint(path)["sampler"]["position"] == 24
    assert "the data stream continues at sample 16" in (res.out / "train.log").read_text(encoding="utf-8")


def test_resuming_with_another_layout_is_a_clear_error(data: Path) -> None:
    """A wide run's checkpoint does not fit the narrow model: resuming with --set model=lprnet names the run's
    layout; resuming without a layout continues the run's own (--init-weights is ignored when resuming)."""
    common: dict[str, Any] = dict(steps=4, ckpt_every=2, eval_every=100, val_synth=None)
    with pytest.raises(Killed):
        train(cfg_for(data, model="lprnet_wide", **common), on_step=_kill_at(3))
    with pytest.raises(TrainError, match="trains lprnet_wide, not lprnet; pass --set model=lprnet_wide"):
        train(cfg_for(data, resume=True, model="lprnet", **common))
    res = train(cfg_for(data, resume=True, **common))  # as a run fine-tuned from the bundled weights resumes
    assert res.step == 4
    _, meta = read_weights(res.final_weights)
    assert meta.config.variant == "lprnet_wide"


# --------------------------------------------------------------------------- validation and selection


def test_a_val_dir_without_plates_is_an_error(data: Path) -> None:
    """An accuracy over no plates reads 0.0; with --select-on val-dir it would choose best.safetensors."""
    (data / "empty").mkdir()
    for where in (str(data / "empty"), f"ccpd:{data / 'nope'}"):
        with pytest.raises(TrainError, match="no labelled plates"):
            train(cfg_for(data, val_dir=where, select_on="val-dir", steps=2))


def test_resuming_with_another_selection_metric_starts_a_new_best(data: Path) -> None:
    """best_metric was an accuracy on the synthetic set; after --select-on val-dir it must not be compared with
    accuracies on the user's folder."""
    make_folder(data / "real", PLATES[:3])
    train(cfg_for(data, steps=3, eval_every=3, ckpt_every=3))
    ck = load_checkpoint(data / "run" / "checkpoints" / "last.pt")
    assert ck["best_on"] == "synth"
    ck["best_metric"] = 2.0  # no accuracy beats it: under the old comparison nothing would count as a best
    save_checkpoint(data / "run" / "checkpoints" / "last.pt", ck)
    before = (data / "run" / "best.safetensors").stat().st_mtime_ns
    res = train(cfg_for(data, steps=6, eval_every=3, ckpt_every=3, resume=True, val_dir=str(data / "real"),
                        select_on="val-dir"))
    assert res.best_metric is not None and res.best_metric <= 1.0
    _, meta = read_weights(data / "run" / "best.safetensors")
    assert meta.provenance["selected_on"] == "val_dir_acc"
    assert (data / "run" / "best.safetensors").stat().st_mtime_ns != before
    assert "selection is now on val_dir_acc" in (data / "run" / "train.log").read_text(encoding="utf-8")


@pytest.mark.parametrize("args, msg", [(["--steps", "0"], "--steps"), (["--batch-size", "0"], "--batch-size"),
                                       (["--device", "foo"], "not a device name")])
def test_train_bench_bad_arguments_are_one_line_errors(args: list[str], msg: str) -> None:
    from lprnet.cli import app

    res = CliRunner().invoke(app, ["train-bench", "--threads", "1", *args])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert msg in res.output


def test_a_charset_without_chinese_plates_validates_on_no_synthetic_set(data: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """Our synthetic plates are Chinese: for a digits-only charset none is kept, so no best.safetensors is chosen
    on an empty set (an accuracy over none read 0.0 and was called the best)."""
    make_folder(data / "digits", ["1234567", "7654321", "1122334", "9988776"])
    res = train(cfg_for(data, data=[f"real:{data / 'digits'}"], charset="0123456789", val_synth=None,
                        val_synth_n=20, steps=2, eval_every=1, ckpt_every=2))
    assert "no synthetic validation plate fits this charset" in capsys.readouterr().err
    assert res.best_weights is None and not (data / "run" / "best.safetensors").exists()
    assert (data / "run" / "final.safetensors").exists()


# --------------------------------------------------------------------------- resuming with other settings


def test_resume_with_a_lower_lr_uses_it(data: Path) -> None:
    """A stopped run advises "lower --lr and continue with --resume": the checkpoint's optimiser state must not
    bring back the old lr (nor the old weight decay)."""
    common: dict[str, Any] = dict(warmup_steps=0, min_lr_ratio=1.0, log_every=1, ckpt_every=2, eval_every=100,
                                  val_synth=None)
    train(cfg_for(data, steps=2, lr=1e-3, **common))
    res = train(cfg_for(data, steps=3, lr=1e-5, weight_decay=0.25, resume=True, **common))
    rows = [r for r in read_metrics(res.out) if r["train_loss"]]
    assert [(r["step"], float(r["lr"])) for r in rows] == [("1", 1e-3), ("2", 1e-3), ("3", 1e-5)]
    groups = load_checkpoint(res.out / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.25, 0.0]
    assert all(g["lr"] == g["initial_lr"] == 1e-5 for g in groups)


def test_resuming_with_another_charset_is_a_clear_error(data: Path) -> None:
    """The checkpoint's classifier has the old charset's classes: a TrainError naming the field, not a traceback."""
    from lprnet.charset import Charset
    from lprnet.model import LPRNet

    save_checkpoint(data / "run" / "checkpoints" / "last.pt", {
        "step": 2, "model": LPRNet(Charset.chinese().num_classes).state_dict(),
        "config": {"model": "lprnet", "charset": None, "input_size": [94, 24]}})
    with pytest.raises(TrainError, match=r"does not fit this model \(charset: None -> '0123456789'\)"):
        train(cfg_for(data, charset="0123456789", resume=True, steps=4))


def test_a_val_dir_whose_plates_the_charset_cannot_read_is_an_error(data: Path) -> None:
    """Every plate dropped by the charset leaves no plates: an accuracy over none would read 0.0 and pick best."""
    make_folder(data / "cn", PLATES[:3])
    cfg = cfg_for(data, charset="0123456789", val_synth=None, val_dir=str(data / "cn"), select_on="val-dir")
    with pytest.warns(UserWarning, match="dropped 3"), pytest.raises(TrainError, match=r"--val-dir .*cn: none of"):
        trainer_mod.build_val_data(cfg, cfg.get_charset(), data / "run", True)


def test_the_cached_synthetic_validation_set_follows_val_synth_n(data: Path) -> None:
    """``val_synth.npz`` in the run folder is remade when a resumed run asks for another number of plates."""
    out = data / "run"
    cs = TrainConfig().get_charset()
    first = trainer_mod.build_val_data(cfg_for(data, val_synth=None, val_synth_n=3), cs, out, True)
    assert len(first["synth"]) == 3  # type: ignore[arg-type]
    again = trainer_mod.build_val_data(cfg_for(data, val_synth=None, val_synth_n=5), cs, out, True)
    assert len(again["synth"]) == 5  # type: ignore[arg-type]
    cached = trainer_mod.build_val_data(cfg_for(data, val_synth=None, val_synth_n=5), cs, out, True)
    assert cached["synth"].labels == again["synth"].labels  # type: ignore[attr-defined]


def test_set_keeps_numbers_as_text_for_text_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--set out=2024`` is a folder name and ``--set charset=1234567890`` a charset, not numbers to refuse."""
    code, output, cfg = _cli(monkeypatch, ["--set", "out=2024", "--set", "charset=1234567890", "--set", "steps=700"])
    assert code == 0, output
    assert cfg is not None and (cfg.out, cfg.charset, cfg.steps) == ("2024", "1234567890", 700)


def test_a_val_dir_with_malformed_entries_says_what_it_leaves_out(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A manifest row that cannot become a sample is left out of the validation accuracy with a note naming it,
    not silently (training's own sources warn the same way)."""
    make_folder(data / "cn", PLATES[:2])
    m = data / "val.csv"
    m.write_text("path,plate\n" + "".join(f"cn/{p}.png,{p}\n" for p in PLATES[:2]) + "only-one-field\n",
                 encoding="utf-8")
    vals = trainer_mod.build_val_data(cfg_for(data, val_synth=None, val_dir=str(m)), TrainConfig().get_charset(),
                                      data / "run", True)
    assert len(vals["dir"]) == 2  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "--val-dir" in err and "1 entries left out" in err and "val.csv:4" in err
    res = train(cfg_for(data, val_synth=None, val_dir=str(m), steps=1))  # a run keeps the note in its log too
    assert "1 entries left out" in (res.out / "train.log").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the user's own data, and finished runs


def test_unreadable_images_and_non_plate_labels_are_dropped_by_name_and_the_run_trains(data: Path) -> None:
    """One corrupt file must not abort a run (check-data names them all); a file name that is no plate label
    (``0001.png``, four characters; ``皖A1234.png``, six) is not trained on. Both are said in train.log."""
    d = make_folder(data / "mine", PLATES[:3])
    (d / "皖A99999.jpg").write_bytes(b"not an image")
    make_folder(d, ["0001", "皖A1234"])
    res = train(cfg_for(data, data=[f"real:{d}"], val_synth=None, steps=2, eval_every=100, val_dir=str(d)))
    assert res.step == 2
    log = (res.out / "train.log").read_text(encoding="utf-8")
    assert f"warning: dropped 1 real samples whose image cannot be read, e.g. {d / '皖A99999.jpg'}: " in log
    assert "warning: dropped 2 real samples whose labels cannot be training labels" in log
    assert "-> 3 real samples" in log  # the three good crops are the source, for training and for validation
    assert "validation dir: 3 plates" in log
    bad = data / "unreadable"
    bad.mkdir()
    (bad / "皖A99999.jpg").write_bytes(b"not an image")
    with pytest.raises(TrainError, match="none of its 1 labelled plates can be read"):  # not an accuracy over none
        train(cfg_for(data, data=[f"real:{d}"], val_synth=None, steps=2, val_dir=str(bad), out=str(data / "r2")))


def test_resuming_on_another_val_dir_starts_a_new_best(data: Path) -> None:
    """A best accuracy on one folder says nothing about another: after a resume on other plates the next
    evaluation is a new best, and the log says why."""
    a, b = make_folder(data / "a", PLATES[:3]), make_folder(data / "b", PLATES[3:7], seed=5)
    common: dict[str, Any] = dict(select_on="val-dir", eval_every=3, ckpt_every=3)
    train(cfg_for(data, steps=3, val_dir=str(a), **common))
    ck = load_checkpoint(data / "run" / "checkpoints" / "last.pt")
    assert ck["best_set"] == f"--val-dir {a.resolve()} (3 plates)"
    ck["best_metric"] = 2.0  # no accuracy beats it: were it kept, best.safetensors would never change again
    save_checkpoint(data / "run" / "checkpoints" / "last.pt", ck)
    res = train(cfg_for(data, steps=6, val_dir=str(b), resume=True, **common))
    assert res.best_metric is not None and res.best_metric <= 1.0
    _, meta = read_weights(data / "run" / "best.safetensors")
    assert meta.provenance["steps"] == 6
    assert "selection is now on --val-dir" in (data / "run" / "train.log").read_text(encoding="utf-8")


def test_resuming_a_finished_run_leaves_its_weights_as_they_were(data: Path) -> None:
    res = train(cfg_for(data, steps=3, eval_every=3, ckpt_every=3))
    before = {n: (res.out / n).read_bytes() for n in ("final.safetensors", "best.safetensors")}
    again = train(cfg_for(data, steps=3, eval_every=3, ckpt_every=3, resume=True))
    assert again.step == 3 and again.final_weights == res.out / "final.safetensors"
    assert {n: (res.out / n).read_bytes() for n in before} == before  # metrics and provenance kept
    assert "the run is complete" in (res.out / "train.log").read_text(encoding="utf-8")


def test_a_run_killed_after_its_last_checkpoint_writes_final_on_resume(data: Path) -> None:
    """The last checkpoint is written before final.safetensors: a kill between them is mended by --resume."""
    with pytest.raises(Killed):
        train(cfg_for(data, steps=3, eval_every=3, ckpt_every=3), on_step=_kill_at(3))
    assert not (data / "run" / "final.safetensors").exists()
    res = train(cfg_for(data, steps=3, eval_every=3, ckpt_every=3, resume=True))
    assert res.final_weights == data / "run" / "final.safetensors" and res.final_weights.exists()


def test_a_resume_without_a_selection_set_keeps_the_best(data: Path) -> None:
    """No validation set on one resume says nothing about the old best: it is kept for the next resume on it."""
    common: dict[str, Any] = dict(eval_every=3, ckpt_every=3)
    train(cfg_for(data, steps=3, **common))
    ck = load_checkpoint(data / "run" / "checkpoints" / "last.pt")
    ck["best_metric"] = 2.0  # no accuracy beats it, so a kept best is never replaced
    save_checkpoint(data / "run" / "checkpoints" / "last.pt", ck)
    train(cfg_for(data, steps=6, resume=True, val_synth=None, **common))
    ck = load_checkpoint(data / "run" / "checkpoints" / "last.pt")
    assert ck["best_metric"] == 2.0 and ck["best_set"].startswith("--val-synth ")
    train(cfg_for(data, steps=9, resume=True, **common))
    _, meta = read_weights(data / "run" / "best.safetensors")
    assert meta.provenance["steps"] == 3


def test_out_naming_a_file_is_a_one_line_error(data: Path) -> None:
    (data / "afile").write_text("x")
    with pytest.raises(TrainError, match="a file is there; the run folder must be a directory"):
        train(cfg_for(data, out=str(data / "afile"), steps=1))


def test_a_time_budget_is_kept_during_the_warm_up(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-planning starts 20 steps in, not after the warm-up: a budget shorter than the warm-up stops the run
    on time and says that the learning rate never reached --lr."""
    monkeypatch.setattr(trainer_mod, "time", _StepClock(0.5))  # 0.5 s per step: 30 s is 60 steps
    res = train(cfg_for(data, steps=500, warmup_steps=400, time_budget_s=30.0, eval_every=1000, ckpt_every=1000,
                        val_synth=None, log_every=100))
    assert res.step == 60
    assert "fewer than --warmup-steps 400" in (res.out / "train.log").read_text(encoding="utf-8")
