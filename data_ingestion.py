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

Decisions where the issue is silent (parsing: _ingestion_parse.py; merging the workers' parts
and the report's totals: _ingestion_merge.py; accounting: _ingestion_positions.py):
- Files: every `btc-*_prices.json` (PRICE_FILE_GLOB) and every `*trades*.json` (DATA_API_GLOB)
  under data_dir. A file whose top level is a JSON list is a data-api /trades dump, whatever
  its name; it is converted per (proxyWallet, slug) and its non-BTC-15m markets are reported
  as skipped (report["skipped_markets"]). Parsing runs in a process pool over batches of files
  (validation is vectorised over a batch); `--workers 1` stays in this process.
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
  This is the one sequential recursion, a single pass over trades (never bars x events).
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
import fnmatch
import logging
import multiprocessing as mp
import os
import sys
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from tqdm import tqdm

import _ingestion_positions
from _ingestion_io import add_config_args, atomic_write, field_docs
from _ingestion_merge import finish_report, merge_parsed, summarize_reports
from _ingestion_parse import (
    ARRAY_FIELDS,
    KIND_NAMES,
    OHLCV,
    PRICE_CHANGE,
    TRADE,
    UNDERLYING,
    convert_data_api_trades,
    parse_files,
    parse_files_packed,
)
from _ingestion_positions import _BIG, _EPS  # key = group * _BIG + t stays int64 until 2100

__all__ = ["IngestionConfig", "IngestionError", "PRICE_FILE_GLOB", "DATA_API_GLOB",
           "MARKET_SECONDS", "BAR_COLUMNS", "POSITION_COLUMNS", "KIND_NAMES", "load_price_file",
           "load_events", "build_bars", "convert_data_api_trades", "forward_filled", "run",
           "atomic_write", "add_config_args", "field_docs"]

log = logging.getLogger("data_ingestion")

PRICE_FILE_GLOB = "btc-*_prices.json"
"""Price files, searched recursively under data_dir; the parent folder name is the address."""
DATA_API_GLOB = "*trades*.json"
"""Polymarket data-api /trades dumps (a top-level JSON list), also searched under data_dir."""
MARKET_SECONDS = 900
"""Length of a BTC Up/Down market window; the slug's number is the window start."""
POSITION_COLUMNS = [
    "n_trades", "net_shares", "buy_usdc", "sell_usdc", "inv_up", "inv_down", "inventory",
    "avg_entry_up", "avg_entry_down", "cost_basis", "exposure_usdc", "realized_pnl",
    "unrealized_pnl", "pnl", "bars_since_entry", "settled",
]
BAR_COLUMNS = [
    "address", "bar_start", "slug", "settle_up", "open", "high", "low", "close", "volume",
    "spread", "has_data", "u_open", "u_high", "u_low", "u_close", "u_volume", "has_underlying",
    *POSITION_COLUMNS,
]
EVENT_COLUMNS = ["address", "slug", "market", *ARRAY_FIELDS]
"""Event table: kind 0 trade, 1 price_change, 2 token ohlcv, 3 underlying ohlcv (KIND_NAMES);
side +1 BUY / -1 SELL; outcome 0 Up / 1 Down; market = row of the markets table."""


class IngestionError(ValueError):
    """A user error (no usable price file, bad bar_interval); the message is one line."""


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
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
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
    key = events["address"].cat.codes.to_numpy().astype(np.int64) * _BIG + events["t"].to_numpy()
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


# ---------------------------------------------------------------- bars
def _interval_ms(bar_interval: str) -> int:
    """Milliseconds of a fixed pandas offset alias; IngestionError for anything else."""
    try:
        with warnings.catch_warnings():  # pandas warns about deprecated aliases; we judge it
            warnings.simplefilter("ignore")
            ms = pd.Timedelta(pd.tseries.frequencies.to_offset(bar_interval)).value // 1_000_000
    except (ValueError, TypeError):
        ms = 0
    if ms < 1:
        raise IngestionError(f"bar_interval {bar_interval!r} is not a fixed pandas offset "
                             "alias of at least 1 ms; use e.g. 15min, 1min, 30s or 1h")
    return int(ms)


def _agg(rows: np.ndarray, vals: np.ndarray, n: int, how: str) -> np.ndarray:
    """Per-row first/last/max/min of vals; rows sorted ascending; NaN for rows without values."""
    out = np.full(n, np.nan)
    if len(rows) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    if how == "first":
        out[rows[starts]] = vals[starts]
    elif how == "last":
        out[rows[starts]] = vals[np.r_[starts[1:], len(rows)] - 1]
    else:
        out[rows[starts]] = (np.maximum if how == "max" else np.minimum).reduceat(vals, starts)
    return out


def _level(delta: np.ndarray, acode: np.ndarray, e_row: np.ndarray, row_addr: np.ndarray):
    """Cumulative level (per address) after each entry, and at each bar's end (0 before any)."""
    lvl = pd.Series(delta).groupby(acode).cumsum().to_numpy() if len(delta) else delta
    idx = np.searchsorted(e_row, np.arange(len(row_addr)), "right") - 1
    ok = (idx >= 0) & (acode[np.clip(idx, 0, None)] == row_addr) if len(delta) else idx < -1
    at_end = np.where(ok, lvl[np.clip(idx, 0, None)] if len(delta) else 0.0, 0.0)
    return lvl, np.where(np.abs(at_end) < _EPS, 0.0, at_end)


def build_bars(events: pd.DataFrame, markets: pd.DataFrame, bar_interval: str = "15min"
               ) -> pd.DataFrame:
    """Event table + markets table (from load_events) -> the bar table (BAR_COLUMNS).

    One row per (address, bar_start), continuous per address, sorted; see docs/INTERFACES.md
    for each column. Position statistics land in `bars.attrs["positions"]`."""
    iv = _interval_ms(bar_interval)
    if len(events) == 0:
        return pd.DataFrame({c: [] for c in BAR_COLUMNS})
    cat = events["address"]
    cat = cat if isinstance(cat.dtype, pd.CategoricalDtype) else cat.astype(str).astype("category")
    codes = cat.cat.codes.to_numpy().astype(np.int64)
    used = np.flatnonzero(np.bincount(codes, minlength=len(cat.cat.categories)))  # O(n), no sort
    names = np.asarray(cat.cat.categories.astype(str), dtype=object)[used]
    rank = np.argsort(names)
    addrs, remap = names[rank], np.zeros(len(cat.cat.categories), np.int64)
    remap[used[rank]] = np.arange(len(used))
    ac = remap[codes]  # address code in sorted-name order
    key = ac.astype(np.int64) * _BIG + events["t"].to_numpy()
    ev = events
    if np.any(key[1:] < key[:-1]):  # load_events already sorts by (address, t)
        order = np.argsort(key, kind="stable")
        ev, ac = events.iloc[order].reset_index(drop=True), ac[order]
    ac = ac.astype(np.int64)
    t, kind = ev["t"].to_numpy(), ev["kind"].to_numpy()
    mkt = ev["market"].to_numpy().astype(np.int64)
    mark = _ingestion_positions.marks(ev)
    pay_up, pay_src = _ingestion_positions.settlement_prices(markets, mark)
    led = _ingestion_positions.ledger(ev, markets, pay_up)
    led_ac = ac[np.clip(led["seq"].to_numpy(), 0, None)]
    m_ac = pd.Categorical(markets["address"].astype(str), categories=addrs).codes.astype(np.int64)
    addrs = addrs.astype(object)
    led_ac = np.where(led["seq"].to_numpy() >= 0, led_ac, m_ac[led["market"].to_numpy()])

    # timeline: per address, the bars of its events and of its settlements, continuous;
    # events are sorted by (address, t), so an address's first/last event bar is at its bounds
    ev_b, led_b = t - t % iv, led["t"].to_numpy() - led["t"].to_numpy() % iv
    bounds = np.searchsorted(ac, np.arange(len(addrs) + 1))  # every address has events
    first, last = ev_b[bounds[:-1]], ev_b[bounds[1:] - 1]
    np.minimum.at(first, led_ac, led_b)  # settlements (one per traded market and token)
    np.maximum.at(last, led_ac, led_b)
    nrows = (last - first) // iv + 1
    off = np.r_[0, np.cumsum(nrows)]
    n = int(off[-1])
    row_addr = np.repeat(np.arange(len(addrs)), nrows)
    row_start = first[row_addr] + (np.arange(n) - off[row_addr]) * iv
    ev_row = off[ac] + (t - t % iv - first[ac]) // iv
    led_row = off[led_ac] + (led["t"].to_numpy() - led["t"].to_numpy() % iv - first[led_ac]) // iv

    # token market data: events inside their own market's window, best source per bar
    ms, me = markets["start_ms"].to_numpy()[mkt], markets["end_ms"].to_numpy()[mkt]
    tok = (t >= ms) & (t < me) & (kind <= OHLCV)
    cls = np.select([kind == PRICE_CHANGE, kind == OHLCV], [0, 1], 2)
    best = np.full(n, 9)
    np.minimum.at(best, ev_row[tok], cls[tok])
    sel = tok & (cls == best[ev_row])
    c = {f: ev[f].to_numpy() for f in ("price", "size", "mid", "open", "high", "low", "close",
                                       "volume", "best_bid", "best_ask", "side", "outcome")}
    up_px = np.where(c["outcome"] == 0, c["price"], 1.0 - c["price"])
    si = np.flatnonzero(sel)  # the chosen source's events only (each OHLC pick on them alone)
    src, r, px_s = [kind[si] == PRICE_CHANGE, kind[si] == OHLCV], ev_row[si], up_px[si]
    bars = {"open": _agg(r, np.select(src, [c["mid"][si], c["open"][si]], px_s), n, "first"),
            "high": _agg(r, np.select(src, [c["mid"][si], c["high"][si]], px_s), n, "max"),
            "low": _agg(r, np.select(src, [c["mid"][si], c["low"][si]], px_s), n, "min"),
            "close": _agg(r, np.select(src, [c["mid"][si], c["close"][si]], px_s), n, "last")}
    oh, trw, pc = tok & (kind == OHLCV), tok & (kind == TRADE), tok & (kind == PRICE_CHANGE)
    has_oh = np.bincount(ev_row[oh], minlength=n) > 0
    bars["volume"] = np.where(has_oh, np.bincount(ev_row[oh], c["volume"][oh], minlength=n),
                              np.bincount(ev_row[trw], c["size"][trw], minlength=n))
    n_pc = np.bincount(ev_row[pc], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        bars["spread"] = np.bincount(ev_row[pc], (c["best_ask"] - c["best_bid"])[pc],
                                     minlength=n) / np.where(n_pc > 0, n_pc, np.nan)
    bars["has_data"] = ~np.isnan(bars["close"])

    # underlying: candles repeated across files of one address are used once
    ui = np.flatnonzero(kind == UNDERLYING)
    ui = ui[np.sort(np.unique(ac[ui] * _BIG + t[ui], return_index=True)[1])]
    r = ev_row[ui]
    for name, f, how in (("u_open", "open", "first"), ("u_high", "high", "max"),
                         ("u_low", "low", "min"), ("u_close", "close", "last")):
        bars[name] = _agg(r, c[f][ui], n, how)
    bars["u_volume"] = np.where(np.bincount(r, minlength=n) > 0,
                                np.bincount(r, c["volume"][ui], minlength=n), np.nan)
    bars["has_underlying"] = ~np.isnan(bars["u_close"])

    # the trader's fills
    tr = kind == TRADE
    r, cash = ev_row[tr], (c["price"] * c["size"])[tr]
    bars["n_trades"] = np.bincount(r, minlength=n).astype(np.int64)
    up_sign = np.where(c["outcome"][tr] == 0, 1.0, -1.0)
    bars["net_shares"] = np.bincount(r, c["side"][tr] * c["size"][tr] * up_sign, minlength=n)
    bars["buy_usdc"] = np.bincount(r, np.where(c["side"][tr] > 0, cash, 0.0), minlength=n)
    bars["sell_usdc"] = np.bincount(r, np.where(c["side"][tr] < 0, cash, 0.0), minlength=n)

    # positions: ledger deltas -> per-address levels at each bar's end
    o = np.lexsort((led["seq"].to_numpy(), led["settle"].to_numpy(), led["t"].to_numpy(),
                    led_ac))
    e_ac, e_row, lo = led_ac[o], led_row[o], led.iloc[o]
    up = lo["outcome"].to_numpy() == 0
    lv = {k: _level(d, e_ac, e_row, row_addr) for k, d in (
        ("inv_up", np.where(up, lo["dq"], 0.0)), ("inv_down", np.where(up, 0.0, lo["dq"])),
        ("cost_up", np.where(up, lo["dc"], 0.0)), ("cost_down", np.where(up, 0.0, lo["dc"])),
        ("gross_c", lo["dabs_c"].to_numpy()), ("gross_q", lo["dabs_q"].to_numpy()),
        ("realized", lo["realized"].to_numpy()))}
    end = {k: v[1] for k, v in lv.items()}
    bars["inv_up"], bars["inv_down"] = end["inv_up"], end["inv_down"]
    bars["inventory"] = end["inv_up"] - end["inv_down"]
    with np.errstate(invalid="ignore", divide="ignore"):
        bars["avg_entry_up"] = np.where(end["inv_up"] != 0, end["cost_up"] / end["inv_up"], np.nan)
        bars["avg_entry_down"] = np.where(end["inv_down"] != 0,
                                          end["cost_down"] / end["inv_down"], np.nan)
    bars["cost_basis"] = end["cost_up"] + end["cost_down"]
    new_addr = np.r_[True, row_addr[1:] != row_addr[:-1]]
    prev_g = np.where(new_addr, 0.0, np.r_[0.0, end["gross_c"][:-1]])
    bars["exposure_usdc"] = np.fmax(prev_g, _agg(e_row, lv["gross_c"][0], n, "max"))
    bars["realized_pnl"] = end["realized"]
    un = _ingestion_positions.unrealized_by_row(led, led_row, row_start, iv, mark)
    bars["unrealized_pnl"] = np.where(np.abs(un) < _EPS, 0.0, un)
    total = bars["realized_pnl"] + bars["unrealized_pnl"]
    bars["pnl"] = total - np.where(new_addr, 0.0, np.r_[0.0, total[:-1]])
    held = end["gross_q"] > _EPS
    entry = held & (new_addr | ~np.r_[False, held[:-1]])
    run_start = np.flatnonzero(entry)
    k = np.cumsum(entry) - 1
    since = np.arange(n) - (run_start[np.clip(k, 0, None)] if len(run_start) else 0)
    bars["bars_since_entry"] = np.where(held, since, -1).astype(np.int64)
    settled = np.zeros(n, bool)
    settled[led_row[led["settle"].to_numpy()]] = True
    bars["settled"] = settled

    # the market whose window contains bar_start (markets of the same address only)
    mo = np.lexsort((markets["start_ms"].to_numpy(), m_ac))
    mkey = m_ac[mo] * _BIG + markets["start_ms"].to_numpy()[mo]
    j = np.searchsorted(mkey, row_addr * _BIG + row_start, "right") - 1
    jj = mo[np.clip(j, 0, None)]
    inside = (j >= 0) & (m_ac[jj] == row_addr) & (row_start < markets["end_ms"].to_numpy()[jj])
    slug = np.where(inside, markets["slug"].astype(str).to_numpy(dtype=object)[jj], None)
    # what that market's Up token paid at its end: an outcome, for backtests, never for state
    settle_up = np.where(inside, pay_up[jj] if len(pay_up) else np.nan, np.nan)
    out = pd.DataFrame({"address": addrs[row_addr],
                        "bar_start": pd.to_datetime(row_start, unit="ms", utc=True),
                        "slug": slug, "settle_up": settle_up, **bars})[BAR_COLUMNS]
    traded = np.unique(led["market"].to_numpy()[led["settle"].to_numpy()])
    out.attrs["positions"] = {
        "oversold_trades": int(led["oversold"].sum()), "post_end_trades": int(led["post_end"].sum()),
        "markets_traded": len(traded),
        "settlement_source": {str(k): int(v) for k, v in Counter(pay_src[traded].tolist()).items()},
        "settled_pnl": float(bars["realized_pnl"][np.r_[off[1:] - 1]].sum())}
    return out


def forward_filled(bars: pd.DataFrame, column: str = "close") -> pd.Series:
    """`column` forward-filled within each address (a filled value is NOT data: has_data stays
    False there); for features that need a value on every bar."""
    return bars.groupby("address", sort=False)[column].ffill()


# ---------------------------------------------------------------- stage
def run(cfg: IngestionConfig) -> pd.DataFrame:
    """Load, validate and bar the data dir; write {out_dir}/ingestion_report.json atomically;
    return the bar table. Raises IngestionError on user errors (one-line message)."""
    _interval_ms(cfg.bar_interval)  # fail on a bad flag before reading any file
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
