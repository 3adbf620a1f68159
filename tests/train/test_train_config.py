"""Training config: schema validation, YAML/JSON files, CLI overrides; the train command end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lprnet.train import ConfigError, TrainConfig, make_config


def test_defaults_and_derived(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = TrainConfig(data=["synth:/x"])
    assert cfg.batch_size == 64 and cfg.get_charset().num_classes == 68 and cfg.model_cfg().output_length == 18
    # a run's folder is never inside the repository: $LPRNET_RUNS, else the user's cache
    monkeypatch.setenv("LPRNET_RUNS", str(tmp_path / "runs"))
    assert cfg.out_dir().parent == tmp_path / "runs"
    monkeypatch.delenv("LPRNET_RUNS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cfg.out_dir().parent == tmp_path / "home" / ".cache" / "lprnet" / "runs"
    custom = TrainConfig(data=["synth:/x"], charset="AB12")
    assert custom.get_charset().num_classes == 5 and custom.get_charset().blank_index == 4


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_file_then_overrides(tmp_path: Path, fmt: str) -> None:
    d = {"data": ["synth:/a:0.8", "real:/b:0.2"], "steps": 500, "lr": 0.002, "batch-size": 32}
    p = tmp_path / f"c.{fmt}"
    if fmt == "yaml":
        import yaml

        p.write_text(yaml.safe_dump(d, allow_unicode=True))
    else:
        p.write_text(json.dumps(d))
    cfg = make_config(p, steps=1000, lr=None, workers=0)
    assert cfg.steps == 1000 and cfg.lr == 0.002 and cfg.batch_size == 32 and cfg.workers == 0
    assert [s.ratio for s in cfg.sources()] == [0.8, 0.2]


@pytest.mark.parametrize("kw, msg", [
    ({"steps": 0}, "steps"),
    ({"batch_size": -1}, "batch_size"),
    ({"bogus": 1}, "bogus"),
    ({"data": ["shards/"]}, "KIND:PATH"),
    ({"warmup_steps": 50, "steps": 10}, "warmup_steps"),
    ({"select_on": "val-dir"}, "needs val_dir"),
    ({"input_size": (90, 20)}, "not supported"),
    ({"amp": "fp8"}, "amp"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"ema_decay": -0.1}, "ema_decay"),
])
def test_invalid_configs_name_the_field(kw: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        make_config(**{"data": ["synth:/x"], **kw})


def test_bad_files(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("steps: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        make_config(tmp_path / "c.yaml")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        make_config(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="cannot read"):
        make_config(tmp_path / "missing.yaml")


def _train_app_with_a_shard(tmp_path: Path) -> typer.Typer:
    """A Typer app with the train command, and a four-plate shard in ``tmp_path / "s"``."""
    from lprnet.cli import train as cli_train

    app = typer.Typer()
    cli_train.register(app)
    rng = np.random.default_rng(0)
    (tmp_path / "s").mkdir()
    np.savez_compressed(tmp_path / "s" / "shard-00000.npz", images=rng.integers(0, 256, (4, 24, 94, 3), dtype=np.uint8),
                        labels=np.array(["皖A12345", "京AD12345", "沪C21F13", "粤B8888Z"]))
    return app


def test_train_cli_end_to_end(tmp_path: Path) -> None:
    app = _train_app_with_a_shard(tmp_path)
    (tmp_path / "c.yaml").write_text("steps: 50\nwarmup_steps: 0\nthreads: 1\nval_synth_n: 0\n")
    runner = CliRunner()
    args = ["train", "--data", f"synth:{tmp_path / 's'}", "--steps", "2", "--batch-size", "2", "--workers", "0",
            "--out", str(tmp_path / "run"), "--config", str(tmp_path / "c.yaml"), "--set", "dropout=0.1",
            "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["steps"] == 2 and cfg["dropout"] == 0.1 and cfg["warmup_steps"] == 0 and cfg["threads"] == 1
    assert (tmp_path / "run" / "final.safetensors").exists()
    res = runner.invoke(app, args)  # same folder without --resume: refused
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(app, [*args, "--resume"])  # already finished: nothing to do, exports again
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--steps", "0", "--data", "synth:/x"])
    assert res.exit_code == 2 and "steps" in res.output
    # the teacher flags reach the config and the run
    kd_args = [a if a != str(tmp_path / "run") else str(tmp_path / "kd") for a in args]
    res = runner.invoke(app, [*kd_args, "--teacher", "default", "--distill-weight", "0.5", "--distill-temperature",
                              "2", "--distill-on", "all"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "kd" / "config.json").read_text())
    assert (cfg["teacher"], cfg["distill_weight"], cfg["distill_temperature"], cfg["distill_on"]) == (
        "default", 0.5, 2.0, "all")
    assert "distill weight 0.5, temperature 2.0, on every sample" in (tmp_path / "kd" / "train.log").read_text()
    res = runner.invoke(app, ["train", "--data", "synth:/x", "--teacher", "default", "--distill-on", "some"])
    assert res.exit_code == 2 and "distill_on" in res.output


@pytest.mark.parametrize(("text", "seconds"), [("600", 600.0), ("45s", 45.0), ("90m", 5400.0), ("2h", 7200.0),
                                               ("1h30m", 5400.0), ("0.5h", 1800.0), (" 10M ", 600.0)])
def test_time_budget_durations(text: str, seconds: float) -> None:
    from lprnet.cli.train import parse_duration

    assert parse_duration(text) == seconds


def test_time_budget_flag_reaches_the_config_and_bad_values_are_named(tmp_path: Path) -> None:
    app = _train_app_with_a_shard(tmp_path)
    runner = CliRunner()
    args = ["train", "--data", f"synth:{tmp_path / 's'}", "--steps", "2", "--batch-size", "2", "--workers", "0",
            "--threads", "1", "--warmup-steps", "0", "--set", "val_synth_n=0", "--out", str(tmp_path / "run"),
            "--no-progress"]
    res = runner.invoke(app, [*args, "--time-budget", "1h30m"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["time_budget_s"] == 5400.0
    for bad in ("soon", "0", "-5m", "1h30", "1m30"):  # 1h30: 30 minutes or 30 seconds? The unit is asked for
        res = runner.invoke(app, [*args, "--time-budget", bad])
        assert res.exit_code == 2 and "--time-budget" in res.output, (bad, res.output)


def test_resume_with_only_out_continues_with_the_runs_own_settings(tmp_path: Path) -> None:
    """``--resume --out RUN`` alone continues the run as it was set up (its config.json), not with the defaults
    (20,000 steps, batch 64, warm-up restarted, "no training data"); options given now change it, with a warning."""
    app = _train_app_with_a_shard(tmp_path)
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--data", f"synth:{tmp_path / 's'}", "--steps", "3", "--batch-size", "2",
                              "--warmup-steps", "1", "--workers", "0", "--threads", "1", "--set", "val_synth_n=0",
                              "--set", "dropout=0.2", "--ckpt-every", "1", "--out", str(run), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--steps", "5", "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["steps"], cfg["batch_size"], cfg["warmup_steps"], cfg["dropout"], cfg["data"]) == (
        5, 2, 1, 0.2, [f"synth:{tmp_path / 's'}"])
    log = (run / "train.log").read_text()
    assert "resuming at step 3" in log
    assert "warning: resuming with changed settings steps: 3 -> 5;" in log  # that one alone
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    res = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "broken")])
    assert res.exit_code == 2 and "config.json: the run's saved settings cannot be read" in res.output
    res = runner.invoke(app, ["train", "--resume", "--out", str(tmp_path / "empty")])  # not "no training data"
    assert res.exit_code == 2 and "empty holds no run to continue (no config.json)" in res.output, res.output


def test_a_short_run_without_a_warm_up_set_warms_up_for_a_tenth() -> None:
    """``--steps 20`` alone trains (warm-up 2), rather than failing on the 500-step default warm-up; longer runs and a
    warm-up that is set are as before, and a warm-up set too long names both flags."""
    base = {"data": ["synth:/x"]}
    assert make_config(**base, steps=20).warmup_steps == 2
    assert make_config(**base, steps=500).warmup_steps == 50
    assert make_config(**base, steps=501).warmup_steps == 500
    assert make_config(**base, steps=20, warmup_steps=5).warmup_steps == 5
    assert make_config(**base, steps=100.0).warmup_steps == make_config(**base, steps="100").warmup_steps == 10
    with pytest.raises(ConfigError, match=r"warmup_steps \(50, --warmup-steps\) must be below steps \(10, --steps\)"):
        make_config(**base, steps=10, warmup_steps=50)


def test_a_run_that_diverges_says_so_once(tmp_path: Path) -> None:
    """The run writes its stopping error to its console and train.log; the command line does not repeat it."""
    app = _train_app_with_a_shard(tmp_path)
    res = CliRunner().invoke(app, ["train", "--data", f"synth:{tmp_path / 's'}", "--steps", "6", "--batch-size", "2",
                                   "--warmup-steps", "1", "--workers", "0", "--threads", "1", "--lr", "1e30",
                                   "--set", "val_synth_n=0", "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 2
    assert res.output.count("training stopped without saving this state") == 1, res.output
    assert "training stopped without saving this state" in (tmp_path / "run" / "train.log").read_text()


def test_the_defaults_train_help_states_are_the_schemas() -> None:
    """``lprnet train --help`` says each option's default (the flags default to "not given", so typer cannot):
    every "(default X)" it states is TrainConfig's default for that field."""
    import typing

    from lprnet.cli.train import train_command
    from lprnet.train.config import TrainConfig

    checked = 0
    for name, hint in typing.get_type_hints(train_command, include_extras=True).items():
        helps = [getattr(m, "help", None) for m in getattr(hint, "__metadata__", ())]
        text = " ".join(h for h in helps if h)
        m = re.search(r"\(default (?!on\b|:)([^)\s]+)\)", text)
        if not m:
            continue
        want = TrainConfig.model_fields[name.rstrip("_")].default
        got = m.group(1)
        assert str(want) == got or (isinstance(want, float) and float(got) == want), (name, got, want)
        checked += 1
    assert checked >= 12


def test_validating_on_a_training_source_is_warned(tmp_path: Path) -> None:
    app = _train_app_with_a_shard(tmp_path)
    res = CliRunner().invoke(app, ["train", "--data", f"synth:{tmp_path / 's'}", "--val-synth", str(tmp_path / "s"),
                                   "--steps", "1", "--batch-size", "2", "--warmup-steps", "0", "--workers", "0",
                                   "--threads", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (f"warning: --val-synth {tmp_path / 's'} is also a --data source: the run is validated on plates it "
            "trains on") in (tmp_path / "run" / "train.log").read_text()
