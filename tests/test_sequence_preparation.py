"""sequence_preparation: split + embargo, returns/RTG, windows, the Dataset items, the DataLoader."""

from __future__ import annotations

import itertools

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sequence_preparation as sp
from action_discretization import START_ACTION

STATE = ["s0", "s1", "s2"]


def test_names():
    assert sp.RTG_SCALE == 100.0 and sp.SPLITS == ("train", "val", "test")
    assert sp.EMBARGO == "embargo"
    assert sp.PROCESSED_PATH == "data/processed_trader_data.parquet"
    assert sp.META_PATH == "data/pipeline_meta.json"


def test_assign_split_fractions_and_embargo():
    t = pd.Series(pd.date_range("2026-01-01", periods=1000, freq="15min", tz="UTC"))
    cfg = sp.SequenceConfig(window=50, train_frac=0.7, val_frac=0.15)
    s = sp.assign_split(t, "15min", cfg)
    # time order train < embargo < val < embargo < test, each embargo exactly one window
    order = {"train": 0, "val": 2, "test": 4}
    codes = np.array([order.get(x, -1) for x in s])
    runs = [(k, len(list(g))) for k, g in itertools.groupby(s)]
    assert [k for k, _ in runs] == ["train", "embargo", "val", "embargo", "test"]
    assert dict(runs)["train"] == 700 and runs[1][1] == 50 and runs[3][1] == 50
    assert runs[2][1] == 150 - 50 and runs[4][1] == 150 - 50
    assert (np.diff(codes[codes >= 0]) >= 0).all()


def test_assign_split_dates_global_and_independent_of_later_data():
    t = pd.Series(pd.date_range("2026-01-01", periods=96 * 10, freq="15min", tz="UTC"))
    cfg = sp.SequenceConfig(window=8, train_end="2026-01-06", val_end="2026-01-08")
    s = sp.assign_split(t, "15min", cfg)
    ts = pd.DatetimeIndex(t)
    assert (s[ts < pd.Timestamp("2026-01-06", tz="UTC")] == "train").all()
    assert (s[(ts >= pd.Timestamp("2026-01-06", tz="UTC"))
              & (ts < pd.Timestamp("2026-01-06 02:00", tz="UTC"))] == "embargo").all()
    assert s[ts == pd.Timestamp("2026-01-06 02:00", tz="UTC")][0] == "val"
    assert (s[ts >= pd.Timestamp("2026-01-08 02:00", tz="UTC")] == "test").all()
    cut = sp.assign_split(t[:700], "15min", cfg)
    assert (cut == s[:700]).all()  # truncating the data never moves a bar's split


def test_assign_split_bad_config():
    t = pd.Series(pd.date_range("2026-01-01", periods=10, freq="15min", tz="UTC"))
    with pytest.raises(ValueError, match="val_end"):
        sp.assign_split(t, "15min", sp.SequenceConfig(train_end="2026-01-02"))
    with pytest.raises(ValueError, match="after"):
        sp.assign_split(t, "15min", sp.SequenceConfig(train_end="2026-01-03", val_end="2026-01-02"))
    with pytest.raises(ValueError, match="fractions"):
        sp.assign_split(t, "15min", sp.SequenceConfig(train_frac=0.9, val_frac=0.2))


def test_returns_and_rtg():
    r = sp.returns(np.array([1.0, np.nan, -2.0, 4.0]), 10.0)
    np.testing.assert_allclose(r, [0.1, 0.0, -0.2, 0.4])
    np.testing.assert_allclose(sp.rtg_within_window(r), [0.3, 0.2, 0.2, 0.4])
    batch = np.stack([r, r[::-1]])
    np.testing.assert_allclose(sp.rtg_within_window(batch)[1], [0.3, -0.1, 0.1, 0.1])


def test_window_starts():
    assert sp.window_starts(10, 4, 3, overlap_tail=True) == [0, 3, 6]
    assert sp.window_starts(11, 4, 3, overlap_tail=True) == [0, 3, 6, 7]
    assert sp.window_starts(10, 4, 3, overlap_tail=False) == [0, 4, 8]
    assert sp.window_starts(3, 4, 3, overlap_tail=True) == [0]
    assert sp.window_starts(0, 4, 3, overlap_tail=False) == []


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.integers(1, 40), st.integers(1, 40))
def test_windows_cover_every_row(length, window, stride):
    tiles = sp.window_starts(length, window, stride, overlap_tail=False)
    covered = [r for s in tiles for r in range(s, min(s + window, length))]
    assert covered == list(range(length))  # val/test: each row exactly once, in order
    starts = sp.window_starts(length, window, stride, overlap_tail=True)
    rows = {r for s in starts for r in range(s, min(s + window, length))}
    assert all(0 <= s and s + min(window, length) <= length for s in starts)
    if stride <= window:  # train: every row is in some window (stride > window subsamples)
        assert rows == set(range(length))


def test_split_runs():
    addr = np.array(["a"] * 6 + ["b"] * 4)
    split = np.array(["train", "train", "embargo", "val", "val", "val", "val", "val", "test", "val"])
    assert sp.split_runs(addr, split, "val") == [(3, 3), (6, 2), (9, 1)]
    assert sp.split_runs(addr, split, "train") == [(0, 2)]


def processed_frame(n_per=60, addresses=("0xa", "0xb"), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for a in addresses:
        t = pd.date_range("2026-01-05", periods=n_per, freq="15min", tz="UTC")
        acts = rng.integers(0, 5, n_per).astype(np.int8)
        prev = np.r_[START_ACTION, acts[:-1]].astype(np.int8)
        split = np.array(["train"] * 30 + ["embargo"] * 10 + ["val"] * 13 + ["test"] * (n_per - 53))
        f = pd.DataFrame({"address": a, "bar_start": t, "split": split, "action": acts,
                          "prev_action": prev, "return": rng.normal(0, 0.01, n_per)})
        for c in STATE:
            f[c] = rng.normal(0, 1, n_per).astype(np.float32)
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def test_dataset_items_train_and_val():
    torch = pytest.importorskip("torch")
    df = processed_frame()
    tr = sp.TraderSequenceDataset(df, "train", window=8, stride=4, state_columns=STATE)
    assert len(tr) == 2 * len(sp.window_starts(30, 8, 4, True)) and tr.state_dim == 3
    item = tr[0]
    assert set(item) == {"rtg", "states", "prev_actions", "actions", "returns", "mask", "row_index"}
    assert item["states"].shape == (8, 3) and item["states"].dtype == torch.float32
    assert item["actions"].dtype == torch.int64 and item["mask"].dtype == torch.bool
    assert item["prev_actions"][0].item() == START_ACTION  # trader's first bar
    rows = item["row_index"].numpy()
    np.testing.assert_allclose(item["rtg"].numpy(),
                               np.cumsum(df["return"].to_numpy()[rows][::-1])[::-1] * 100, rtol=1e-5)
    # the second window's first prev_action is the real previous action, not START
    second = tr[1]
    assert second["prev_actions"][0].item() == df["action"].iloc[second["row_index"][0].item() - 1]

    va = sp.TraderSequenceDataset(df, "val", window=8, stride=4, state_columns=STATE)
    idx = np.concatenate([va[i]["row_index"].numpy() for i in range(len(va))])
    real = idx[idx >= 0]
    assert sorted(real.tolist()) == np.flatnonzero(df["split"] == "val").tolist()  # each once
    last = va[1]  # 13 val rows -> 8 + 5 padded
    assert last["mask"].sum().item() == 5
    assert (last["actions"][5:] == -100).all() and (last["prev_actions"][5:] == START_ACTION).all()
    assert (last["rtg"][5:] == 0).all() and (last["states"][5:] == 0).all()
    # no window ever contains an embargo row
    emb = set(np.flatnonzero(df["split"] == "embargo"))
    for ds in (tr, va):
        for i in range(len(ds)):
            assert emb.isdisjoint(ds[i]["row_index"].numpy().tolist())


def test_make_dataloader(tmp_path):
    torch = pytest.importorskip("torch")
    df = processed_frame()
    out = tmp_path / "processed.parquet"
    df.to_parquet(out, index=False)
    sp.meta_path_for(out).write_bytes(orjson.dumps(
        {"state_features": STATE, "window": 8, "stride": 4}))
    dl = sp.make_dataloader(out, split="val", batch_size=3)
    batch = next(iter(dl))
    assert batch["states"].shape == (3, 8, 3) and batch["rtg"].shape == (3, 8)
    assert not dl.pin_memory
    a = [b["row_index"] for b in sp.make_dataloader(out, split="train", batch_size=4)]
    b = [b["row_index"] for b in sp.make_dataloader(out, split="train", batch_size=4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # seeded shuffle
    sampler = torch.utils.data.distributed.DistributedSampler(
        sp.TraderSequenceDataset(df, "train", 8, 4, STATE), num_replicas=2, rank=0, shuffle=False)
    dl2 = sp.make_dataloader(out, split="train", batch_size=2, sampler=sampler)
    assert sum(x["mask"].shape[0] for x in dl2) == len(sampler)
    assert sp.make_dataloader(out, split="val", device="cuda").pin_memory  # pinned for CUDA copies
    with pytest.raises(sp.ProcessedDataError, match="pipeline.py"):
        sp.make_dataloader(tmp_path / "missing.parquet")
