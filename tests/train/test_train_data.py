"""Training data: shard dataset (memory/mmap), real dataset, mixing sampler, collate, source specs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lprnet.charset import Charset
from lprnet.core.process import preprocess
from lprnet.data import dataset as D
from lprnet.data import real

PLATES = ["皖A12345", "京AD12345", "沪C21F13", "粤B8888Z", "川JK0707", "苏E00001", "浙F9A9A9", "鲁Q12345"]


def make_shard(path: Path, labels: list[str], seed: int = 0, size: tuple[int, int] = (94, 24)) -> Path:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images, labels=np.array(labels, dtype=str),
                        kinds=np.array(["blue"] * len(labels), dtype=str))
    return path


def test_shard_dataset_memory_and_mmap(tmp_path: Path) -> None:
    make_shard(tmp_path / "s" / "shard-00000.npz", PLATES[:5], seed=1)
    make_shard(tmp_path / "s" / "shard-00001.npz", PLATES[5:], seed=2)
    mem = D.ShardDataset(tmp_path / "s", mode="memory")
    mm = D.ShardDataset(tmp_path / "s", mode="mmap", cache_dir=tmp_path / "cache")
    assert len(mem) == len(mm) == 8 and mem.mode == "memory" and mm.mode == "mmap"
    for i in range(8):
        a, b = mem[i], mm[i]
        assert a[1] == b[1] == PLATES[i]
        assert np.array_equal(a[0], b[0]) and a[0].shape == (24, 94, 3)
    assert isinstance(mm.images[0], np.memmap)
    # the cache is reused, and rebuilt when the shard changes
    again = D.ShardDataset(tmp_path / "s", mode="mmap", cache_dir=tmp_path / "cache")
    assert np.array_equal(again[7][0], mem[7][0])
    assert D.ShardDataset(tmp_path / "s").mode == "memory"  # auto: small


def test_shard_dataset_drops_unencodable_labels(tmp_path: Path) -> None:
    make_shard(tmp_path / "shard.npz", ["皖A12345", "警A1234X", "京AD12345", ""])
    with pytest.warns(UserWarning, match="dropped 2 of 4"):
        ds = D.ShardDataset(tmp_path / "shard.npz", charset=Charset.chinese())
    assert [ds[i][1] for i in range(len(ds))] == ["皖A12345", "京AD12345"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .npz shards"):
        D.ShardDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such shard"):
        D.ShardDataset(tmp_path / "missing")


def test_shard_dataset_drops_labels_too_long_for_the_ctc_steps(tmp_path: Path) -> None:
    """A label needs one step per character and a blank between equal neighbours: 皖A11111 needs 11, so a model
    with 10 steps cannot hold it (CTC's zero_infinity would train on it with a zero loss, unseen)."""
    make_shard(tmp_path / "shard.npz", ["皖A12345", "皖A11111", "皖A12121"])
    with pytest.warns(UserWarning, match="dropped 1 of 3 .* 10 CTC steps .*'皖A11111'"):
        ds = D.ShardDataset(tmp_path / "shard.npz", charset=Charset.chinese(), ctc_steps=10)
    assert [ds[i][1] for i in range(len(ds))] == ["皖A12345", "皖A12121"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(D.ShardDataset(tmp_path / "shard.npz", charset=Charset.chinese(), ctc_steps=11)) == 3
    # a training source gets the model's steps from its input size: 94 wide -> 18 steps, 81 wide -> 15
    make_shard(tmp_path / "s2" / "shard.npz", ["皖A12345", "111111111"])  # the second needs 17 steps
    spec = D.parse_source(f"synth:{tmp_path / 's2'}")
    assert len(D.build_source(spec, Charset.chinese(), (94, 24))) == 2
    with pytest.warns(UserWarning, match="15 CTC steps cannot hold"):
        assert len(D.build_source(spec, Charset.chinese(), (81, 24))) == 1


def test_real_dataset_caches_and_filters(tmp_path: Path) -> None:
    for p in ("皖A12345", "警A00000"):
        cv2.imwrite(str(tmp_path / f"x_{p}.png"), np.full((30, 120, 3), 77, np.uint8))
    samples = [real.Sample(tmp_path / f"x_{p}.png", p) for p in ("皖A12345", "警A00000")]
    with pytest.warns(UserWarning, match="dropped 1 real"):
        ds = D.RealDataset(samples, (94, 24), Charset.chinese())
    assert len(ds) == 1
    ds.preload(1)
    img, text = ds[0]
    assert img.shape == (24, 94, 3) and text == "皖A12345" and 0 in ds.cache


def test_real_dataset_scene_views(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    plate = cv2.resize(rng.integers(60, 255, (6, 22, 3), dtype=np.uint8), (220, 60), interpolation=cv2.INTER_NEAREST)
    quad = np.float32([[200, 150], [420, 175], [415, 240], [195, 212]])
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [220, 0], [220, 60], [0, 60]]), quad)
    cv2.imwrite(str(tmp_path / "scene.png"), cv2.warpPerspective(plate, m, (600, 400)))
    cv2.imwrite(str(tmp_path / "crop.png"), cv2.resize(plate, (94, 24)))
    q = tuple((float(x), float(y)) for x, y in quad)
    scene = real.Sample(tmp_path / "scene.png", "皖A12345", source="ccpd", quad=q)  # type: ignore[arg-type]
    crop = real.Sample(tmp_path / "crop.png", "京AD12345")
    ds = D.RealDataset([scene, crop], (94, 24), Charset.chinese())
    ds.preload(1)
    assert 0 in ds._regions and 1 not in ds._regions  # only scenes keep a region
    r = lambda k: np.random.default_rng([1, k])  # noqa: E731
    v1, v1b, v2 = ds.augmented(0, r(1)), ds.augmented(0, r(1)), ds.augmented(0, r(2))
    assert v1[1] == "皖A12345" and v1[0].shape == (24, 94, 3)
    assert np.array_equal(v1[0], v1b[0]) and not np.array_equal(v1[0], v2[0])
    # views come from the scene, not from augmenting the fixed rectified crop
    assert not np.array_equal(v1[0], D.augment(ds[0][0], r(1)))
    # crops, and scenes with scene_jitter off, get the plain augmentation of the cached crop
    assert np.array_equal(ds.augmented(1, r(1))[0], D.augment(ds[1][0], r(1)))
    fixed = D.RealDataset([scene], (94, 24), Charset.chinese(), scene_jitter=False)
    assert np.array_equal(fixed.augmented(0, r(1))[0], D.augment(fixed[0][0], r(1)))
    # MixedDataset draws the scene views, seeded by the stream position
    mixed = D.MixedDataset([ds], augment=[True], seed=1)
    assert np.array_equal(mixed[(5, 0, 0)][0], ds.augmented(0, np.random.default_rng([1, 0xA06, 5]))[0])
    # a scene that cannot be read names its file
    gone = real.Sample(tmp_path / "gone.png", "皖A12345", source="ccpd", quad=q)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gone.png"):
        D.RealDataset([gone], (94, 24)).augmented(0, r(1))
    with pytest.raises(ValueError, match="crop.png: not a scene"):
        real.load_plate_region(crop)


def test_mix_sampler_ratios_epochs_and_positions() -> None:
    s = D.MixSampler([10, 3], [0.8, 0.2], seed=5)
    items = [s.item(k) for k in range(1000)]
    counts = Counter(src for _, src, _ in items)
    assert counts == {0: 800, 1: 200}
    for k in range(0, 1000 - 64, 64):  # every batch of 64 has the mix to within one item
        c = Counter(src for _, src, _ in items[k:k + 64])
        assert abs(c[1] - 64 * 0.2) <= 1
    # each epoch of a source is a permutation of it
    draws0 = [i for _, src, i in items if src == 0]
    for e in range(5):
        assert sorted(draws0[10 * e:10 * e + 10]) == list(range(10))
    assert draws0[:10] != draws0[10:20]  # reshuffled per epoch
    # three sources, awkward ratios
    s3 = D.MixSampler([5, 7, 11], [1, 1, 2], seed=0)
    c3 = Counter(s3.locate(k)[0] for k in range(4000))
    assert c3 == {0: 1000, 1: 1000, 2: 2000}
    # resuming at a position continues the same stream; ranks interleave it
    it = iter(D.MixSampler([10, 3], [0.8, 0.2], seed=5, start=123))
    assert [next(it) for _ in range(50)] == items[123:173]
    # ranks split the stream in per-rank batches: together they cover it once, each batch a stretch of it
    r0 = iter(D.MixSampler([10, 3], [0.8, 0.2], seed=5, rank=0, world_size=2, block=4))
    r1 = iter(D.MixSampler([10, 3], [0.8, 0.2], seed=5, rank=1, world_size=2, block=4))
    assert [next(r0) for _ in range(8)] == items[0:4] + items[8:12]
    assert [next(r1) for _ in range(8)] == items[4:8] + items[12:16]
    with pytest.raises(ValueError):
        D.MixSampler([10, 0], [1, 1])


@pytest.mark.parametrize("ratios, world", [([0.5, 0.5], 2), ([0.75, 0.25], 4), ([1, 0.3, 0.2, 0.1], 2)])
def test_mix_sampler_gives_every_rank_the_mix(ratios: list[float], world: int) -> None:
    """Under DDP each rank's batch carries the requested mix: BatchNorm's batch statistics (and rank 0's
    running statistics, which DDP broadcasts) see every source. (Every world-th item gave rank 0 one source.)"""
    batch, steps = 16, 40
    want = [r / sum(ratios) for r in ratios]
    for rank in range(world):
        it = iter(D.MixSampler([50] * len(ratios), ratios, seed=1, rank=rank, world_size=world, block=batch,
                               start=3 * batch * world))  # resumed at a step boundary
        got = Counter(next(it)[1] for _ in range(batch * steps))
        for src, share in enumerate(want):
            assert abs(got[src] / (batch * steps) - share) <= 1 / batch, (rank, got)


def test_mixed_dataset_augmentation_is_deterministic(tmp_path: Path) -> None:
    make_shard(tmp_path / "a.npz", PLATES)
    ds = D.MixedDataset([D.ShardDataset(tmp_path / "a.npz")], augment=[True], seed=3)
    a, b, c = ds[(7, 0, 2)], ds[(7, 0, 2)], ds[(8, 0, 2)]
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert a[1] == PLATES[2] and a[0].shape == (24, 94, 3) and a[0].dtype == np.uint8
    plain = D.MixedDataset([D.ShardDataset(tmp_path / "a.npz")])
    assert np.array_equal(plain[(7, 0, 2)][0], D.ShardDataset(tmp_path / "a.npz")[2][0])


def test_collate_uses_preprocess_and_builds_ctc_targets() -> None:
    cs = Charset.chinese()
    rng = np.random.default_rng(0)
    batch = [(rng.integers(0, 256, (30, 100, 3), dtype=np.uint8), t) for t in ("皖A12345", "京AD12345")]
    x, targets, lengths, texts = D.Collate(cs, (94, 24))(batch)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 24, 94)
    assert np.array_equal(x.numpy(), preprocess([b[0] for b in batch], (94, 24)))
    assert lengths.tolist() == [7, 8] and texts == ["皖A12345", "京AD12345"]
    assert targets.tolist() == cs.encode("皖A12345") + cs.encode("京AD12345")
    assert cs.blank_index not in targets.tolist()


@pytest.mark.parametrize("spec, want", [
    ("synth:/d/shards", ("synth", "/d/shards", 1.0)),
    ("synth:/d/shards:0.8", ("synth", "/d/shards", 0.8)),
    ("real:/d/labels.csv:0.2", ("real", "/d/labels.csv", 0.2)),
    ("ccpd:/d/ccpd:3", ("ccpd", "/d/ccpd", 3.0)),
    ("real:C:/data/x", ("real", "C:/data/x", 1.0)),
])
def test_parse_source(spec: str, want: tuple[str, str, float]) -> None:
    s = D.parse_source(spec)
    assert (s.kind, s.path, s.ratio) == want


@pytest.mark.parametrize("spec", ["/d/shards", "nope:/d", "synth:", "synth:/d:-1", "synth:/d:0"])
def test_parse_source_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        D.parse_source(spec)


def test_synth_integration(tmp_path: Path) -> None:
    synth = pytest.importorskip("lprnet.data.synth")
    paths = synth.write_shards(tmp_path / "shards", 6, seed=11, shard_size=4, progress=False)
    assert len(paths) == 2
    ds = D.ShardDataset(tmp_path / "shards", charset=Charset.chinese())
    assert len(ds) == 6
    imgs, labels, _ = synth.load_shard(paths[0])
    assert np.array_equal(ds[1][0], imgs[1]) and ds[1][1] == labels[1]
    x, targets, lengths, _ = D.Collate(Charset.chinese())([ds[i] for i in range(6)])
    assert x.shape == (6, 3, 24, 94) and int(lengths.sum()) == len(targets)


def _deflate_broken(path: Path) -> None:
    """Break the deflate stream of the shard's ``images.npy`` (an invalid block type): zlib, not the CRC, fails."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = z.getinfo("images.npy")
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    raw[info.header_offset + 30 + name_len + extra_len] = 0x07  # BFINAL=1, BTYPE=11 (reserved)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("mode", ["auto", "memory", "mmap"])
@pytest.mark.parametrize("damage", ["not-a-zip", "deflate", "crc"])
def test_shard_dataset_names_a_damaged_shard(tmp_path: Path, mode: str, damage: str) -> None:
    make_shard(tmp_path / "s" / "shard-00000.npz", PLATES[:4], seed=1)
    bad = make_shard(tmp_path / "s" / "shard-00001.npz", PLATES[4:], seed=2)
    if damage == "not-a-zip":
        bad.write_bytes(b"not a shard at all" * 10)
    elif damage == "deflate":
        _deflate_broken(bad)
    else:  # one flipped byte in the middle of the compressed images: the CRC check fails
        raw = bytearray(bad.read_bytes())
        raw[len(raw) // 2] ^= 0x5A
        bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"shard-00001\.npz: not a readable shard"):
        D.ShardDataset(tmp_path / "s", mode=mode, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]


def test_build_source_warns_about_the_entries_it_skips(tmp_path: Path) -> None:
    """Malformed manifest rows are skipped for training, with a warning naming one, not silently."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((24, 94, 3), 120, np.uint8))
    man = tmp_path / "m.csv"
    man.write_text("path,plate\na.jpg,皖A12345\na.jpg\na.jpg,皖A12345,extra\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=rf"skipped 2 entries .* e\.g\. {man}:3: 1 fields"):
        ds = D.build_source(D.parse_source(f"real:{man}"), Charset.chinese(), (94, 24))
    assert len(ds) == 1 and ds[0][1] == "皖A12345"


@pytest.mark.parametrize("ratios", [[1.0, 1e-5], [1e-5, 1.0]])
def test_mix_sampler_refuses_a_ratio_too_small_to_mix(ratios: list[float]) -> None:
    """A share below the interleave's 1/10000 resolution rounded to 0: never drawn when first, a
    ZeroDivisionError when last. It is refused with the ratios named."""
    with pytest.raises(ValueError, match="below 1/10000"):
        D.MixSampler([10, 3], ratios)


def test_a_file_name_that_is_not_utf8_is_named_escaped_in_the_drop_warning(tmp_path: Path) -> None:
    """Plate sets unzipped from GBK archives have such names: the warning (written to train.log as UTF-8) names the
    file escaped, so the run goes on instead of stopping at an unencodable message."""
    import os

    name = os.fsdecode(b"\xff\xfeA12345.jpg")  # surrogate-escaped, as os.listdir gives it
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((24, 94, 3), 90, np.uint8))
    (tmp_path / name).write_bytes((tmp_path / "ok.png").read_bytes())
    samples = [real.Sample(tmp_path / "ok.png", "皖A12345"), real.Sample(tmp_path / name, name[:-4])]
    with pytest.warns(UserWarning) as got:
        ds = D.RealDataset(samples, (94, 24), Charset.chinese())
    (msg,) = [str(w.message) for w in got]
    assert len(ds) == 1 and "dropped 1 real" in msg and "\\xff\\xfeA12345.jpg" in msg
    msg.encode("utf-8")  # raised UnicodeEncodeError before


def test_build_source_reads_each_plate_once_as_eval_scores_it(tmp_path: Path) -> None:
    """A manifest that lists a crop twice reads it once; one that labels it two ways keeps the first label and says
    so, as `lprnet eval` and `check-data` treat them (training used every row, contradicting labels included)."""
    for n in ("a", "b"):
        cv2.imwrite(str(tmp_path / f"{n}.jpg"), np.full((24, 94, 3), 120, np.uint8))
    man = tmp_path / "m.csv"
    man.write_text("path,plate\na.jpg,皖A12345\nb.jpg,京B22222\na.jpg,皖A12345\na.jpg,皖A12346\n", encoding="utf-8")
    with pytest.warns(UserWarning) as got:
        ds = D.build_source(D.parse_source(f"real:{man}"), Charset.chinese(), (94, 24))
    (msg,) = [str(w.message) for w in got]
    assert [ds[i][1] for i in range(len(ds))] == ["皖A12345", "京B22222"]
    assert f"1 entries label a plate listed before differently, e.g. {man}:5 ({tmp_path / 'a.jpg'}): labelled " \
           "'皖A12346' here and '皖A12345' before" in msg
    assert "1 entries repeat a plate listed before with its label" in msg
    # a label that cannot be a training label is the manifest line's fault: the warning names that line
    man.write_text("path,plate\na.jpg,皖A1234\nb.jpg,京B22222\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=rf"dropped 1 real samples .* e\.g\. {man}:2 \({tmp_path / 'a.jpg'}\): "
                                         "label '皖A1234' has 6 characters"):
        D.build_source(D.parse_source(f"real:{man}"), Charset.chinese(), (94, 24))


def test_a_folder_of_crops_given_as_shards_points_to_real(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "皖A12345.jpg"), np.full((24, 94, 3), 120, np.uint8))
    with pytest.raises(FileNotFoundError, match=r"no .npz shards in .*; it holds image files: labelled crops are "
                                                r"read with real:DIR"):
        D.find_shards(tmp_path)
    (tmp_path / "皖A12345.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"no .npz shards in \S+$"):
        D.find_shards(tmp_path)


def test_scene_regions_are_cached_within_a_byte_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plate regions of CCPD scenes (~280 KB each) are cached up to REGION_CACHE_BYTES (50,000 scenes were ~14 GB);
    a scene past the budget is read again when drawn, and gives the same view."""
    plate = np.random.default_rng(0).integers(60, 255, (60, 220, 3), dtype=np.uint8)
    quad = np.float32([[200, 150], [420, 175], [415, 240], [195, 212]])
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [220, 0], [220, 60], [0, 60]]), quad)
    cv2.imwrite(str(tmp_path / "scene.png"), cv2.warpPerspective(plate, m, (600, 400)))
    q = tuple((float(x), float(y)) for x, y in quad)
    scenes = [real.Sample(tmp_path / "scene.png", "皖A12345", source="ccpd", quad=q) for _ in range(4)]  # type: ignore[arg-type]
    one = real.load_plate_region(scenes[0])[0].nbytes
    monkeypatch.setattr(D, "REGION_CACHE_BYTES", 2 * one + one // 2)
    ds = D.RealDataset(scenes, (94, 24), Charset.chinese())
    ds.preload(1)
    assert len(ds._regions) == 2 and ds._region_bytes == 2 * one
    missing = next(i for i in range(4) if i not in ds._regions)
    cached = next(iter(ds._regions))
    view = ds.augmented(missing, np.random.default_rng(7))[0]
    assert len(ds._regions) == 2  # still within the budget
    assert np.array_equal(view, ds.augmented(cached, np.random.default_rng(7))[0])
