"""Stage 1, ingestion: a trader's price files -> a validated event table and the bar table.

Promise: `run(cfg)` reads every `btc-*_prices.json` (and every `*trades*.json` data-api dump)
under `cfg.data_dir`, validates each event (DESIGN.md "Input contract"; invalid events are
dropped and counted by reason, unreadable or invalid files quarantined, the user's files are
never moved), writes `{out_dir}/ingestion_report.json` (counts reconcile: read = used +
dropped) and returns the bar table of docs/INTERFACES.md: one row per (address, bar_start),
continuous from the bar of the trader's first event to the bar of the last (or of the last
settlement), with the Up-token mid OHLC, the underlying's bar, the trader's fills and
Up/Down-aware positions with settlement. `main()` also writes `{out_dir}/bars.parquet`.

No-leakage rule: row t describes only its own interval [bar_start, bar_start + interval): every
column of row t is a function of events with time < bar_start + interval (marks are the last
mid before the bar's end, settlement prices come from `resolution` or the last mid before the
market's end), so cutting all events after T changes no row that ends at or before T. The
one-bar shift that makes the state of bar t see only events < bar_start is state_features'.

Run alone: python data_ingestion.py --data_dir downloads/merged_trades --bar_interval 1min --workers 2

Decisions where the issue is silent (parsing: _ingestion_parse.py and _ingestion_files.py;
merging the workers' parts and the report's totals: _ingestion_merge.py; the bar table:
_ingestion_bars.py; accounting: _ingestion_positions.py):
- Files: every `btc-*_prices.json` (PRICE_FILE_GLOB) and every `*trades*.json` (DATA_API_GLOB)
  under data_dir. A file whose top level is a JSON list is a data-api /trades dump, whatever
  its name; it is converted per (proxyWallet, slug) and its non-BTC-15m markets are reported
  as skipped (report["skipped_markets"]). Parsing runs in a process pool over batches of files
  (validation is vectorised over a batch); `--workers 1` stays in this process.
  The pool's workers keep their freed heap between batches (`_keep_heap`, glibc's mallopt), so
  a batch does not fault the previous one's pages in again; the caller's process is untouched.
- Address = the folder name of a price file; a data-api dump uses each record's proxyWallet.
  Two files for one (address, slug): the first in path order is used, the other's events are
  dropped as `duplicate_market`.
- Bars: `bar_interval` is any fixed pandas offset alias (15min, 1min, 30s, 1h); bars are
  aligned to the Unix epoch (UTC). An ohlcv event is placed at its open time `t`.
- Token market data counts for a bar only when the event lies inside its own market's window
  [start, start + 900 s); per bar the best source wins (price_change mids, else token ohlcv,
  else the trader's fill prices as Up prices: p for Up, 1 - p for Down). `has_data` is true
  where that OHLC exists; `forward_filled()` gives a clearly separate filled close.
  Underlying candles repeated in several files of one address are used once (first wins).
- Accounting is average cost per (market, outcome token) with cash = price x size (the usdc
  field is validated, not booked). A sell beyond holdings (history that starts mid-way) opens a
  short of that token, which is allowed and counted in report["positions"]["oversold_trades"].
  This is the one sequential recursion; it steps through each (market, outcome)'s fills,
  vectorised across markets (never bars x events, never a Python step per fill).
- Settlement happens in the bar that contains end - 1 ms (end = window start + 900 s): open
  shares pay 1 or 0 from `resolution`, else from the last mark (mid, token close or fill Up
  price) before the end >= 0.5, else from the first mark after it. A fill after the end is
  settled at once at the same payout. `settled` marks bars where a traded market settles.
- exposure_usdc and cost_basis use the signed cost of open shares (a short is negative cost);
  exposure is the max over the bar of the sum of |cost|. `bars_since_entry` counts bars since
  the trader last went from holding no shares to holding some (inventory can be 0 while both
  tokens are held: hedged books are open positions).
"""

from __future__ import annotations

import argparse
import ctypes
import fnmatch
import logging
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from tqdm import tqdm

from _ingestion_bars import BAR_COLUMNS, POSITION_COLUMNS, build_bars, forward_filled, interval_ms
from _ingestion_files import convert_data_api_trades
from _ingestion_io import IngestionError, add_config_args, atomic_write, field_docs
from _ingestion_merge import finish_report, merge_parsed, summarize_reports
from _ingestion_parse import (
    ARRAY_FIELDS,
    KIND_NAMES,
    PRICE_CHANGE,
    ROLE_NAMES,
    TRADE,
    parse_files,
    parse_files_packed,
)
from _ingestion_positions import KEY_STRIDE

__all__ = ["IngestionConfig", "IngestionError", "PRICE_FILE_GLOB", "DATA_API_GLOB",
           "MARKET_SECONDS", "BAR_COLUMNS", "POSITION_COLUMNS", "KIND_NAMES", "ROLE_NAMES",
           "load_price_file", "load_events", "quotes_and_fills", "build_bars", "convert_data_api_trades", "forward_filled", "run",
           "atomic_write", "add_config_args", "field_docs"]

log = logging.getLogger("data_ingestion")

PRICE_FILE_GLOB = "btc-*_prices.json"
"""Price files, searched recursively under data_dir; the parent folder name is the address."""
DATA_API_GLOB = "*trades*.json"
"""Polymarket data-api /trades dumps (a top-level JSON list), also searched under data_dir."""
MARKET_SECONDS = 900
"""Length of a BTC Up/Down market window; the slug's number is the window start."""
EVENT_COLUMNS = ["address", "slug", "market", *ARRAY_FIELDS]
"""Event table: kind 0 trade, 1 price_change, 2 token ohlcv, 3 underlying ohlcv (KIND_NAMES);
side +1 BUY / -1 SELL; outcome 0 Up / 1 Down; role 0 unknown / 1 maker / 2 taker (ROLE_NAMES,
fills only); market = row of the markets table."""


@dataclass(frozen=True)
class IngestionConfig:
    data_dir: str = "downloads/merged_trades"
    """Folder searched recursively for price files ({address}/btc-updown-15m-*_prices.json)."""
    out_dir: str = "data"
    """Where ingestion_report.json (and, from the CLI, bars.parquet) are written."""
    bar_interval: str = "15min"
    """Bar length, a fixed pandas offset alias (15min is the seed's; 1min works)."""
    workers: int = 0
    """Processes that parse files in parallel: 0 = all cores, 1 = in this process."""


# ---------------------------------------------------------------- loading
def _frame(parsed: dict) -> pd.DataFrame:
    """parse_files output -> the event table (EVENT_COLUMNS), market = unit number."""
    ms, arr = parsed["markets"], parsed["arrays"]
    n = [m["hi"] - m["lo"] for m in ms]

    def cat(key: str) -> pd.Categorical:  # per-market codes repeated: no per-event strings
        names, codes = np.unique(np.array([m[key] for m in ms], dtype=object), return_inverse=True)
        return pd.Categorical.from_codes(np.repeat(codes.astype(np.int32), n), names)
    return pd.DataFrame({"address": cat("address"), "slug": cat("slug"), "market": arr["unit"],
                         **{f: arr[f] for f in ARRAY_FIELDS}}, copy=False)


def load_price_file(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """One file -> (events sorted by (market, t), report). Never raises; a bad file gives an
    empty table and a report with status "quarantined" (or "skipped") and the reason."""
    path = Path(path)
    parsed = parse_files([(str(path), path.parent.name)])
    return _frame(parsed), parsed["reports"][0]


def _find_files(data_dir: Path) -> list[tuple[str, str]]:
    """(path, address) of every price file and data-api dump under data_dir, sorted by path,
    each once; address = the parent folder's name."""
    found, todo = [], [os.fspath(data_dir)]
    while todo:  # os.scandir: d_type says file or folder, so no stat and no Path per file
        with os.scandir(todo.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):  # as os.walk: no symlinked folders
                    todo.append(e.path)
                elif e.is_file() and (fnmatch.fnmatchcase(e.name, PRICE_FILE_GLOB)
                                      or fnmatch.fnmatchcase(e.name, DATA_API_GLOB)):
                    found.append(e.path)
    found.sort()
    return [(f, os.path.basename(os.path.dirname(f))) for f in found]


def _keep_heap() -> None:
    """Pool-worker initializer: glibc keeps a worker's freed heap for its next batch. By default
    it hands the heap top back to the OS whenever more than twice its (dynamic) mmap threshold is
    free, so each batch's numpy temporaries were faulted in again: 15,000-18,000 page faults per
    worker on the 30-day demo (~4 us each on a VM; worker CPU -5 % without them, BENCHMARKS.md
    "Ingestion", seventh round). Only the pool's own short-lived workers are tuned, never the
    caller's process. A no-op where the C library has no mallopt."""
    try:  # the running process's own symbols: libc is loaded, no find_library subprocess
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, TypeError, AttributeError):  # no dlopen(NULL) (Windows), no mallopt (macOS)
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks under 32 MiB come from the heap, reused
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: the heap top is kept up to 256 MiB free


def load_events(cfg: IngestionConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Parse every file under cfg.data_dir (process pool over batches of files) ->
    (events, markets, report).

    events: EVENT_COLUMNS sorted by (address, t), stable; markets: one row per (address, slug)
    with start_ms, end_ms, resolution, path, n_events (events.market is its row); report:
    per-file and total counts. Raises IngestionError when data_dir is missing or holds no
    usable price file."""
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise IngestionError(f"data_dir {data_dir} does not exist; pass --data_dir with the "
                             f"folder that holds {{address}}/{PRICE_FILE_GLOB}")
    jobs = _find_files(data_dir)
    workers = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    # batches of files: validation is vectorised over a whole batch; at most 64 files, because
    # holding 256 files of dicts at once cost 1.3-1.5x their orjson.loads time (cache misses)
    size = max(1, min(64, -(-len(jobs) // (workers * 4))))
    batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
    bar = tqdm(total=len(jobs), desc="ingest", unit="file", disable=None)
    parts = []
    if workers == 1:
        for b in batches:
            parts.append(parse_files(b))
            bar.update(len(b))
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_keep_heap) as pool:
            for b, part in zip(batches, pool.map(parse_files_packed, batches), strict=True):
                parts.append(part)
                bar.update(len(b))
    bar.close()
    parsed = merge_parsed(parts) if parts else parse_files([])
    files, keep, seen = parsed["reports"], [], set()
    by_path = {f["path"]: f for f in files}
    for m in parsed["markets"]:
        key = (m["address"], m["slug"])
        if key in seen:  # the first file in path order owns the market
            rep, n = by_path[m["path"]], m["hi"] - m["lo"]
            rep["used"] -= n
            rep["dropped"]["duplicate_market"] = rep["dropped"].get("duplicate_market", 0) + n
            rep["notes"].append(f"{m['slug']}: duplicate of an earlier file, not used")
            finish_report(rep)  # its counts changed: sort them and re-check the reconciliation
            continue
        seen.add(key)
        keep.append(m)
    arr = parsed["arrays"]
    if len(keep) < len(parsed["markets"]):
        mask = np.zeros(len(arr["t"]), bool)
        for m in keep:
            mask[m["lo"]:m["hi"]] = True
        arr = {k: v[mask] for k, v in arr.items()}
    lens = [m["hi"] - m["lo"] for m in keep]
    arr["unit"] = np.repeat(np.arange(len(keep), dtype=np.int32), lens)
    off = np.r_[0, np.cumsum(lens)]
    keep = [{**m, "lo": int(off[i]), "hi": int(off[i + 1])} for i, m in enumerate(keep)]
    events = _frame({"arrays": arr, "markets": keep})
    codes = events["address"].cat.codes.to_numpy().astype(np.int64)
    key = codes * KEY_STRIDE + events["t"].to_numpy()
    if np.any(key[1:] < key[:-1]):  # sort by (address, t), stable, only when needed
        events = events.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)
    mk = pd.DataFrame({
        "address": [m["address"] for m in keep], "slug": [m["slug"] for m in keep],
        "start_ms": np.array([m["start_s"] for m in keep], np.int64) * 1000,
        "resolution": [m["resolution"] for m in keep], "path": [m["path"] for m in keep],
        "n_events": lens})
    mk["end_ms"] = mk["start_ms"] + MARKET_SECONDS * 1000
    report = summarize_reports(files, asdict(cfg))
    if mk.empty:
        raise IngestionError(f"no usable price file under {data_dir} ({len(jobs)} files found, "
                             f"{report['totals']['files_quarantined']} quarantined, "
                             f"{report['totals']['files_skipped']} skipped); see the report")
    return events, mk, report


def quotes_and_fills(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """load_events' event table -> (quotes, fills), each sorted by (address, slug, t), stable.

    quotes: the Up token's book top from every validated price_change event, columns address,
    slug, t (ms), best_bid, best_ask. fills: the trader's own fills, columns address, slug, t,
    price, size, side (+1 BUY / -1 SELL), outcome (0 Up / 1 Down), role (ROLE_NAMES code).
    For backtests (evaluate.py); the bar table does not use them."""
    kind = events["kind"].to_numpy()
    out = []
    for k, cols in ((PRICE_CHANGE, ["best_bid", "best_ask"]),
                    (TRADE, ["price", "size", "side", "outcome", "role"])):
        sub = events.loc[kind == k, ["address", "slug", "t", *cols]]
        sub = sub.assign(address=sub["address"].astype(str), slug=sub["slug"].astype(str))
        out.append(sub.sort_values(["address", "slug", "t"], kind="stable").reset_index(drop=True))
    return out[0], out[1]


# ---------------------------------------------------------------- stage
def run(cfg: IngestionConfig) -> pd.DataFrame:
    """Load, validate and bar the data dir; write {out_dir}/ingestion_report.json atomically;
    return the bar table. Raises IngestionError on user errors (one-line message)."""
    interval_ms(cfg.bar_interval)  # fail on a bad flag before reading any file
    events, markets, report = load_events(cfg)
    bars = build_bars(events, markets, cfg.bar_interval)
    report["positions"] = bars.attrs.get("positions", {})
    report["bars"] = {"rows": len(bars), "addresses": int(bars["address"].nunique()),
                      "bar_interval": cfg.bar_interval,
                      "rows_with_data": int(bars["has_data"].sum())}
    atomic_write(Path(cfg.out_dir) / "ingestion_report.json",
                  orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return bars


def write_bars(bars: pd.DataFrame, path: Path) -> None:
    """Atomic parquet write of the bar table (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(bars.assign(slug=bars["slug"].astype(object)), preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_config_args(p, IngestionConfig)
    cfg = IngestionConfig(**vars(p.parse_args(argv)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if cfg.workers < 0:
        print(f"error: --workers {cfg.workers} must be >= 0 (0 = all cores)", file=sys.stderr)
        raise SystemExit(2)
    try:
        bars = run(cfg)
    except IngestionError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    write_bars(bars, Path(cfg.out_dir) / "bars.parquet")
    rep = orjson.loads((Path(cfg.out_dir) / "ingestion_report.json").read_bytes())
    tot = rep["totals"]
    log.info("%d bars for %d address(es); events read %d used %d dropped %d; files quarantined "
             "%d skipped %d -> %s", len(bars), bars["address"].nunique(), tot["read"],
             tot["used"], tot["dropped_total"], tot["files_quarantined"], tot["files_skipped"],
             cfg.out_dir)


if __name__ == "__main__":
    main()
