"""Training configuration: one validated schema, loadable from YAML/JSON, overridable by flags.

:func:`make_config` merges, in increasing priority, the defaults, a config file, ``sets``
(``lprnet train --set KEY=VALUE``) and explicit overrides (CLI flags that were given), then
validates everything with pydantic, so a typo or an impossible value (a negative count, a
non-finite float, ``true`` where a number belongs) fails before any data is read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from lprnet.charset import Charset
from lprnet.config import VARIANT_STRIDES, ModelConfig
from lprnet.data.dataset import SourceSpec, parse_source


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message says which field and why."""


class TrainConfig(BaseModel):
    """Everything a training run needs; see the field descriptions."""

    # allow_inf_nan=False: an inf/nan float (``--lr inf``, ``weight_decay: .nan``) is refused, naming the field
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # data
    data: list[str] = Field(default_factory=list,
                            description="KIND:PATH[:RATIO] sources (synth, real, ccpd, folder, manifest)")
    val_synth: str | None = Field(None, description="folder of synthetic validation shards")
    val_synth_n: int = Field(2000, ge=0,
                             description="plates generated for validation when val_synth is not given (0: none)")
    val_dir: str | None = Field(None, description="labelled real validation data (folder, manifest or ccpd:DIR)")
    select_on: Literal["synth", "val-dir"] = Field("synth", description="which validation set picks best.safetensors")
    augment_real: bool = True
    augment_synth: bool = False
    ccpd_margin: float = Field(0.0, ge=0.0, le=0.5)
    ccpd_jitter: bool = Field(True, description="with augment_real, re-crop CCPD scenes on every draw with jittered "
                              "corners, a random margin and sometimes the axis-aligned box (not the fixed "
                              "rectified crop)")
    shard_mode: Literal["auto", "memory", "mmap"] = "auto"
    # model
    charset: str | None = Field(None, description="characters in class order (blank '-' appended); "
                                "default: the 68-class Chinese set")
    input_size: tuple[int, int] = (94, 24)
    model: Literal["lprnet", "lprnet_wide"] | None = Field(
        None, description="lprnet: the reference layout; lprnet_wide: every channel kept by the two "
        "channel-subsampling pools (1.41x the FLOPs; the bundled weights' layout); default: the layout of "
        "--init-weights, else lprnet. Narrow --init-weights/--teacher weights are widened without changing what "
        "they compute")
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    # optimisation
    steps: int = Field(20000, gt=0)
    time_budget_s: float | None = Field(None, gt=0.0, description="train for about this many seconds of training "
                                        "time (evaluation not counted): from the 20th step the number of steps, the "
                                        "cosine schedule's end, is re-planned from the measured step time, never "
                                        "above steps")
    batch_size: int = Field(64, gt=0, description="per process")
    lr: float = Field(1e-3, gt=0.0)
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0)
    warmup_steps: int = Field(500, ge=0)
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(5.0, ge=0.0, description="max gradient norm (0: off)")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0,
                             description="keep an exponential moving average of the weights with this decay "
                             "(e.g. 0.999); evaluation, best and final weights then use the average (0: off)")
    teacher: str | None = Field(None, description="weights of a frozen teacher (path or 'default'): learning without "
                                "forgetting, the loss adds distill_weight x the KL divergence from the teacher's "
                                "per-step class distribution to the student's (e.g. fine-tuning the default on new "
                                "crops while keeping what it reads)")
    distill_weight: float = Field(1.0, ge=0.0, description="weight of the distillation term (with a teacher)")
    distill_temperature: float = Field(1.0, gt=0.0, description="softmax temperature of the distillation term; the "
                                       "term is scaled by its square (Hinton et al.)")
    distill_on: Literal["correct", "all"] = Field("correct", description="samples the teacher is distilled on: those "
                                                  "whose label its greedy reading matches, or all of them")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="CUDA only; auto = bf16 when supported")
    channels_last: bool = Field(True, description="train in the channels-last (NHWC) memory layout: the same "
                                "model to float rounding, 1.3-1.4x the plates/s of NCHW on x86 CPUs")
    compile: bool = Field(False, description="torch.compile the training step's model (Inductor; on CPU it needs "
                          "a C++ compiler); the first steps are slower while it compiles")
    # runtime
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(2, ge=0)
    threads: int | None = Field(None, gt=0, description="torch intra-op threads")
    ddp_timeout_s: float = Field(1800.0, gt=0.0, le=86400.0, description="under torchrun: seconds a rank waits "
                                 "for the others in a collective before it fails (a peer that died or hung)")
    seed: int = Field(0, ge=0, lt=2**32, description="seed of init, data order and augmentation (numpy takes "
                      "0 to 2**32 - 1)")
    out: str | None = Field(None, description="run folder (default: outside the repo, ~/.cache/lprnet/runs/<time>)")
    resume: bool = False
    init_weights: str | None = Field(None, description="start from these weights (safetensors or .pth with the "
                                     "same charset and layout; 'default': the bundled weights), e.g. to fine-tune "
                                     "on your own crops; ignored when resuming from a checkpoint")
    log_every: int = Field(50, gt=0)
    eval_every: int = Field(1000, gt=0)
    ckpt_every: int = Field(1000, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    progress: bool = True

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """``steps: true`` is not 1 step: booleans only where the field is a boolean."""
        if isinstance(v, bool) and info.field_name is not None and info.field_name not in _BOOL_FIELDS:
            raise ValueError(f"expected a number or text, got the boolean {str(v).lower()}")
        return v

    @field_validator("data")
    @classmethod
    def _check_data(cls, v: list[str]) -> list[str]:
        for s in v:
            parse_source(s)
        return v

    @field_validator("charset")
    @classmethod
    def _check_charset(cls, v: str | None) -> str | None:
        if v is not None:
            Charset.from_string(v)
        return v

    @model_validator(mode="after")
    def _check_all(self) -> TrainConfig:
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(f"warmup_steps ({self.warmup_steps}, --warmup-steps) must be below steps ({self.steps}, "
                             "--steps)")
        if self.select_on == "val-dir" and not self.val_dir:
            raise ValueError("select_on 'val-dir' needs val_dir")
        if not 0 < self.betas[0] < 1 or not 0 < self.betas[1] < 1:
            raise ValueError(f"betas must be in (0, 1), got {self.betas}")
        self.model_cfg()  # validates input_size and dropout together
        return self

    # ------------------------------------------------------------------ derived
    def sources(self) -> list[SourceSpec]:
        return [parse_source(s) for s in self.data]

    def get_charset(self) -> Charset:
        return Charset.from_string(self.charset) if self.charset else Charset.chinese()

    def model_cfg(self) -> ModelConfig:
        return ModelConfig(charset=self.get_charset(), input_size=self.input_size, dropout=self.dropout,
                           channel_strides=VARIANT_STRIDES[self.model or "lprnet"])

    def out_dir(self) -> Path:
        return Path(self.out).expanduser() if self.out else default_out_dir()


_BOOL_FIELDS = frozenset(k for k, f in TrainConfig.model_fields.items() if f.annotation is bool)


def default_out_dir() -> Path:
    """``$LPRNET_RUNS/<time>``, else ``~/.cache/lprnet/runs/<time>`` (never inside the repo)."""
    root = os.environ.get("LPRNET_RUNS") or str(Path("~/.cache/lprnet/runs").expanduser())
    return Path(root) / time.strftime("%Y%m%d-%H%M%S")


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file into a dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config ({e.strerror or e})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    except ImportError:
        raise ConfigError(f"{p}: YAML configs need PyYAML (pip install pyyaml), or use JSON") from None
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        fmt = "YAML" if p.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise ConfigError(f"{p}: not valid {fmt} ({e})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: the config must be a mapping of field: value")
    return {str(k).replace("-", "_"): v for k, v in d.items()}


def make_config(file: str | os.PathLike[str] | None = None, *, sets: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Defaults <- ``base`` <- ``file`` <- ``sets`` <- ``overrides``, validated.

    ``base`` is a run's saved settings when it is resumed (:func:`saved_run_config`).
    ``sets`` (``--set KEY=VALUE``) apply as given, ``None`` included (``--set threads=null``);
    ``None`` values of ``overrides`` (flags that were not given) are ignored.  A run of at most the default
    warm-up's steps, with no warm-up set, warms up for a tenth of its steps.
    """
    d: dict[str, Any] = dict(base or {})
    d.update(load_config_file(file) if file else {})
    d.update(sets or {})
    d.update({k: v for k, v in overrides.items() if v is not None})
    default_warmup = TrainConfig.model_fields["warmup_steps"].default
    steps = _whole(d.get("steps"))  # JSON may give 100.0 and YAML "100", which the schema accepts as 100
    if "warmup_steps" not in d and steps is not None and 1 < steps <= default_warmup:
        d["warmup_steps"] = steps // 10  # a short run nobody set a warm-up for: a tenth of it, not an error
    try:
        return TrainConfig.model_validate(d)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors()]
        raise ConfigError("invalid training config:\n" + "\n".join(lines)) from None


def _whole(v: Any) -> int | None:
    """``v`` as the whole number it spells (``100``, ``100.0``, ``"100"``), else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() and not isinstance(v, bool) else None


def saved_run_config(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings a run in ``out`` last started with (its ``config.json``), or None when it has none: ``--resume``
    continues with them unless told otherwise, not with the defaults."""
    p = Path(out) / "config.json"
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: the run's saved settings cannot be read ({e}); pass the run's options again "
                          "with --config or flags") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: the run's saved settings are not a JSON object")
    return d
