"""Model configuration: charset, input size and the derived output length, validated.

:class:`ModelConfig` is what weights files carry as metadata and what every backend,
the trainer and the recognizer read; nothing else hard-codes 94x24 or 68 classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from lprnet.charset import DEFAULT_CHARSET, Charset

#: The package version (pyproject.toml says the same; a test keeps them equal): exports record it, the export cache
#: keys on it.
VERSION = "0.1.0"
Form = Literal["deploy", "reference"]
# allowed channel strides of the two channel-subsampling pools: divisors of 128 and 256 up to the reference's
CHANNEL_STRIDES = ((1, 2), (1, 2, 4))
REFERENCE_CHANNEL_STRIDES = (2, 4)
# the named model variants and their channel strides (lprnet.model registers a constructor for each)
VARIANT_STRIDES: dict[str, tuple[int, int]] = {"lprnet": REFERENCE_CHANNEL_STRIDES, "lprnet_wide": (1, 1)}


def _pool_out(size: int, k: int, s: int, p: int = 0) -> int:
    return (size + 2 * p - k) // s + 1


def feature_sizes(width: int, height: int) -> dict[str, tuple[int, int]]:
    """(H, W) of each LPRNet stage for an input of ``width`` x ``height``.

    Returns the sizes of the four backbone taps before global-context pooling and
    after it (``ctx0``..``ctx3``), following the reference layer list exactly.
    """
    h, w = height - 2, width - 2  # conv 3x3, no padding
    tap0 = (h, w)
    h, w = h - 2, w - 2  # maxpool 3x3 stride 1
    tap1 = (h, w)  # small block keeps size
    h, w = h - 2, _pool_out(w, 3, 2)  # maxpool 3x3 stride (1, 2)
    tap2 = (h, w)
    h, w = h - 2, _pool_out(w, 3, 2)  # maxpool 3x3 stride (1, 2)
    w = w - 3  # conv (1, 4)
    h = h - 12  # conv (13, 1)
    tap3 = (h, w)
    ctx0 = (_pool_out(tap0[0], 5, 5), _pool_out(tap0[1], 5, 5))
    ctx1 = (_pool_out(tap1[0], 5, 5), _pool_out(tap1[1], 5, 5))
    ctx2 = (_pool_out(tap2[0], 4, 4), _pool_out(tap2[1], 10, 2))
    return {"tap0": tap0, "tap1": tap1, "tap2": tap2, "tap3": tap3,
            "ctx0": ctx0, "ctx1": ctx1, "ctx2": ctx2, "ctx3": tap3}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build an LPRNet and to feed it.

    ``input_size`` is (width, height) as OpenCV uses it. ``output_length`` (CTC time
    steps) is derived; construction fails with a clear message when the four
    global-context maps would not line up for the requested size.
    """

    charset: Charset = field(default_factory=lambda: DEFAULT_CHARSET)
    input_size: tuple[int, int] = (94, 24)
    dropout: float = 0.5
    batchnorm: bool = True  # False once BatchNorm has been folded into the convolutions
    # channel strides of the two channel-subsampling pools (the reference's MaxPool3d depth strides 2 and 4,
    # which keep 64 of 128 and 64 of 256 channels); (1, 1) keeps every channel: the wider `lprnet_wide`
    channel_strides: tuple[int, int] = REFERENCE_CHANNEL_STRIDES

    def __post_init__(self) -> None:
        w, h = (int(v) for v in self.input_size)
        object.__setattr__(self, "input_size", (w, h))
        cs = tuple(self.channel_strides)
        if len(cs) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in cs):
            raise ValueError(f"channel_strides must be two integers, got {self.channel_strides!r}")
        if cs[0] not in CHANNEL_STRIDES[0] or cs[1] not in CHANNEL_STRIDES[1]:
            raise ValueError(f"channel_strides must be (s1, s2) with s1 in {CHANNEL_STRIDES[0]} and s2 in "
                             f"{CHANNEL_STRIDES[1]} (they divide the 128 and 256 channels pooled), got {cs}")
        object.__setattr__(self, "channel_strides", cs)
        if w < 1 or h < 1:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        sizes = feature_sizes(w, h)
        ctx = [sizes[f"ctx{i}"] for i in range(4)]
        if min(min(s) for s in sizes.values()) < 1 or len(set(ctx)) != 1:
            raise ValueError(
                f"input_size {w}x{h} is not supported by the LPRNet layout: the global-context "
                f"maps would be {ctx} (they must all be equal and non-empty; 94x24 gives 4x18)"
            )

    @property
    def variant(self) -> str:
        """The registered name of this layout (``lprnet``, ``lprnet_wide``) or ``channel_strides=(a, b)``."""
        names = [k for k, v in VARIANT_STRIDES.items() if v == self.channel_strides]
        return names[0] if names else f"channel_strides={self.channel_strides}"

    @property
    def num_classes(self) -> int:
        return self.charset.num_classes

    @property
    def output_length(self) -> int:
        """Number of CTC time steps (18 for 94x24)."""
        return feature_sizes(*self.input_size)["tap3"][1]

    def to_json(self) -> dict[str, Any]:
        return {
            "charset": self.charset.to_json(),
            "input_size": list(self.input_size),
            "dropout": self.dropout,
            "batchnorm": self.batchnorm,
            "channel_strides": list(self.channel_strides),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | str) -> ModelConfig:
        if isinstance(d, str):
            d = json.loads(d)
        unknown = set(d) - {"charset", "input_size", "dropout", "batchnorm", "channel_strides"}
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        kw: dict[str, Any] = {}
        if "charset" in d:
            kw["charset"] = Charset.from_json(d["charset"])
        if "input_size" in d:
            kw["input_size"] = tuple(d["input_size"])
        if "dropout" in d:
            kw["dropout"] = float(d["dropout"])
        if "batchnorm" in d:
            if not isinstance(d["batchnorm"], bool):  # bool("no") is True
                raise ValueError(f"batchnorm must be true or false, got {d['batchnorm']!r}")
            kw["batchnorm"] = d["batchnorm"]
        if "channel_strides" in d:
            cs = d["channel_strides"]
            if not isinstance(cs, (list, tuple)):
                raise ValueError(f"channel_strides must be a list of two integers, got {cs!r}")
            kw["channel_strides"] = tuple(cs)
        return cls(**kw)
