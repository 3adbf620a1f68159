"""The training loop: CTC on LPRNet (deploy form), AdamW + warm-up/cosine, exact resume, DDP.

One function, :func:`train`, in the spirit of nanoGPT: build data, model, optimiser; loop;
evaluate; checkpoint; export.  Facts worth knowing:

* loss: ``log_softmax`` over classes of the ``N x C x T`` logits laid out ``T x N x C``,
  ``nn.CTCLoss(blank=charset.blank_index, zero_infinity=True)``, every input length ``T``;
* the model is put in ``train()`` for steps and ``eval()`` for evaluation explicitly (the
  reference trained in eval mode by mistake);
* AdamW (decay on conv weights only), linear warm-up then cosine decay to
  ``lr * min_lr_ratio``, gradient-norm clipping; autocast (bf16, or fp16 with a GradScaler)
  on CUDA only;
* the data stream is :class:`~lprnet.data.dataset.MixSampler`, whose position (the samples consumed,
  ``step * batch_size * world_size`` in a run that never changed its world size) is checkpointed: with
  the checkpointed model, optimiser, scheduler, scaler and RNG states a resumed run continues exactly
  as if never stopped, and one resumed on another number of ranks continues the stream where it stopped;
* checkpoints (``<out>/checkpoints/last.pt``) are written atomically, so a crash mid-write
  leaves the previous one; ``best.safetensors`` is chosen on the synthetic validation set (or
  the user's ``--val-dir`` with ``select_on: val-dir``) and never on anything else;
* ``channels_last`` (default on) keeps the weights and batches in the NHWC memory layout, which
  PyTorch's CPU (oneDNN) and cuDNN convolutions run faster; it changes rounding only, and the
  exported weights are stored contiguous as always;
* ``compile`` wraps the training step's model in ``torch.compile`` (checkpoints, evaluation and
  exports use the plain module, so a run may be resumed with or without it; compiled dropout draws
  its masks differently, so switching it on resume is warned as a change of the run);
* with a ``teacher`` (learning without forgetting, Li & Hoiem 2017) the frozen teacher reads each batch
  in eval mode and the loss adds ``distill_weight * T^2 * KL(teacher || student)`` of the per-step class
  distributions at temperature ``T``, averaged over the CTC steps and the batch, counting by default only
  samples whose label the teacher reads right (``distill_on``); ``train_loss`` stays the CTC term and
  ``train_distill`` logs the KL term;
* with ``ema_decay > 0`` an exponential moving average of the weights (PyTorch's
  ``AveragedModel``) is what is evaluated, selected and exported; it is checkpointed too;
* with ``time_budget_s`` the run plans its own length: from its 20th step (warm-up or not) it
  re-plans the number of steps every ``REPLAN_EVERY`` steps from the measured time per step, so that the training
  time (checkpointed, evaluation not counted) ends near the budget with the cosine schedule complete; the plan is
  checkpointed, never exceeds ``steps``, and a run whose budget is spent stops at the next re-planning;
* a non-finite training loss (the batch mean, after ``zero_infinity`` has zeroed the impossible
  alignments), distillation term or -- without a GradScaler, which skips such steps by design --
  gradient norm stops the run with a :class:`TrainError` naming the step and the value; weights that
  are not finite are never checkpointed or exported, so ``checkpoints/last.pt`` stays the last good
  state to ``--resume`` from (with a lower ``--lr``);
* the partial loss window of ``metrics.csv`` (the steps since the last logged row) is checkpointed, so
  a resumed run logs the same ``train_loss`` rows as an uninterrupted one whatever ``log_every`` and
  ``ckpt_every`` are;
* under ``torchrun`` (``WORLD_SIZE > 1``) it runs DDP (gloo on CPU, nccl on CUDA), each rank
  taking interleaved items of the stream; only rank 0 evaluates and writes files.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset

from lprnet.charset import Charset
from lprnet.config import ModelConfig
from lprnet.core.process import greedy_strings
from lprnet.data import dataset as D
from lprnet.data import real
from lprnet.errors import describe_error, first_line
from lprnet.model import LPRNet
from lprnet.train.config import TrainConfig
from lprnet.weights import WeightsMeta, atomic_write_bytes, nonfinite_tensors, save_weights

VAL_SEED = 0x7A11D  # generated validation plates; keep training shards on other seeds
CKPT_VERSION = 1
METRIC_FIELDS = ["step", "samples", "time_s", "lr", "train_loss", "plates_per_s",
                 "val_synth_loss", "val_synth_acc", "val_dir_loss", "val_dir_acc", "train_distill"]


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why. ``logged``: the run has already written it to
    its console and train.log (the command line does not say it again)."""

    def __init__(self, message: str, logged: bool = False) -> None:
        super().__init__(message)
        self.logged = logged


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Pick the device; when ``WORLD_SIZE > 1`` join the process group from torchrun's env.

    ``timeout_s`` bounds every collective: a rank whose peer died or took another path fails after it
    (and torchrun stops the others) instead of waiting forever."""
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but CUDA is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=torch.device("cuda" if want_cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo", init_method="env://",
                                timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if want_cuda else {}))
    return Dist(rank, local, world, dev)


# --------------------------------------------------------------------------- pieces


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout the trainer keeps 4-D weights and batches in (``TrainConfig.channels_last``)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warm-up, then cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_ctc(charset: Charset) -> nn.CTCLoss:
    return nn.CTCLoss(blank=charset.blank_index, reduction="mean", zero_infinity=True)


def ctc_loss(logits: Tensor, targets: Tensor, target_lengths: Tensor, ctc: nn.CTCLoss) -> Tensor:
    """CTC loss of ``N x C x T`` logits (float32 log-softmax, ``T x N x C`` layout)."""
    n, _, t = logits.shape
    log_probs = logits.float().permute(2, 0, 1).log_softmax(2)
    input_lengths = torch.full((n,), t, dtype=torch.long, device=logits.device)
    return ctc(log_probs, targets.to(logits.device), input_lengths, target_lengths.to(logits.device))


#: Steps between re-plannings of a run with a time budget (each one a broadcast under DDP).
REPLAN_EVERY = 10


def sync_plan(steps: int, env: Dist, device: torch.device) -> int:
    """Rank 0's planned step count on every rank (each rank measures its own step time)."""
    if not env.ddp:
        return steps
    t = torch.tensor([steps], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def distill_loss(student: Tensor, teacher: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """``T^2 * sum(mask * KL(teacher || student)) / N`` for ``N x C x T`` logits.

    The KL divergence of the per-step class distributions (softmax over ``C`` at ``temperature``) is
    averaged over the ``T`` CTC steps; ``mask`` (``N``, 0/1 or weights) picks the samples, and the sum is
    divided by the whole batch, so the weight of the term does not depend on how many samples it counts.
    """
    t = float(temperature)
    log_s = torch.log_softmax(student.float() / t, dim=1)
    log_t = torch.log_softmax(teacher.detach().float() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1).mean(dim=1)  # N
    return (kl * mask.to(kl)).sum() / max(1, kl.shape[0]) * (t * t)


def teacher_mask(teacher_logits: Tensor, texts: list[str], charset: Charset, on: str) -> Tensor:
    """1 for the samples the teacher is distilled on: all, or those whose label its greedy reading matches."""
    if on == "all":
        return torch.ones(len(texts), device=teacher_logits.device)
    read = greedy_strings(teacher_logits.detach().float().cpu().numpy(), charset)
    return torch.tensor([float(a == b) for a, b in zip(read, texts)], device=teacher_logits.device)


def any_rank(flag: bool, env: Dist, device: torch.device) -> bool:
    """``flag`` or'ed over the ranks (itself without DDP): every rank takes the same way out."""
    if not env.ddp:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def load_weights_into(model: nn.Module, spec: str, charset: Charset, flag: str) -> tuple[str, str | None]:
    """Load weights ``spec`` (a file, or ``"default"``: the bundled weights) into ``model``.

    Returns the path read and, when the file's layout was narrower (``lprnet`` into an ``lprnet_wide``
    model), the file's variant name: its weights were widened first, computing the same function
    (:func:`lprnet.model.widen_state_dict`).  Errors are :class:`TrainError` naming ``flag`` and the file."""
    from lprnet.model import widen_state_dict
    from lprnet.weights import WeightsError, default_weights_path, load_state, read_weights

    path = str(default_weights_path()) if spec == "default" else spec
    try:
        sd, meta = read_weights(path, charset)
        want = tuple(getattr(model, "channel_strides", meta.config.channel_strides))
        widened = None
        if want != meta.config.channel_strides:
            try:
                sd = widen_state_dict(sd, meta.config.channel_strides, want)  # type: ignore[arg-type]
            except ValueError as e:
                raise WeightsError(f"{path}: {meta.config.variant} weights do not fit the model ({e})") from None
            widened = meta.config.variant
        load_state(model, sd, path)
    except WeightsError as e:
        raise TrainError(f"{flag}: {e}") from None
    return path, widened


def load_teacher(spec: str, charset: Charset, student: ModelConfig) -> tuple[nn.Module, str]:
    """The frozen teacher ``spec`` in eval mode, built in its own layout (it may be narrower than the student)."""
    from lprnet.weights import WeightsError, build_model, default_weights_path

    path = str(default_weights_path()) if spec == "default" else spec
    try:
        with torch.random.fork_rng(devices=[]):  # its random init is overwritten; keep the run's stream
            teacher, meta = build_model(path, charset=charset)
    except WeightsError as e:
        raise TrainError(f"--teacher: {e}") from None
    if meta.config.input_size != student.input_size:
        raise TrainError(f"--teacher: {path} reads {meta.config.input_size[0]}x{meta.config.input_size[1]} "
                         f"crops, the model trained here {student.input_size[0]}x{student.input_size[1]}")
    return teacher.requires_grad_(False), path


def make_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (``None`` when ``decay`` is 0).

    PyTorch's :class:`~torch.optim.swa_utils.AveragedModel`: the first update copies the
    weights, each later one moves the average ``1 - decay`` of the way towards them.
    """
    if decay <= 0.0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def apply_hyperparams(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                      cfg: TrainConfig) -> None:
    """The config's lr, betas and weight decay on a restored optimiser and schedule.

    A checkpoint's optimiser state carries the hyperparameters of the run that wrote it; without this,
    ``--resume --lr X`` (what a stopped run advises) would go on at the old lr.  The schedule's position
    is kept: the lr of the next step is scaled by ``cfg.lr / old lr`` (untouched when they are equal, so an
    unchanged resume stays exact)."""
    for i, g in enumerate(optimizer.param_groups):
        old = float(scheduler.base_lrs[i])
        if old != cfg.lr:
            g["lr"] = g["lr"] / old * cfg.lr if old > 0 else cfg.lr
        g["initial_lr"] = cfg.lr
        g["betas"] = tuple(cfg.betas)
        g["weight_decay"] = cfg.weight_decay if i == 0 else 0.0
    scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def make_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **({"fused": True} if fused else {}))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, charset: Charset, device: torch.device,
             ctc: nn.CTCLoss, memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Whole-plate accuracy (greedy CTC) and mean CTC loss; leaves the model in eval mode."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for x, targets, lengths, texts in loader:
        logits = model(x.to(device, non_blocking=True, memory_format=memory_format))
        loss_sum += float(ctc_loss(logits, targets, lengths, ctc)) * len(texts)
        preds = greedy_strings(logits.float().cpu().numpy(), charset)
        correct += sum(p == t for p, t in zip(preds, texts, strict=True))
        total += len(texts)
    return {"acc": correct / max(1, total), "loss": loss_sum / max(1, total), "n": total}


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, CUDA) RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in st["python"]))
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic replace: never a half-written checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainError(f"{path}: not a loadable checkpoint ({describe_error(e)})") from None


def git_commit() -> str | None:
    """``HEAD`` of the repository holding this package (``+dirty`` if modified), if any."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


class MetricsLog:
    """``metrics.csv`` (one row per log/eval step) and ``curves.png`` in the run folder."""

    def __init__(self, out: Path, resume_step: int | None) -> None:
        self.csv = out / "metrics.csv"
        self.png = out / "curves.png"
        rows = self.read()
        if resume_step is not None:
            rows = [r for r in rows if int(r["step"]) <= resume_step]
        else:
            rows = []
        self._rewrite(rows)

    def read(self) -> list[dict[str, str]]:
        if not self.csv.exists():
            return []
        with open(self.csv, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, METRIC_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write_bytes(self.csv, buf.getvalue().encode())

    def append(self, row: dict[str, Any]) -> None:
        with open(self.csv, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, METRIC_FIELDS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = self.read()

        def series(key: str) -> tuple[list[int], list[float]]:
            pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]
            return [p[0] for p in pts], [p[1] for p in pts]

        fig, ax = plt.subplots(1, 3, figsize=(15, 4))
        for key, label in (("train_loss", "train"), ("val_synth_loss", "val synth"), ("val_dir_loss", "val dir"),
                           ("train_distill", "train distill (KL)")):
            xs, ys = series(key)
            if xs:
                ax[0].plot(xs, ys, label=label)
        ax[0].set_yscale("log")
        ax[0].set_title("loss (CTC; KL to the teacher)" if series("train_distill")[0] else "CTC loss")
        for key, label in (("val_synth_acc", "val synth"), ("val_dir_acc", "val dir")):
            xs, ys = series(key)
            if xs:
                ax[1].plot(xs, ys, marker=".", label=label)
        ax[1].set_ylim(0, 1)
        ax[1].set_title("whole-plate accuracy")
        xs, ys = series("lr")
        ax[2].plot(xs, ys)
        ax[2].set_title("learning rate")
        for a in ax:
            a.set_xlabel("step")
            a.grid(alpha=0.3)
            if a.get_legend_handles_labels()[0]:
                a.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        atomic_write_bytes(self.png, buf.getvalue())


@dataclass
class TrainResult:
    out: Path
    step: int
    final_weights: Path | None
    best_weights: Path | None
    best_metric: float | None
    metrics: dict[str, float]
    state_dict: dict[str, Tensor]


# --------------------------------------------------------------------------- data


def build_train_data(cfg: TrainConfig, charset: Charset, progress: bool = False
                     ) -> tuple[D.MixedDataset, list[int], list[float], list[str]]:
    specs = cfg.sources()
    if not specs:
        raise TrainError("no training data: pass --data synth:DIR (and/or real:DIR, ccpd:DIR)")
    sources: list[Dataset[D.Item]] = []
    descs = []
    for spec in specs:
        ds = D.build_source(spec, charset, cfg.input_size, cfg.ccpd_margin, cfg.shard_mode, cfg.ccpd_jitter)
        if isinstance(ds, D.RealDataset):
            ds.preload(max(1, cfg.workers), progress=progress)
        if len(ds) == 0:  # type: ignore[arg-type]
            raise TrainError(f"{spec}: no usable samples")
        sources.append(ds)
        descs.append(f"{spec} -> {D.describe(ds)}")
    augment = [cfg.augment_synth if s.kind == "synth" else cfg.augment_real for s in specs]
    mixed = D.MixedDataset(sources, augment, seed=cfg.seed)
    return mixed, [len(s) for s in sources], [s.ratio for s in specs], descs  # type: ignore[arg-type]


def build_val_data(cfg: TrainConfig, charset: Charset, out: Path, main: bool,
                   log: Callable[[str], None] | None = None) -> dict[str, Dataset[D.Item]]:
    """``{"synth": ..., "dir": ...}`` validation sets that exist for this run; notes go to ``log`` (the run's
    console and train.log), by default to stderr."""
    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr)
    vals: dict[str, Dataset[D.Item]] = {}
    if cfg.val_synth and main:
        vals["synth"] = D.ShardDataset(cfg.val_synth, charset=charset)
    elif cfg.val_synth_n > 0 and main:
        cache = out / "val_synth.npz"
        made_for = f"{cfg.val_synth_n} {cfg.input_size[0]}x{cfg.input_size[1]} {''.join(charset.chars)}"
        if cache.exists():  # reused only when made for these settings (a resume may change val_synth_n)
            with np.load(cache, allow_pickle=False) as z:
                if "made_for" in z.files and str(z["made_for"]) == made_for:
                    vals["synth"] = D.ArrayDataset(z["images"], z["labels"].tolist())
        if "synth" not in vals:
            try:
                from lprnet.data import synth
            except ImportError:
                synth = None  # type: ignore[assignment]
            if synth is not None:
                items = list(synth.generate(cfg.val_synth_n, VAL_SEED, out_size=cfg.input_size, province_smudge=0.0))
                imgs = np.stack([it[0] for it in items])
                labels = [it[1] for it in items]
                keep = [i for i, s in enumerate(labels) if not charset.invalid_chars(s)]
                buf = io.BytesIO()
                np.savez(buf, images=imgs[keep], labels=np.array([labels[i] for i in keep], dtype=str),
                         made_for=np.array(made_for))
                atomic_write_bytes(cache, buf.getvalue())
                vals["synth"] = D.ArrayDataset(imgs[keep], [labels[i] for i in keep])
    if "synth" in vals and len(vals["synth"]) == 0:  # type: ignore[arg-type]
        # our synthetic plates are Chinese: a charset without their characters keeps none, and an accuracy over
        # none would read 0.0 and choose best.safetensors by it
        del vals["synth"]
        log("note: no synthetic validation plate fits this charset; validate on your own crops (--val-dir)")
    if cfg.val_dir and main:
        path, kind = real.split_kind_prefix(cfg.val_dir)
        samples, problems = real.scan_source(path, kind)
        if problems:  # malformed manifest rows, CCPD names, broken links: left out of the accuracy, said so
            log(f"note: --val-dir {cfg.val_dir}: {len(problems)} entries left out, e.g. {problems[0]} "
                f"(see `lprnet check-data {path}`)")
        if not samples:  # an accuracy over no plates would read 0.0 and choose best.safetensors by it
            raise TrainError(f"--val-dir {cfg.val_dir}: no labelled plates found there")
        samples, note = D.first_of_each_plate(samples, path)  # scored as `lprnet eval` scores them
        if note:
            log(f"note: --val-dir {note}")
        ds = D.RealDataset(samples, cfg.input_size, charset, cfg.ccpd_margin, scene_jitter=False)
        ds.preload(max(1, cfg.workers), progress=bool(cfg.progress))
        if len(ds) == 0:  # every plate dropped: no plate label for this charset and input size, or no image
            raise TrainError(f"--val-dir {cfg.val_dir}: none of its {len(samples)} labelled plates can be read "
                             "with this charset and input size (see `lprnet check-data`)")
        vals["dir"] = ds
    if cfg.select_on == "val-dir" and cfg.val_dir and "plates-cn-1k" in str(cfg.val_dir):
        log("warning: selecting checkpoints on plates-cn-1k makes it a tuning set; it is meant for evaluation only")
    return vals


# --------------------------------------------------------------------------- the loop


def _resolve_out(cfg: TrainConfig, env: Dist) -> Path:
    if cfg.resume and not cfg.out:
        raise TrainError("--resume needs --out DIR (the run folder to continue)")
    out = cfg.out_dir()
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: a file is there; the run folder must be a directory")
    if env.ddp and not cfg.out:
        # every rank must agree on the folder: take rank 0's
        obj = [str(out)]
        dist.broadcast_object_list(obj, src=0)
        out = Path(obj[0])
    return out


def resolve_model(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its layout named: an unset ``model`` is the layout of the run ``--resume`` continues (its
    checkpoint's), else of ``--init-weights`` (so that fine-tuning the bundled wide weights trains the wide
    layout), else ``lprnet``."""
    if cfg.model is not None:
        return cfg
    name = "lprnet"
    last = cfg.out_dir() / "checkpoints" / "last.pt" if cfg.resume and cfg.out else None
    if last is not None and last.exists():  # --init-weights is ignored when resuming: the run's own layout
        name = load_checkpoint(last).get("config", {}).get("model") or "lprnet"
    elif cfg.init_weights:
        from lprnet.weights import WeightsError, default_weights_path, read_weights

        path = str(default_weights_path()) if cfg.init_weights == "default" else cfg.init_weights
        try:
            name = read_weights(path, cfg.get_charset())[1].config.variant
        except WeightsError as e:
            raise TrainError(f"--init-weights: {e}") from None
    return cfg.model_copy(update={"model": name})


def train(cfg: TrainConfig, command: str | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; returns where things were written.

    ``on_step(step)`` is called after each completed step (tests use it to simulate a kill).
    """
    cfg = resolve_model(cfg)
    env = setup_distributed(cfg.device, cfg.ddp_timeout_s)
    try:
        return _train(cfg, env, command, on_step)
    finally:
        if env.ddp and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, env: Dist, command: str | None,
           on_step: Callable[[int], None] | None) -> TrainResult:
    t_start = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = env.device
    out = _resolve_out(cfg, env)
    ckpt_path = out / "checkpoints" / "last.pt"

    def log(msg: str) -> None:
        if env.main:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)
            with open(out / "train.log", "a", encoding="utf-8", errors="backslashreplace") as f:  # a non-UTF-8 name
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")

    ckpt: dict[str, Any] | None = None
    if ckpt_path.exists():
        if not cfg.resume:
            raise TrainError(f"{out} already holds a run (checkpoints/last.pt); pass --resume to continue "
                             "it or choose another --out")
        ckpt = load_checkpoint(ckpt_path)
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
    if env.ddp:
        dist.barrier()
    log(f"run folder {out}" + (f", resuming at step {ckpt['step']}" if ckpt else
                                (" (--resume: no checkpoint yet, starting fresh)" if cfg.resume else "")))
    if ckpt is not None:
        old_model = ckpt.get("config", {}).get("model") or "lprnet"
        if old_model != cfg.model:  # another layout: the checkpoint's tensors do not fit
            raise TrainError(f"--resume: the run in {out} trains {old_model}, not {cfg.model}; pass "
                             f"--set model={old_model} (or start a new run with --init-weights)")
        _warn_config_changes(ckpt.get("config", {}), cfg, log)

    # ---- seeds, model, optimiser
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    charset = cfg.get_charset()
    mcfg = cfg.model_cfg()
    fmt = memory_format(cfg.channels_last)
    raw_model = LPRNet.from_config(mcfg).to(device, memory_format=fmt)
    use_amp = device.type == "cuda" and cfg.amp != "off"
    amp_dtype = None
    if use_amp:
        bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
        amp_dtype = torch.bfloat16 if bf16 else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    optimizer = make_optimizer(raw_model, cfg, fused=device.type == "cuda")
    # the schedule's end: cfg.steps, or planned from the measured step time under a time budget
    plan: dict[str, Any] = {"steps": cfg.steps, "measured": False}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, plan["steps"], cfg.min_lr_ratio))
    ctc = make_ctc(charset)
    ema = make_ema(raw_model, cfg.ema_decay)

    step, best, train_time = 0, None, 0.0
    if ckpt is not None:
        try:
            raw_model.load_state_dict(ckpt["model"])
        except RuntimeError as e:  # another charset: the classifier's shapes differ
            was = ckpt.get("config", {})
            now = cfg.model_dump(mode="json")
            changed = [f"{k}: {was[k]!r} -> {now[k]!r}" for k in ("charset", "input_size")
                       if k in was and was[k] != now[k]]
            raise TrainError(f"--resume: the checkpoint {ckpt_path} does not fit this model"
                             + (f" ({'; '.join(changed)}): resume with the run's settings" if changed else "")
                             + f" ({first_line(e)})") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        step, best, train_time = int(ckpt["step"]), ckpt.get("best_metric"), float(ckpt.get("train_time_s", 0.0))
        if cfg.time_budget_s is not None and ckpt.get("planned_steps") is not None:
            plan.update(steps=min(cfg.steps, max(step, int(ckpt["planned_steps"]))), measured=True)
        apply_hyperparams(optimizer, scheduler, cfg)
        if ema is not None:
            if ckpt.get("ema") is not None:
                ema.load_state_dict(ckpt["ema"])
            else:
                log("warning: the checkpoint has no weight average; --ema-decay starts one from its weights")
        if step >= plan["steps"] and (out / "final.safetensors").exists():  # nothing left: leave its weights
            log(f"the run is complete: its schedule ended at step {plan['steps']} and it is at step {step}; "
                "nothing to train (a larger --steps, without --time-budget, continues it)")
            now_weights = ema.module if ema is not None and int(ema.n_averaged) > 0 else raw_model
            final_path, best_file = out / "final.safetensors", out / "best.safetensors"
            return TrainResult(out, step, final_path if final_path.exists() else None,
                               best_file if best_file.exists() and best is not None else None, best, {},
                               {k: v.detach().cpu() for k, v in now_weights.state_dict().items()})
    elif cfg.init_weights:
        init, widened = load_weights_into(raw_model, cfg.init_weights, charset, "--init-weights")
        log(f"initialised from {init}" + (" (the bundled default weights)" if init != cfg.init_weights else "")
            + (f", {widened} weights widened to {mcfg.variant}" if widened else ""))
    teacher: nn.Module | None = None
    if cfg.teacher:
        teacher, tpath = load_teacher(cfg.teacher, charset, mcfg)
        teacher = teacher.to(device, memory_format=fmt).eval()
        log(f"teacher {tpath}: distill weight {cfg.distill_weight}, temperature {cfg.distill_temperature}, "
            f"on {'the samples it reads right' if cfg.distill_on == 'correct' else 'every sample'}")
    model: nn.Module = raw_model
    if env.ddp:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        if device.type == "cpu" and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
            raise TrainError("--compile on CPU needs a C++ compiler (e.g. apt-get install g++), none on PATH")
        model = torch.compile(model, dynamic=False)  # only the training step; evaluation runs eagerly
        log("torch.compile: on (the first steps compile)")

    # ---- data
    with _warnings_to(log):  # samples dropped, entries skipped: in train.log too, not only on stderr
        mixed, sizes, ratios, descs = build_train_data(cfg, charset, progress=env.main and cfg.progress)
    for d in descs:
        log(f"data: {d}")
    per_step = cfg.batch_size * env.world_size
    # the stream position: the checkpoint's (it may have been written by another number of ranks)
    pos0 = int((ckpt or {}).get("sampler", {}).get("position", step * per_step))
    step0 = step

    def samples_at(s: int) -> int:
        return pos0 + (s - step0) * per_step

    if cfg.workers > 0:
        # OpenCV's thread pool does not survive fork(): once it has run in this process, forked
        # DataLoader workers calling cv2 deadlock. One thread here keeps the workers safe.
        import cv2

        cv2.setNumThreads(1)
    sampler = D.MixSampler(sizes, ratios, cfg.seed, env.rank, env.world_size, start=samples_at(step),
                           block=cfg.batch_size)
    if ckpt is not None and ckpt.get("sampler", {}).get("sizes") not in (None, sizes):
        log(f"warning: source sizes changed since the checkpoint ({ckpt['sampler']['sizes']} -> {sizes}); "
            "the data stream will differ from an uninterrupted run")
    loader = DataLoader(mixed, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=D.Collate(charset, cfg.input_size), pin_memory=device.type == "cuda",
                        drop_last=True, persistent_workers=cfg.workers > 0, worker_init_fn=D.worker_init,
                        prefetch_factor=4 if cfg.workers > 0 else None,
                        generator=torch.Generator().manual_seed(cfg.seed))
    failed: BaseException | None = None
    try:
        with _warnings_to(log):
            vals = build_val_data(cfg, charset, out, env.main, log)  # rank 0 reads --val-dir
    except (TrainError, ValueError, OSError) as e:
        failed = e
    if env.ddp:  # a bad --val-dir stops every rank with rank 0's message, not the others in DDP's next collective
        said = [f"{failed}" if failed is not None else None]
        dist.broadcast_object_list(said, src=0)
        if failed is None and said[0] is not None:
            raise TrainError(f"rank 0: {said[0]}")
    if failed is not None:
        raise failed
    val_loaders = {k: DataLoader(v, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=0,
                                 collate_fn=D.Collate(charset, cfg.input_size),
                                 generator=torch.Generator().manual_seed(0))
                   for k, v in vals.items()}
    for k, v in vals.items():
        log(f"validation {k}: {len(v)} plates")  # type: ignore[arg-type]
    _warn_validation_is_training_data(cfg, log)
    select_key = "synth" if cfg.select_on == "synth" else "dir"
    select_set = _selection_set(cfg, select_key, vals)
    if ckpt is not None and best is not None:
        was = ckpt.get("best_on") or ("synth" if ckpt.get("config", {}).get("select_on", "synth") == "synth" else "dir")
        if was != select_key:  # a best accuracy on one set says nothing about another
            log(f"note: best.safetensors was chosen on val_{was}_acc; selection is now on val_{select_key}_acc, "
                "so the next evaluation starts a new best")
            best = None
        elif select_set is not None and ckpt.get("best_set") not in (None, select_set):  # same kind, other plates
            log(f"note: best.safetensors was chosen on {ckpt['best_set']}; selection is now on {select_set}, "
                "so the next evaluation starts a new best")
            best = None
    if env.main and select_key not in vals:
        log(f"note: no {'synthetic validation set' if select_key == 'synth' else '--val-dir'}; "
            "best.safetensors will not be written, only final.safetensors")

    metrics = MetricsLog(out, step if ckpt is not None else None) if env.main else None
    if env.main:
        atomic_write_bytes(out / "config.json", json.dumps(cfg.model_dump(), indent=2, ensure_ascii=False).encode())
    if ckpt is not None:  # RNG last: everything above may have drawn numbers
        states = ckpt["rng"]
        if len(states) != env.world_size:
            log(f"warning: the checkpoint was written by {len(states)} rank(s), this run has {env.world_size}: "
                f"the data stream continues at sample {pos0}, but the random states are reseeded and a step's "
                "batch is now another size, so the run will not match an uninterrupted one")
            torch.manual_seed(cfg.seed + env.rank + step)
        else:
            set_rng_state(states[env.rank])
    elif env.rank:
        torch.manual_seed(cfg.seed + env.rank)  # different dropout masks per rank

    provenance_base = {
        "trainer": "lprnet.train", "command": command or " ".join(sys.argv),
        "git_commit": git_commit(), "data": descs, "world_size": env.world_size,
        "device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "seed": cfg.seed, "batch_size": cfg.batch_size, "torch": torch.__version__,
        "config": cfg.model_dump(mode="json"),
    }

    def published() -> nn.Module:
        """The weights that are evaluated and exported: the moving average when there is one."""
        return ema.module if ema is not None and int(ema.n_averaged) > 0 else raw_model

    def export(name: str, extra: dict[str, Any]) -> Path:
        bad = nonfinite_tensors(published().state_dict())
        if bad:  # the loop stops before this; a last guard against publishing NaN weights
            raise TrainError(f"{out / name}: not written, the weights hold non-finite values ({', '.join(bad[:3])})")
        prov = dict(provenance_base, steps=step, samples=samples_at(step),
                    train_time_s=round(train_time, 1), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra)
        if ema is not None:
            prov["ema_decay"] = cfg.ema_decay
        return save_weights(out / name, published().state_dict(), WeightsMeta(config=mcfg, provenance=prov))

    def run_eval() -> dict[str, float]:
        res: dict[str, float] = {}
        for k, ld in val_loaders.items():
            r = evaluate(published(), ld, charset, device, ctc, fmt)
            res[f"val_{k}_acc"], res[f"val_{k}_loss"] = r["acc"], r["loss"]
        raw_model.train()
        return res

    # ---- loop
    from tqdm import tqdm

    bar = tqdm(total=plan["steps"], initial=step, disable=not (env.main and cfg.progress), dynamic_ncols=True,
               unit="step", file=sys.stderr)
    it = iter(loader)
    last: dict[str, float] = {}
    best_path = out / "best.safetensors" if (out / "best.safetensors").exists() and best is not None else None
    # the steps since the last metrics row: checkpointed, so a resumed run logs the rows of an uninterrupted one
    win_loss, win_n, win_t, win_kd = 0.0, 0, 0.0, 0.0
    if ckpt is not None and ckpt.get("window"):  # older checkpoints lack it: the window starts empty
        w = ckpt["window"]
        win_loss, win_n, win_t, win_kd = float(w["loss"]), int(w["n"]), float(w["time_s"]), float(w["distill"])
    last_ckpt = step if ckpt is not None else None

    def stop(what: str) -> TrainError:
        """The error that ends a run gone non-finite at ``step`` (logged too): nothing of it is saved."""
        kept = (f"the last checkpoint ({ckpt_path}, step {last_ckpt}) is kept: lower --lr and continue with --resume"
                if last_ckpt is not None else "no checkpoint was written yet: start again with a lower --lr")
        msg = f"step {step}: {what}; training stopped without saving this state, {kept}"
        log(f"error: {msg}")
        return TrainError(msg, logged=env.main)

    model.train()
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype else nullcontext
    plan_from = (step + 20, train_time)  # re-planning measures the steps after the first 20 (start-up, caches)
    warned_warmup = False
    try:
        while step < plan["steps"]:
            t0 = time.perf_counter()
            x, targets, lengths, texts = next(it)
            x = x.to(device, non_blocking=True, memory_format=fmt)
            model.train()
            with autocast():
                logits = model(x)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
            loss = ctc_loss(logits, targets, lengths, ctc)
            total, kd = loss, None
            if teacher is not None:
                mask = teacher_mask(t_logits, texts, charset, cfg.distill_on)
                if bool(mask.any()):  # a batch with no such sample trains exactly as without a teacher
                    kd = distill_loss(logits, t_logits, mask, cfg.distill_temperature)
                    total = loss + cfg.distill_weight * kd
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            grad_norm = None
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(raw_model)
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            # read after the step (no extra sync); a bad step stops the run before anything is written
            loss_v = float(loss.detach())
            kd_v = float(kd.detach()) if kd is not None else 0.0
            trouble = None
            if not math.isfinite(loss_v):  # zero_infinity zeroes impossible alignments: this is divergence
                trouble = f"the training loss (mean CTC loss of the batch) is {loss_v}"
            elif not math.isfinite(kd_v):
                trouble = f"the distillation term is {kd_v}"
            elif grad_norm is not None and not scaler.is_enabled() and not math.isfinite(float(grad_norm)):
                # (a GradScaler skips steps with inf/nan gradients and lowers its scale: expected under fp16)
                trouble = f"the gradient norm is {float(grad_norm)}"
            if any_rank(trouble is not None, env, device):
                raise stop(trouble or "another rank's loss or gradients are not finite")
            win_loss += loss_v
            win_kd += kd_v
            win_n += 1
            dt = time.perf_counter() - t0
            train_time += dt
            win_t += dt
            bar.update(1)

            if cfg.time_budget_s is not None:
                if step == plan_from[0]:
                    plan_from = (step, train_time)
                elif step > plan_from[0] and (step - plan_from[0]) % REPLAN_EVERY == 0:
                    per = (train_time - plan_from[1]) / (step - plan_from[0])
                    left = int(max(0.0, cfg.time_budget_s - train_time) / max(per, 1e-9) + 1e-6)  # 8.99999 is 9
                    plan.update(steps=sync_plan(min(cfg.steps, step + left), env, device), measured=True)
                    bar.total = plan["steps"]
                    if plan["steps"] < cfg.warmup_steps and not warned_warmup:
                        log(f"warning: --time-budget leaves about {plan['steps']} steps, fewer than --warmup-steps "
                            f"{cfg.warmup_steps}: the learning rate never reaches --lr (lower --warmup-steps)")
                        warned_warmup = True
            if step % cfg.log_every == 0 or step == plan["steps"]:
                row = {"step": step, "samples": samples_at(step), "time_s": round(train_time, 2), "lr": lr,
                       "train_loss": win_loss / win_n, "plates_per_s": win_n * per_step / max(win_t, 1e-9)}
                if teacher is not None:
                    row["train_distill"] = win_kd / win_n
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", lr=f"{lr:.2e}",
                                plates_s=f"{row['plates_per_s']:.0f}")
                if metrics:
                    metrics.append(row)
                win_loss, win_n, win_t, win_kd = 0.0, 0, 0.0, 0.0

            if step % cfg.eval_every == 0 or step % cfg.ckpt_every == 0 or step == plan["steps"]:
                # before anything is evaluated, exported or checkpointed: never save non-finite weights
                bad = nonfinite_tensors(raw_model.state_dict())
                if ema is not None:
                    bad += [f"average {k}" for k in nonfinite_tensors(ema.state_dict())]
                if any_rank(bool(bad), env, device):
                    raise stop(f"the weights hold non-finite values ({', '.join(bad[:3]) or 'on another rank'})")

            if env.main and val_loaders and (step % cfg.eval_every == 0 or step == plan["steps"]):
                last = run_eval()
                if metrics:
                    metrics.append({"step": step, "samples": samples_at(step), "time_s": round(train_time, 2),
                                    **last})
                    metrics.plot()
                msg = ", ".join(f"{k} {v:.4f}" for k, v in last.items())
                score = last.get(f"val_{select_key}_acc")
                if score is not None and (best is None or score > best):
                    best = score
                    best_path = export("best.safetensors", {"selected_on": f"val_{select_key}_acc", **last})
                    msg += " (best)"
                log(f"step {step}: {msg}")

            if step % cfg.ckpt_every == 0 or step == plan["steps"]:
                states = [rng_state()]
                if env.ddp:
                    gathered: list[Any] = [None] * env.world_size
                    dist.all_gather_object(gathered, states[0])
                    states = gathered
                if env.main:
                    save_checkpoint(ckpt_path, {
                        "version": CKPT_VERSION, "step": step, "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(), "rng": states,
                        "sampler": {"position": samples_at(step), "sizes": sizes, "ratios": ratios,
                                    "seed": cfg.seed},
                        "best_metric": best, "best_on": select_key, "train_time_s": train_time,
                        "best_set": select_set or (ckpt or {}).get("best_set"),  # none this time: the run's
                        "planned_steps": plan["steps"] if plan["measured"] else None,
                        "ema": ema.state_dict() if ema is not None else None,
                        "window": {"loss": win_loss, "n": win_n, "time_s": win_t, "distill": win_kd},
                        "config": cfg.model_dump(mode="json")})
                last_ckpt = step
            if on_step is not None:
                on_step(step)
    finally:
        bar.close()
        del it  # stop workers

    if env.ddp:  # parameters agree already; BatchNorm statistics follow rank 0 (what it exports)
        for b in raw_model.buffers():
            dist.broadcast(b, src=0)
    final = None
    if env.main:
        if metrics:
            metrics.plot()
        final = export("final.safetensors", last)
        log(f"done: {step} steps, {samples_at(step)} samples in {train_time:.0f}s of training "
            f"({time.time() - t_start:.0f}s wall); weights {final}"
            + (f", best {best_path} ({best:.4f})" if best_path and best is not None else ""))
    if env.ddp:
        dist.barrier()
    sd = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in published().state_dict().items()}
    return TrainResult(out, step, final, best_path, best, last, sd)


@contextmanager
def _warnings_to(log: Callable[[str], None]) -> Iterator[None]:
    """Python warnings raised inside go to ``log`` (the console and train.log), each text once; the filters
    stay as they are (a library's DeprecationWarning is as hidden as before)."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for text in dict.fromkeys(str(w.message) for w in caught):
                log(f"warning: {text}")


_RESUME_NEUTRAL = {"resume", "init_weights", "progress", "workers", "threads", "out", "eval_every", "log_every",
                   "ckpt_every", "eval_batch_size", "val_dir", "val_synth", "val_synth_n", "channels_last",
                   "ddp_timeout_s"}


def _selection_set(cfg: TrainConfig, key: str, vals: dict[str, Dataset[D.Item]]) -> str | None:
    """What best.safetensors is chosen on, told apart across a resume: the set's source and its size."""
    if key not in vals:
        return None
    if key == "dir":
        path, kind = real.split_kind_prefix(str(cfg.val_dir))
        where = f"--val-dir {(kind + ':') if kind else ''}{Path(path).resolve()}"
    else:
        where = f"--val-synth {Path(cfg.val_synth).resolve()}" if cfg.val_synth else "generated synthetic plates"
    return f"{where} ({len(vals[key])} plates)"  # type: ignore[arg-type]


def _warn_validation_is_training_data(cfg: TrainConfig, log: Callable[[str], None]) -> None:
    """Say so when a validation set is one of the training sources: its accuracy then says nothing about plates the
    run has not seen, and best.safetensors chosen by it is the most overfitted checkpoint."""
    trained = {os.path.realpath(spec.path) for spec in cfg.sources()}
    for option, path in (("--val-dir", real.split_kind_prefix(cfg.val_dir)[0] if cfg.val_dir else None),
                         ("--val-synth", cfg.val_synth)):
        if path and os.path.realpath(path) in trained:
            log(f"warning: {option} {path} is also a --data source: the run is validated on plates it trains on")


def _warn_config_changes(old: dict[str, Any], cfg: TrainConfig, log: Callable[[str], None]) -> None:
    new = cfg.model_dump(mode="json")
    changed = sorted(k for k in new if k not in _RESUME_NEUTRAL and k in old and old[k] != new[k])
    if changed:
        log("warning: resuming with changed settings " + ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
            + "; the run will not match an uninterrupted one")


# --------------------------------------------------------------------------- benchmark


def benchmark(batch_size: int = 64, steps: int = 20, warmup: int = 3, threads: int | None = None,
              device: str = "cpu", channels_last: bool = True, compile: bool = False) -> dict[str, float]:
    """Training-step throughput (forward + CTC + backward + AdamW) on random plates, in the
    trainer's memory layout (``channels_last``) or NCHW, eager or ``torch.compile``-d (the
    warm-up steps then include compiling)."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    charset = Charset.chinese()
    torch.manual_seed(0)
    fmt = memory_format(channels_last)
    model = LPRNet(charset.num_classes).to(dev, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step_model: nn.Module = torch.compile(model, dynamic=False) if compile else model
    ctc = make_ctc(charset)
    x = torch.randn(batch_size, 3, 24, 94, device=dev).contiguous(memory_format=fmt)
    targets = torch.randint(0, charset.blank_index, (batch_size * 7,))
    lengths = torch.full((batch_size,), 7, dtype=torch.long)
    for i in range(warmup + steps):
        if i == warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        loss = ctc_loss(step_model(x), targets, lengths, ctc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"plates_per_s": batch_size * steps / dt, "ms_per_step": 1000 * dt / steps,
            "threads": torch.get_num_threads(), "batch_size": batch_size, "channels_last": channels_last,
            "compile": compile}

