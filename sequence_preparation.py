"""Sequences: the chronological split, r_t, RTG, and the torch Dataset / DataLoader.

Promise:
- `assign_split` labels every bar "train" / "val" / "test" / "embargo" from global time
  boundaries (fractions of the unique bar_start times, or explicit --train_end / --val_end dates),
  with an embargo of one window of bars (window x bar_interval) right after train and right
  after val, so no window or label straddles two parts.
- `returns(pnl, capital)` = r_t; `rtg_within_window(r)` = RTG_t = sum of r_k for k >= t up to
  the window's end (the seed's definition). The model sees RTG x RTG_SCALE.
- `TraderSequenceDataset` cuts windows per address inside one contiguous run of one split;
  `make_dataloader` builds a DataLoader over the processed parquet.

No-leakage rule: split boundaries are global times (the same for every trader), embargo rows
are never inside a window, and RTG is summed only inside its window. With dates pinned the
split of a bar depends only on its bar_start, never on later data.

Run alone: no CLI; `python pipeline.py` writes the parquet, then
`make_dataloader("data/processed_trader_data.parquet", split="val")` reads it.

Decisions where the issue is silent: with fractions, the first `floor(n x train_frac)` unique
bar times are train and the next `floor(n x val_frac)` are val, and each embargo is cut from
the start of the part that follows (so val and test shrink by one window each). Train windows
start every `stride` rows plus one window aligned to the run's end (so no train row is
dropped while stride <= window); val/test windows tile the run (stride = window) and the short
tail is right-padded. A run shorter than the window gives one padded window. torch is imported
only inside the Dataset/DataLoader code, so preprocessing never loads it. The Dataset is a plain
map-style class (len/getitem), so defining it needs no torch; DataLoader and DistributedSampler
accept it as they accept a torch Dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from action_discretization import ACTIONS, HOLD, N_ACTIONS, START_ACTION
from common import UserError

RTG_SCALE = 100.0
"""The model sees RTG x RTG_SCALE (returns are fractions of capital)."""
SPLITS = ("train", "val", "test")
EMBARGO = "embargo"
PROCESSED_PATH = "data/processed_trader_data.parquet"
META_PATH = "data/pipeline_meta.json"
IGNORE_INDEX = -100  # actions padding, the CrossEntropy ignore_index


@dataclass(frozen=True)
class SequenceConfig:
    window: int = 128
    """Bars per sequence (the model's context)."""
    stride: int = 32
    """Step between train window starts (val/test windows never overlap)."""
    train_frac: float = 0.7
    """Fraction of the unique bar times that are train (ignored when train_end is set)."""
    val_frac: float = 0.15
    """Fraction of the unique bar times that are val (ignored when val_end is set)."""
    train_end: str | None = None
    """UTC date/time: bars with bar_start < train_end are train (pins the split)."""
    val_end: str | None = None
    """UTC date/time: bars in [train_end + embargo, val_end) are val; needs train_end."""


def meta_path_for(processed: str | Path) -> Path:
    """The meta file of one processed parquet: `pipeline_meta.json` beside the default
    `processed_trader_data.parquet`, `{stem}.pipeline_meta.json` beside any other name, so two
    parquets in one folder never share (and overwrite) one meta."""
    p = Path(processed)
    if p.name == Path(PROCESSED_PATH).name:
        return p.with_name(Path(META_PATH).name)
    return p.with_name(f"{p.stem}.{Path(META_PATH).name}")


class ProcessedDataError(UserError):
    """The processed parquet or its meta is missing, unreadable, from another config, or lacks
    columns; every CLI prints it as one line and exits 2."""


CONFIG_HASH_KEY = b"trader_twin_config_hash"
"""Parquet schema-metadata key holding the pipeline config hash the file was built with."""
SEQUENCE_COLUMNS = ["address", "bar_start", "split", "action", "prev_action", "return"]
"""Columns every consumer of the processed parquet needs beside the state columns."""


def _utc(value: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def split_boundaries(bar_start: pd.Series, cfg: SequenceConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train_end, val_end): the first bar time outside train and outside val (UTC).

    Dates win over fractions; a fraction boundary is a unique bar_start time (or one bar after
    the last when the part would run to the end).
    """
    if cfg.train_end is not None:
        train_end = _utc(cfg.train_end)
        if cfg.val_end is None:
            raise ValueError("val_end is required when train_end is set")
        val_end = _utc(cfg.val_end)
        if not val_end > train_end:
            raise ValueError(f"val_end {val_end} must be after train_end {train_end}")
        return train_end, val_end
    if cfg.val_end is not None:
        raise ValueError("train_end is required when val_end is set")
    if not (0 < cfg.train_frac < 1 and 0 <= cfg.val_frac < 1 and cfg.train_frac + cfg.val_frac <= 1):
        raise ValueError(f"bad split fractions train_frac={cfg.train_frac} val_frac={cfg.val_frac}")
    times = pd.DatetimeIndex(pd.to_datetime(bar_start, utc=True)).unique().sort_values()
    n = len(times)
    if n == 0:
        raise ValueError("no bars to split")
    end = times[-1] + pd.Timedelta(1, "ns")
    i_train, i_val = int(n * cfg.train_frac), int(n * (cfg.train_frac + cfg.val_frac))
    return (times[i_train] if i_train < n else end), (times[i_val] if i_val < n else end)


def assign_split(bar_start: pd.Series, bar_interval: str, cfg: SequenceConfig) -> np.ndarray:
    """Split label per bar: "train", "embargo", "val", "embargo", "test" in time order.

    Embargo = [boundary, boundary + window x bar_interval) after the train and the val boundary.
    """
    ts = pd.DatetimeIndex(pd.to_datetime(bar_start, utc=True))
    b1, b2 = split_boundaries(pd.Series(ts), cfg)
    gap = pd.Timedelta(bar_interval) * cfg.window
    out = np.full(len(ts), "test", dtype=object)
    out[ts < b2 + gap] = EMBARGO
    out[ts < b2] = "val"
    out[ts < b1 + gap] = EMBARGO
    out[ts < b1] = "train"
    return out


def returns(pnl: np.ndarray, capital: float) -> np.ndarray:
    """r_t = trader P&L during bar t / capital (NaN P&L -> 0)."""
    return np.nan_to_num(np.asarray(pnl, float), nan=0.0) / float(capital)


def rtg_within_window(r: np.ndarray) -> np.ndarray:
    """RTG_t = sum_{k >= t} r_k along the last axis (a window or a batch of windows)."""
    r = np.asarray(r, float)
    return np.flip(np.cumsum(np.flip(r, axis=-1), axis=-1), axis=-1)


def window_starts(length: int, window: int, stride: int, overlap_tail: bool) -> list[int]:
    """Start offsets of the windows inside a run of `length` rows.

    overlap_tail=True (train): every `stride`, plus a window aligned to the end (every row is in
    a window when stride <= window; a larger stride subsamples); False (val/test):
    tiles of `window`, the last one possibly short (padded later). Length < window -> [0].
    """
    if length <= 0:
        return []
    if length <= window:
        return [0]
    if not overlap_tail:
        return list(range(0, length, window))
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def split_runs(address: np.ndarray, split: np.ndarray, wanted: str) -> list[tuple[int, int]]:
    """(first row, length) of each maximal run of consecutive rows of one address in `wanted`."""
    inside = np.asarray(split) == wanted
    address = np.asarray(address)
    new_addr = np.r_[True, address[1:] != address[:-1]]
    start = inside & (new_addr | ~np.r_[False, inside[:-1]])
    firsts = np.flatnonzero(start)
    # Each run ends before the next row that is outside, or at the next address change.
    stop = ~inside | new_addr
    stop_idx = np.flatnonzero(np.r_[stop[1:], True]) + 1
    ends = stop_idx[np.searchsorted(stop_idx, firsts, side="right")]
    return [(int(f), int(e - f)) for f, e in zip(firsts, ends, strict=True)]


class TraderSequenceDataset:
    """Windows of one split; item = dict of tensors (see docs/INTERFACES.md).

    df: processed rows sorted by (address, bar_start) with columns address, split, state_columns,
    action, prev_action, return. Items: rtg (T,), states (T,S), prev_actions (T,), actions (T,),
    returns (T,), mask (T,), row_index (T,) with T = window; padding rows have mask False,
    actions -100, prev_actions START_ACTION, row_index -1. A map-style dataset (len/getitem),
    usable with any torch sampler, including DistributedSampler.
    """

    def __init__(self, df: pd.DataFrame, split: str, window: int, stride: int,
                 state_columns: list[str]):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split, self.window, self.stride = split, int(window), int(stride)
        self.state_columns = list(state_columns)
        self.states = df[self.state_columns].to_numpy(np.float32)  # (N, S)
        self.actions = df["action"].to_numpy(np.int64)
        self.prev_actions = df["prev_action"].to_numpy(np.int64)
        self.rets = df["return"].to_numpy(np.float32)
        self.windows: list[tuple[int, int]] = []  # (first row, real length)
        for first, length in split_runs(df["address"].to_numpy(), df["split"].to_numpy(), split):
            for s in window_starts(length, self.window, self.stride, overlap_tail=split == "train"):
                self.windows.append((first + s, min(self.window, length - s)))

    @property
    def state_dim(self) -> int:
        return len(self.state_columns)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        import torch

        first, n = self.windows[i]
        T, rows = self.window, slice(first, first + n)
        states = np.zeros((T, self.state_dim), np.float32)
        states[:n] = self.states[rows]
        actions = np.full(T, IGNORE_INDEX, np.int64)
        actions[:n] = self.actions[rows]
        prev = np.full(T, START_ACTION, np.int64)
        prev[:n] = self.prev_actions[rows]
        rets = np.zeros(T, np.float32)
        rets[:n] = self.rets[rows]
        rtg = (rtg_within_window(rets) * RTG_SCALE).astype(np.float32)
        mask = np.arange(T) < n
        row_index = np.where(mask, first + np.arange(T), -1).astype(np.int64)
        return {
            "rtg": torch.from_numpy(rtg), "states": torch.from_numpy(states),
            "prev_actions": torch.from_numpy(prev), "actions": torch.from_numpy(actions),
            "returns": torch.from_numpy(rets), "mask": torch.from_numpy(mask),
            "row_index": torch.from_numpy(row_index),
        }


def honest_target(df: pd.DataFrame, window: int) -> float:
    """A target RTG that uses no future information: the train split's mean per-window return
    sum (mean of the train rows' `return` x window); 0.0 without train rows."""
    r = df.loc[df["split"] == "train", "return"].to_numpy(dtype=np.float64)
    return float(r.mean() * window) if r.size else 0.0


def honest_rtg(returns, target):
    """The honest RTG rule, owned here and used by training, evaluation, inference and predict:
    RTG_t = target - sum_{k<t} r_k along the last axis, (B, T) -> (B, T), so r_t itself and
    every later return stay out and conditioning on it is what a live bot could do.

    `returns` is a numpy array (float64 result) or a torch tensor (result on its device and
    dtype; this module never imports torch); `target` a float or anything broadcasting to
    (B, 1) (per-window targets)."""
    if isinstance(returns, np.ndarray) or not hasattr(returns, "new_zeros"):
        r = np.asarray(returns, dtype=np.float64)
        past = np.zeros_like(r)
        past[..., 1:] = np.cumsum(r[..., :-1], axis=-1)  # exclusive cumulative sum
    else:
        past = returns.new_zeros(returns.shape)
        past[..., 1:] = returns[..., :-1].cumsum(-1)
    return target - past


MIN_TRAIN_TRADES = 50
"""Fewer non-HOLD train actions than this: the data is too small to learn a trader from."""
MIN_TRAIN_WINDOWS = 8
"""Fewer train windows than this: too few sequences to fit a sequence model."""


def split_class_counts(df: pd.DataFrame, split: str = "train") -> list[int]:
    """Action counts (N_ACTIONS,) of one split's rows of a processed frame."""
    acts = df.loc[df["split"] == split, "action"].to_numpy(np.int64)
    return np.bincount(acts, minlength=N_ACTIONS)[:N_ACTIONS].tolist()


def data_size_warnings(counts: dict[str, list[int]], windows: dict[str, int] | None = None) -> list[str]:
    """Plain-words warnings when the data is too small to learn from or to select a model on.

    counts: {split: per-class action counts (N_ACTIONS,)}; windows: {split: window count}. One
    sentence per problem, with the numbers: too few non-HOLD train actions (< MIN_TRAIN_TRADES),
    too few train windows (< MIN_TRAIN_WINDOWS), a val or test split (of those in counts) with no
    rows or one class only (its macro-F1 says nothing about the twin)."""
    out = []
    tr = np.asarray(counts.get("train", [0] * len(ACTIONS)))
    trades = int(tr.sum() - tr[HOLD])
    if trades < MIN_TRAIN_TRADES:
        out.append(f"too small to learn from: {trades} non-HOLD train actions out of {int(tr.sum())} "
                   f"train bars (need >= {MIN_TRAIN_TRADES})")
    if windows is not None and windows.get("train", 0) < MIN_TRAIN_WINDOWS:
        out.append(f"too small to learn from: {windows.get('train', 0)} train windows "
                   f"(need >= {MIN_TRAIN_WINDOWS})")
    for split in ("val", "test"):
        if split not in counts:
            continue
        c = np.asarray(counts[split])
        present = [ACTIONS[i] for i in np.flatnonzero(c)]
        if c.sum() == 0:
            out.append(f"the {split} split has no rows: nothing to select or score a model on")
        elif len(present) == 1:
            out.append(f"the {split} split holds one class only ({present[0]} x {int(c.sum())}): "
                       f"its macro-F1 cannot tell a twin from a constant")
    return out


def load_processed(processed: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read the processed parquet (pyarrow), sorted by (address, bar_start), index 0..N-1."""
    import pyarrow.parquet as pq

    df = pq.read_table(processed, columns=columns).to_pandas()
    return df.sort_values(["address", "bar_start"], kind="stable").reset_index(drop=True)


def read_meta(processed: str | Path) -> dict:
    """The parquet's own meta (meta_path_for); ProcessedDataError when missing or unreadable."""
    import orjson

    f = meta_path_for(processed)
    if not Path(processed).exists():
        raise ProcessedDataError(f"{processed} not found: run `python pipeline.py --output {processed}` first")
    try:
        meta = orjson.loads(f.read_bytes())
    except FileNotFoundError:
        raise ProcessedDataError(f"{f} (the meta of {processed}) not found: rebuild with "
                                 f"`python pipeline.py --output {processed} --force`") from None
    except orjson.JSONDecodeError as e:
        raise ProcessedDataError(f"{f} is not valid JSON ({e}): rebuild with "
                                 f"`python pipeline.py --output {processed} --force`") from None
    for key in ("state_features", "window", "stride"):
        if key not in meta:
            raise ProcessedDataError(f"{f} lacks field {key!r} (a meta from another version?): "
                                     f"rebuild with `python pipeline.py --output {processed} --force`")
    return meta


def parquet_schema(processed: str | Path, meta: dict):
    """The parquet's pyarrow schema, checked to be readable and built with `meta`'s config (the
    config hash in its schema metadata, when it has one); ProcessedDataError otherwise."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(processed)
    except (OSError, pa.ArrowInvalid) as e:
        raise ProcessedDataError(f"{processed} is not a readable parquet ({e}): rebuild with "
                                 f"`python pipeline.py --output {processed} --force`") from None
    built = (schema.metadata or {}).get(CONFIG_HASH_KEY)
    if built is not None and meta.get("config_hash") and built.decode() != meta["config_hash"]:
        raise ProcessedDataError(
            f"{meta_path_for(processed)} is from another config (hash {meta['config_hash']}) than "
            f"{processed} (hash {built.decode()}): rebuild with `python pipeline.py --output {processed} --force`")
    return schema


def read_processed(processed: str | Path, columns: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Read the parquet once with its checked meta -> (frame sorted by (address, bar_start), meta).

    Checks, each a one-line ProcessedDataError naming the file: the meta exists and parses; the
    parquet was built with the meta's config (schema-metadata hash, when the parquet has one);
    the parquet holds the meta's state columns and SEQUENCE_COLUMNS (missing ones named) and no
    state-like column the meta does not list (`columns` in the meta, when recorded). `columns`
    None reads every column; else these plus the state and sequence columns."""
    meta = read_meta(processed)
    schema = parquet_schema(processed, meta)
    cols = list(meta["state_features"])
    need = [*SEQUENCE_COLUMNS, *cols]
    missing = [c for c in need if c not in schema.names]
    recorded = meta.get("columns")
    extra = [c for c in schema.names if recorded is not None and c not in recorded]
    if missing or extra:
        what = "; ".join(x for x in (f"lacks columns {missing}" if missing else "",
                                     f"has columns its meta does not list {extra}" if extra else "") if x)
        raise ProcessedDataError(f"{processed} {what}: rebuild with `python pipeline.py --output {processed} --force`")
    read = None if columns is None else list(dict.fromkeys([*need, *columns]))
    return load_processed(processed, read), meta


def make_dataloader(processed: str | Path = PROCESSED_PATH, split: str = "val", batch_size: int = 32,
                    shuffle: bool | None = None, num_workers: int = 0, device=None, sampler=None,
                    window: int | None = None, stride: int | None = None,
                    frame: tuple[pd.DataFrame, dict] | None = None):
    """DataLoader of TraderSequenceDataset over the processed parquet.

    window, stride and state columns come from the parquet's meta (meta_path_for) unless
    given. frame: a (df, meta) pair from read_processed, so a caller that builds several loaders
    reads the parquet once (`processed` is then only named in errors). shuffle None = shuffle
    train only (False when a sampler is passed, e.g. a DistributedSampler); pin_memory on CUDA
    devices; a seeded generator keeps shuffling deterministic. row_index refers to rows of
    load_processed(processed). Bad files raise ProcessedDataError (one line).
    """
    import torch
    from torch.utils.data import DataLoader

    df, meta = frame if frame is not None else read_processed(processed, [])
    cols = list(meta["state_features"])
    ds = TraderSequenceDataset(df, split, window or meta["window"], stride or meta["stride"], cols)
    if sampler is not None:
        shuffle = False
    elif shuffle is None:
        shuffle = split == "train"
    is_cuda = device is not None and torch.device(device).type == "cuda"
    gen = torch.Generator().manual_seed(0) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=num_workers, pin_memory=is_cuda, generator=gen,
                      persistent_workers=num_workers > 0)
