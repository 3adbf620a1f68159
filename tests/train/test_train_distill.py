"""Learning without forgetting: the distillation term, its sample mask, and what a teacher does to a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lprnet.charset import Charset
from lprnet.data.dataset import Collate
from lprnet.model import widen_state_dict
from lprnet.train import ConfigError, TrainError, make_config, train
from lprnet.train.trainer import distill_loss, teacher_mask
from lprnet.weights import build_model
from train.test_train_loop import PLATES, cfg_for, make_shard, read_metrics


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_shard(tmp_path / "synth" / "shard-00000.npz", PLATES, seed=0)
    make_shard(tmp_path / "val" / "shard-00000.npz", PLATES[:4], seed=9)
    return tmp_path


def test_distill_loss_is_the_masked_mean_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 68, 18, generator=g), torch.randn(3, 68, 18, generator=g)
    mask = torch.tensor([1.0, 0.0, 1.0])
    for temp in (1.0, 2.0):
        p_t = torch.softmax(t / temp, dim=1)
        kl = (p_t * (torch.log_softmax(t / temp, dim=1) - torch.log_softmax(s / temp, dim=1))).sum(1).mean(1)
        want = (kl[0] + kl[2]) / 3 * temp**2  # divided by the whole batch, scaled by T^2
        assert float(distill_loss(s, t, mask, temp)) == pytest.approx(float(want), rel=1e-5)
        # the same as PyTorch's own KL divergence (batchmean over every sample x step, all samples on)
        ref = torch.nn.functional.kl_div(torch.log_softmax(s / temp, 1).transpose(1, 2).reshape(-1, 68),
                                         torch.log_softmax(t / temp, 1).transpose(1, 2).reshape(-1, 68),
                                         reduction="batchmean", log_target=True) * temp**2
        assert float(distill_loss(s, t, torch.ones(3), temp)) == pytest.approx(float(ref), rel=1e-5)
    assert float(distill_loss(t, t, torch.ones(3))) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(s, t, torch.zeros(3))) == 0.0
    # the gradient reaches the student only
    s.requires_grad_(True)
    t.requires_grad_(True)
    distill_loss(s, t, mask).backward()
    assert s.grad is not None and t.grad is None
    assert float(s.grad[1].abs().max()) == 0.0 and float(s.grad[0].abs().max()) > 0.0


def logits_reading(texts: list[str], charset: Charset, steps: int = 18) -> torch.Tensor:
    """``N x C x T`` logits whose greedy CTC reading is each text (a character, then a blank)."""
    out = torch.zeros(len(texts), charset.num_classes, steps)
    out[:, charset.blank_index, :] = 5.0
    for i, text in enumerate(texts):
        for j, code in enumerate(charset.encode(text)):
            out[i, code, 2 * j] = 10.0
    return out


def test_teacher_mask_keeps_the_samples_the_teacher_reads_right() -> None:
    cs = Charset.chinese()
    tl = logits_reading(["皖A12345", "京B88888", "沪C21F13"], cs)
    labels = ["皖A12345", "京B88889", "沪C21F13"]
    assert teacher_mask(tl, labels, cs, "correct").tolist() == [1.0, 0.0, 1.0]
    assert teacher_mask(tl, labels, cs, "all").tolist() == [1.0, 1.0, 1.0]


def test_distill_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="distill_weight"):
        make_config(data=["synth:/x"], teacher="default", distill_weight=-1)
    with pytest.raises(ConfigError, match="distill_temperature"):
        make_config(data=["synth:/x"], teacher="default", distill_temperature=0)
    with pytest.raises(ConfigError, match="distill_on"):
        make_config(data=["synth:/x"], teacher="default", distill_on="some")


def test_teacher_errors_name_the_file(data: Path) -> None:
    bad = data / "not-a-teacher.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(TrainError, match="--teacher.*not-a-teacher.safetensors"):
        train(cfg_for(data, steps=1, teacher=str(bad)))


def kl_to(teacher: Path, student: Path, images: Path) -> float:
    """Mean per-step KL(teacher || student) of two weights files on a shard's images (eval mode)."""
    z = np.load(images)
    x, *_ = Collate(Charset.chinese())(list(zip(z["images"], z["labels"])))
    t_model, _ = build_model(teacher)
    s_model, _ = build_model(student)
    with torch.no_grad():
        return float(distill_loss(s_model(x), t_model(x), torch.ones(len(x))))


def test_a_teacher_pulls_the_student_towards_it_and_only_where_asked(data: Path) -> None:
    # the teacher: other weights (another seed, a few steps); it reads none of these random-noise plates
    teacher = train(cfg_for(data, steps=2, seed=8, out=str(data / "teacher"))).out / "final.safetensors"
    common = dict(steps=6, eval_every=100, ckpt_every=100, log_every=1, dropout=0.0)
    plain = train(cfg_for(data, out=str(data / "plain"), **common))
    # distilled on the samples it reads right: none, so the run is the plain run bit for bit
    masked = train(cfg_for(data, out=str(data / "masked"), teacher=str(teacher), distill_weight=10.0, **common))
    for k, v in plain.state_dict.items():
        assert torch.equal(v, masked.state_dict[k]), k
    rows = [r for r in read_metrics(masked.out) if r["train_loss"]]
    assert len(rows) == 6 and all(float(r["train_distill"]) == 0.0 for r in rows)
    log = (masked.out / "train.log").read_text(encoding="utf-8")
    assert "teacher" in log and "the samples it reads right" in log
    # distilled on every sample: the student ends closer to the teacher than the plain run does
    pulled = train(cfg_for(data, out=str(data / "all"), teacher=str(teacher), distill_weight=10.0,
                           distill_on="all", **common))
    kd = [float(r["train_distill"]) for r in read_metrics(pulled.out) if r["train_loss"]]
    assert kd[0] > 0.0 and kd[-1] < kd[0]
    shard = data / "val" / "shard-00000.npz"
    k_plain = kl_to(teacher, plain.out / "final.safetensors", shard)
    k_pulled = kl_to(teacher, pulled.out / "final.safetensors", shard)
    assert k_pulled < 0.5 * k_plain, (k_pulled, k_plain)


def test_a_wide_student_starts_from_narrow_weights_and_a_narrow_teacher(data: Path) -> None:
    """``model=lprnet_wide`` with reference-layout weights as init and teacher: the init is widened without
    changing what it computes, the teacher is built in its own layout, and the file written is a wide one."""
    from lprnet.model import LPRNet
    from lprnet.weights import WeightsMeta, save_weights

    torch.manual_seed(3)
    narrow_file = save_weights(data / "narrow.safetensors", LPRNet().eval().state_dict(), WeightsMeta())
    res = train(make_config(**{**cfg_for(data).model_dump(), "steps": 1, "lr": 1e-12, "warmup_steps": 0,
                               "model": "lprnet_wide", "init_weights": str(narrow_file),
                               "teacher": str(narrow_file), "out": str(data / "wide")}))
    log = (res.out / "train.log").read_text(encoding="utf-8")
    assert "lprnet weights widened to lprnet_wide" in log and "teacher" in log
    wide, meta = build_model(res.out / "final.safetensors")
    assert meta.config.channel_strides == (1, 1) and wide.channel_strides == (1, 1)
    narrow, _ = build_model(narrow_file)
    want = widen_state_dict(narrow.state_dict(), (2, 4), (1, 1))
    for k, v in wide.state_dict().items():  # lr 1e-12: the parameters are the widened init (the BatchNorm
        if "running_" not in k and "num_batches" not in k:  # statistics moved with the step's batch)
            assert torch.allclose(v, want[k], atol=1e-6), k
    # a wide teacher cannot be narrowed into a narrow student's layout, but it is built in its own: fine
    res2 = train(make_config(**{**cfg_for(data).model_dump(), "steps": 1, "teacher": str(res.out / "final.safetensors"),
                                "out": str(data / "narrow")}))
    assert build_model(res2.out / "final.safetensors")[1].config.channel_strides == (2, 4)
    # wide weights as the init of a model set narrow are refused by name (unset, the model takes their layout)
    with pytest.raises(TrainError, match="final.safetensors: lprnet_wide weights do not fit the model"):
        train(make_config(**{**cfg_for(data).model_dump(), "steps": 1, "model": "lprnet",
                             "init_weights": str(res.out / "final.safetensors"), "out": str(data / "narrow2")}))
    with pytest.raises(ConfigError, match="model"):
        make_config(**{**cfg_for(data).model_dump(), "model": "lprnet_huge"})
