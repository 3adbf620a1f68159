"""``lprnet train`` and ``lprnet train-bench``: the command line of :mod:`lprnet.train`.

Settings come from, in increasing priority: the defaults, the run's own ``config.json`` when it is
resumed (``--resume``), a ``--config`` file (YAML or JSON with the :class:`~lprnet.train.TrainConfig`
field names), ``--set key=value`` (any field, also those with a flag) and the flags that are given.
Everything is validated by the schema.  Under ``torchrun`` the same command runs DDP::

    torchrun --nproc_per_node 2 -m lprnet train --data synth:/data/shards ...

(``-m lprnet.cli.train train`` works too, with a harmless runpy warning: the package imports the module first.)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

OptStr = Optional[str]
OptInt = Optional[int]
OptFloat = Optional[float]


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` items as JSON values; a text field (``out``, ``charset``, paths) keeps a number as written."""
    from lprnet.train.config import TrainConfig

    text_fields = {k for k, f in TrainConfig.model_fields.items() if f.annotation in (str, Optional[str])}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        try:
            v = json.loads(val)
        except json.JSONDecodeError:
            v = val
        if key in text_fields and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = val  # --set out=2024, --set charset=1234567890: text, not a number
        out[key] = v
    return out


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``600``, ``45s``, ``90m``, ``2h`` or ``1h30m``; a clear error otherwise."""
    t = text.strip().lower()
    m = _DURATION.fullmatch(t)
    if not t or m is None or not any(m.groups()):
        raise typer.BadParameter(f"--time-budget expects seconds or a duration like 90m, 2h or 1h30m; got {text!r}")
    if m.group(3) and (m.group(1) or m.group(2)) and not t.endswith("s"):  # 1h30: 30 minutes or 30 seconds?
        raise typer.BadParameter(f"--time-budget {text!r}: give the last number its unit (e.g. 1h30m or 1m30s)")
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    total = 3600.0 * h + 60.0 * mi + se
    if total <= 0:
        raise typer.BadParameter(f"--time-budget must be positive, got {text!r}")
    return total


def train_command(
    data: Annotated[Optional[list[str]], typer.Option(
        "--data", help="Training source KIND:PATH[:RATIO], repeatable; KIND is synth (shard folder), "
        "real (folder/manifest/CCPD, detected), ccpd, folder or manifest. E.g. --data synth:/d/shards:0.8 "
        "--data real:/d/crops:0.2")] = None,
    val_synth: Annotated[OptStr, typer.Option(help="Folder of synthetic validation shards (default: "
                                              "generate 2,000 plates; --set val_synth_n=N)")] = None,
    val_dir: Annotated[OptStr, typer.Option(help="Labelled real validation data (folder, manifest, "
                                            "ccpd:DIR); reported, used for selection only with "
                                            "--select-on val-dir")] = None,
    steps: Annotated[OptInt, typer.Option(help="Optimizer steps (default 20000)")] = None,
    time_budget: Annotated[OptStr, typer.Option(help="Train for about this long (training time, evaluation not "
                                                "counted: 600, 90m, 2h, 1h30m): the run plans its steps, the "
                                                "schedule's end, from its measured step time, at most --steps")] = None,
    batch_size: Annotated[OptInt, typer.Option(help="Batch size per process (default 64)")] = None,
    lr: Annotated[OptFloat, typer.Option(help="Peak learning rate, AdamW (default 0.001)")] = None,
    out: Annotated[OptStr, typer.Option(help="Run folder (default ~/.cache/lprnet/runs/<time>, "
                                        "or $LPRNET_RUNS/<time>)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last "
                                         "checkpoint, with the settings it ran with (its config.json); "
                                         "options given now change them (a warning names those that make "
                                         "it differ from an uninterrupted run)")] = False,
    init_weights: Annotated[OptStr, typer.Option(help="Start from these weights (fine-tuning; 'default': the "
                                                   "bundled weights); ignored when resuming")] = None,
    device: Annotated[OptStr, typer.Option(help="cpu, cuda or auto (default auto)")] = None,
    workers: Annotated[OptInt, typer.Option(help="DataLoader worker processes (default 2)")] = None,
    threads: Annotated[OptInt, typer.Option(help="torch intra-op threads (default: torch's)")] = None,
    seed: Annotated[OptInt, typer.Option(help="Seed of init, data order, augmentation (default 0)")] = None,
    select_on: Annotated[OptStr, typer.Option(help="synth or val-dir: which set picks best.safetensors "
                                              "(default synth)")] = None,
    eval_every: Annotated[OptInt, typer.Option(help="Evaluate every N steps (default 1000)")] = None,
    ckpt_every: Annotated[OptInt, typer.Option(help="Checkpoint every N steps (default 1000)")] = None,
    log_every: Annotated[OptInt, typer.Option(help="Log a metrics row every N steps (default 50)")] = None,
    warmup_steps: Annotated[OptInt, typer.Option(help="Linear warm-up steps, fewer than --steps (default 500)")] = None,
    amp: Annotated[OptStr, typer.Option(help="CUDA mixed precision: auto, bf16, fp16, off (default auto)")] = None,
    ema_decay: Annotated[OptFloat, typer.Option(help="Evaluate and export an exponential moving average of "
                                                "the weights with this decay, e.g. 0.999 (0: off)")] = None,
    teacher: Annotated[OptStr, typer.Option(help="Frozen teacher weights ('default': the bundled ones): learning "
                                            "without forgetting, the loss adds the KL divergence from its "
                                            "readings, e.g. when fine-tuning the default on your own crops")] = None,
    distill_weight: Annotated[OptFloat, typer.Option(help="Weight of the teacher's term (default 1)")] = None,
    distill_temperature: Annotated[OptFloat, typer.Option(help="Softmax temperature of the teacher's term "
                                                          "(default 1)")] = None,
    distill_on: Annotated[OptStr, typer.Option(help="correct (default: only samples whose label the teacher "
                                               "reads right) or all")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last",
                                                          help="NHWC memory layout (default on: faster on "
                                                          "x86 CPUs, same results to rounding)")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the "
                                                     "training step (CPU: needs a C++ compiler)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON config file; --set and "
                                                   "flags override it")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Any config field, KEY=VALUE (JSON "
                                                      "values: 1e-3, true, null, [..]), repeatable. "
                                                      "Precedence: --config file < --set < flags")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar")] = False,
) -> None:
    """Train LPRNet with CTC on synthetic shards and/or real data."""
    from lprnet.train import ConfigError, TrainError, make_config, train
    from lprnet.train.config import saved_run_config

    sets = _parse_sets(set_ or [])
    flags: dict[str, Any] = dict(  # None: not given, so --set or the config file decide
        data=data or None, val_synth=val_synth, val_dir=val_dir, steps=steps, batch_size=batch_size,
        lr=lr, out=out, resume=True if resume else None, device=device, init_weights=init_weights,
        workers=workers, threads=threads, seed=seed, select_on=select_on, eval_every=eval_every, ckpt_every=ckpt_every,
        log_every=log_every, warmup_steps=warmup_steps, amp=amp, ema_decay=ema_decay, channels_last=channels_last,
        compile=compile_, progress=False if no_progress else None, teacher=teacher, distill_weight=distill_weight,
        distill_temperature=distill_temperature, distill_on=distill_on,
        time_budget_s=parse_duration(time_budget) if time_budget is not None else None)
    try:
        base = saved_run_config(out) if resume and out else None  # a resumed run keeps its settings
        cfg = make_config(config, sets=sets, base=base, **flags)
        if not cfg.data:
            if resume and base is None:
                raise ConfigError(f"--resume: {out} holds no run to continue (no config.json); start one there "
                                  "without --resume, with --data")
            raise ConfigError("no training data: pass --data synth:DIR (repeatable) or set 'data' in --config")
        train(cfg, command=shlex.join(sys.argv))
    except (ConfigError, TrainError, FileNotFoundError, ValueError) as e:
        if not getattr(e, "logged", False) and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 says it
            typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def train_bench_command(
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size")] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps")] = 20,
    threads: Annotated[OptInt, typer.Option(min=1, help="torch intra-op threads")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    channels_last: Annotated[bool, typer.Option("--channels-last/--no-channels-last",
                                                help="Memory layout, as lprnet train")] = True,
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the step, as "
                                           "lprnet train --compile (warm-up includes compiling)")] = False,
) -> None:
    """Measure training throughput (forward + CTC + backward + AdamW step) on random plates."""
    from lprnet.cli._common import fail
    from lprnet.core.backend import resolve_device
    from lprnet.train import benchmark

    try:
        resolve_device(device)
    except ValueError as e:
        fail(str(e))
    r = benchmark(batch_size=batch_size, steps=steps, threads=threads, device=device, channels_last=channels_last,
                  compile=compile_)
    typer.echo(f"{r['plates_per_s']:.1f} plates/s ({r['ms_per_step']:.1f} ms/step, batch {batch_size}, "
               f"{r['threads']} threads, {device}, {'NHWC' if channels_last else 'NCHW'}"
               f"{', compiled' if compile_ else ''})")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``train-bench`` to the main app."""
    app.command("train")(train_command)
    app.command("train-bench")(train_bench_command)


if __name__ == "__main__":  # torchrun -m lprnet.cli.train train ...
    _app = typer.Typer(add_completion=False)
    register(_app)
    _app()
