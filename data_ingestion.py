"""Stage 1, ingestion: a trader's price files -> a validated event table and the bar table.

Promise: `run(cfg)` reads every `btc-*_prices.json` and every `*trades*.json` data-api dump
under `cfg.data_dir` and validates each event (DESIGN.md "Input schema"): an invalid event is
dropped under the first check it fails, an unusable file is quarantined or skipped with its
reason, the user's files are never moved. It always writes `{out_dir}/ingestion_report.json`
(atomically; read = used + dropped per file and in total; the first bad value of each reason is
named with its file, field and value), also when no file is usable (IngestionError then names
the report). It returns the bar table of docs/INTERFACES.md: one row per (address, bar_start),
continuous from the bar of the trader's first event to the bar of the last (or of the last
settlement), with the Up-token mid OHLC, the underlying's bar, the trader's fills and Up/Down
average-cost positions with settlement (_ingestion_positions.py). `main()` also writes
`{out_dir}/bars.parquet`.

No-leakage rule: row t describes only its own interval [bar_start, bar_start + interval): each
column of row t is a function of events with time < bar_start + interval (marks are the last
before the bar's end, settlement comes from `resolution` or the last mark before the market's
end), so cutting all events after T changes no row that ends at or before T. The one-bar shift
that makes the state of bar t see only events < bar_start is state_features'.

Run alone: python data_ingestion.py --data_dir downloads/merged_trades --bar_interval 1min

Decisions where the issue is silent:
- Address: a file's folder name, a dump record's proxyWallet, lower-cased (0xAAA = 0xaaa). A
  price file whose `address` names another trader keeps its folder's, listed in
  report["address_mismatches"]. Files are parsed in path order by a process pool over batches
  of about BATCH_BYTES of JSON (`--workers 1`: in this process).
- Links: a symlinked file is read when its target lies inside data_dir, each real file once (a
  second path is skipped `duplicate_path`); a symlinked folder is never walked (inside data_dir
  its real folder is read anyway: `linked_folder`). Dangling links (`dangling_symlink`), loops
  (`symlink_loop`) and links out of data_dir (`symlink_outside_data_dir`) are skipped.
- Bytes: a file over `--max_file_mb` is quarantined `too_large` unread; a UTF-8 BOM, UTF-16 and
  UTF-32 (BOM, or UTF-16 told by its NUL bytes) are decoded (else `bad_encoding`); nesting past
  orjson's 1,024 levels is `too_deeply_nested`; JSON orjson refuses is retried with the stdlib
  json (NaN, Infinity) before it is quarantined `invalid_json`.
- Markets: a slug other than `btc-updown-15m-<start>` is skipped (`not_btc_15m`), so is a start
  off the 15-minute grid (`slug_off_grid`) or outside 2020-01-01 .. now + 366 days
  (`slug_out_of_range`). A `t` below 1e11 is seconds, from 1e14 to 1e17 microseconds (converted,
  counted in "time_units"); an event outside [start - WINDOW_SLACK_S, start + 900 s +
  WINDOW_SLACK_S) is dropped `outside_window`, so no input stretches a trader's bars beyond the
  span of its markets. A file whose events are all invalid still counts as its market.
- Several files of one (address, slug) are one market (report["overlapping_markets"]): the
  first price file in path order owns it, else the first dump. A later file adds only fills
  whose id is new, and only when every fill of the market has an id (then the id decides
  exactly: a repeat is `duplicate_id`); its other events are `duplicate_market`.
- Ids: `id`, else transaction hash + log index (a hash alone is no id: one transaction holds
  several fills). Events identical apart from the id are kept and counted (identical_looking).
- Bars: UTC, aligned to the epoch, any fixed pandas offset. Token data counts for a bar only
  inside its own market's window; per bar the best source wins (price_change mids, else token
  ohlcv, else the trader's fill prices as Up prices: p for Up, 1 - p for Down); an ohlcv sits at
  its open time; underlying candles repeated in files of one address count once. `settle_up` is
  NaN in a market with neither `resolution` nor any Up-token mark.
"""

from __future__ import annotations

import argparse
import codecs
import json
import logging
import operator
import os
import re
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from itertools import chain, repeat
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from tqdm import tqdm

import _ingestion_positions as positions
from common import UserError, add_config_args, atomic_write, field_docs

__all__ = ["IngestionConfig", "IngestionError", "PRICE_FILE_GLOB", "DATA_API_GLOB",
           "MARKET_SECONDS", "WINDOW_SLACK_S", "BAR_COLUMNS", "POSITION_COLUMNS", "KIND_NAMES",
           "ROLE_NAMES", "REASONS", "load_price_file", "load_events", "quotes_and_fills",
           "build_bars", "convert_data_api_trades", "forward_filled", "run", "main",
           "atomic_write", "add_config_args", "field_docs"]


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
    max_file_mb: float = 64.0
    """Files larger than this (MiB) are quarantined unread: bounds the memory one file takes."""


class IngestionError(UserError):
    """A user error of ingestion (no usable file, a bad flag); the message is one line."""


log = logging.getLogger("data_ingestion")
PRICE_FILE_GLOB = "btc-*_prices.json"
"""Price files, searched recursively under data_dir; the parent folder name is the address."""
DATA_API_GLOB = "*trades*.json"
"""Polymarket data-api /trades dumps (a top-level JSON list), also searched under data_dir."""
MARKET_SECONDS = 900
"""Length of a BTC Up/Down market window; the slug's number is the window start."""
WINDOW_SLACK_S = 120
"""Seconds before a window's start and after its end where its events still count (clock
skew, fills booked after the close: the real data holds fills up to 41 s after it)."""
FIRST_START = 1_577_836_800
"""2020-01-01 UTC (s): no BTC 15-minute market starts earlier."""
BATCH_BYTES = 4 << 20
"""JSON bytes parsed at once: bounds the dicts alive in one process (about 10x the bytes)."""
SLUG_RE = re.compile(r"^btc-updown-15m-(\d{9,11})$")
TRADE, PRICE_CHANGE, OHLCV, UNDERLYING = 0, 1, 2, 3
KIND_NAMES = ("trade", "price_change", "ohlcv", "underlying")
ROLE_NAMES = ("unknown", "maker", "taker")
"""A fill's liquidity role by its `role` code (0 on every event that is not a fill)."""
ARRAY_FIELDS = ("t", "kind", "price", "size", "side", "outcome", "role", "usdc", "best_bid",
                "best_ask", "mid", "open", "high", "low", "close", "volume")
EVENT_COLUMNS = ["address", "slug", "market", *ARRAY_FIELDS]
"""Event table: kind (KIND_NAMES code); side +1 BUY / -1 SELL; outcome 0 Up / 1 Down; role
(ROLE_NAMES code); a field is NaN (0) off its own kind; market = markets-table row."""
REASONS = ("used", "missing_type", "unknown_type", "bad_time", "outside_window", "bad_price",
           "bad_size", "bad_side", "bad_outcome", "usdc_mismatch", "bad_quote", "crossed_book",
           "bad_mid", "bad_ohlcv", "bad_volume", "duplicate_id")
"""Event drop reasons in the order they are checked (index 0 = used)."""
_SHOWN = {"missing_type": "type", "unknown_type": "type", "bad_time": "t", "outside_window": "t",
          "usdc_mismatch": "usdc price size", "bad_quote": "best_bid best_ask",
          "crossed_book": "best_bid best_ask", "bad_mid": "mid best_bid best_ask",
          "bad_ohlcv": "open high low close", "duplicate_id": "id transactionHash logIndex"}
"""The fields a drop reason's message shows (else the reason's own: bad_price -> price)."""
_TYPES = {"trade": TRADE, "price_change": PRICE_CHANGE, "ohlcv": OHLCV, "bar": OHLCV,
          "candle": OHLCV}
_FIELDS = {TRADE: ("price", "size", "usdc"), PRICE_CHANGE: ("best_bid", "best_ask", "mid"),
           OHLCV: ("open", "high", "low", "close", "volume")}
_OPTIONAL = ("usdc", "mid", "volume")
_ALIASES = {"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v", "size": "shares",
            "best_bid": "bid", "best_ask": "ask"}
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"),
         (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
POSITION_COLUMNS = [
    "n_trades", "net_shares", "buy_usdc", "sell_usdc", "inv_up", "inv_down", "inventory",
    "avg_entry_up", "avg_entry_down", "cost_basis", "exposure_usdc", "realized_pnl",
    "unrealized_pnl", "pnl", "bars_since_entry", "settled"]
BAR_COLUMNS = [
    "address", "bar_start", "slug", "settle_up", "open", "high", "low", "close", "volume",
    "spread", "has_data", "u_open", "u_high", "u_low", "u_close", "u_volume", "has_underlying",
    *POSITION_COLUMNS]
"""The bar table's columns, in order (docs/INTERFACES.md says what each holds)."""


# ---------------------------------------------------------------- files and documents
def _find_files(data_dir: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(every price file and dump under data_dir in path order, each real file once;
    [(path, reason)] of the links and second paths that are not read)."""
    root, found, refused, todo = os.path.realpath(data_dir), [], [], [os.fspath(data_dir)]
    while todo:  # an iterative walk that never enters a symlinked folder, so nothing loops
        folder = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            refused.append((folder, f"unreadable_folder: {e.strerror or e}"))
            continue
        for e in entries:
            real = None  # a walked path is real below the root; a link's is looked up
            if e.is_symlink():
                try:
                    os.stat(e.path)  # follows the link: ELOOP or ENOENT say what is wrong
                except OSError as err:
                    refused.append((e.path, "symlink_loop" if err.errno == 40 else
                                    "dangling_symlink"))
                    continue
                real = os.path.realpath(e.path)
                out = os.path.commonpath([root, real]) != root
                if out or e.is_dir():
                    up = os.path.commonpath([real, os.path.realpath(folder)]) == real
                    refused.append((e.path, "symlink_outside_data_dir" if out else
                                    "symlink_loop" if up else "linked_folder"))
                    continue
            elif e.is_dir():
                todo.append(e.path)
                continue
            if fnmatchcase(e.name, PRICE_FILE_GLOB) or fnmatchcase(e.name, DATA_API_GLOB):
                found.append((e.path, real or os.path.join(root, os.path.relpath(e.path,
                                                                                  data_dir))))
    first: dict[str, str] = {}
    for p, real in sorted(found):  # a file reached twice is read under its first path
        first.setdefault(real, p)
    refused += [(p, f"duplicate_path: {first[real]}") for p, real in found if first[real] != p]
    return sorted(first.values()), sorted(refused)


def _read_json(path: str, max_bytes: int) -> tuple[object, str | None, str | None]:
    """(document, None, encoding) or (None, quarantine reason, encoding); never raises.
    encoding: None for plain UTF-8."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(max_bytes + 1) if size <= max_bytes else b""
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}", None
    if max(size, len(raw)) > max_bytes:  # checked on the bytes too: a file may grow
        return None, f"too_large: {max(size, len(raw))} bytes > {max_bytes}", None
    enc = next((name for bom, name in _BOMS if raw.startswith(bom)), None)
    if enc is None and len(raw) >= 2 and (raw[0] == 0) != (raw[1] == 0):
        enc = "utf-16-be" if raw[0] == 0 else "utf-16-le"  # JSON opens with ASCII + a NUL
    try:
        text = raw.decode(enc) if enc else raw
        return orjson.loads(text), None, enc
    except UnicodeDecodeError as e:
        return None, f"bad_encoding: not {enc} ({e.reason} at byte {e.start})", enc
    except orjson.JSONDecodeError as e:
        if "recursion" in str(e):
            return None, "too_deeply_nested: over 1024 levels", enc
        why = f"invalid_json: {str(e)[:120]}"
    try:  # NaN / Infinity literals orjson refuses; non-finite values then fail per event
        return json.loads(text), None, enc
    except RecursionError:
        return None, "too_deeply_nested", enc
    except (ValueError, UnicodeDecodeError):
        return None, why, enc


def convert_data_api_trades(records: list) -> list[dict]:
    """Polymarket data-api /trades records -> seed-format file dicts {"slug", "address",
    "prices": [trade events]}, one per (lower-cased proxyWallet, slug) in order of first
    appearance, no resolution (the data-api has none). A numeric `timestamp` is seconds (>= 1e11:
    ms); fields are copied as they are and validated when parsed. Records that are not objects
    or have no str slug are left out (the loader counts them)."""
    files: dict[tuple, dict] = {}
    for r in records:  # one step per record: a dump holds at most thousands
        if type(r) is not dict or type(r.get("slug")) is not str:
            continue
        ts = r.get("timestamp")
        ev = {"type": "trade", "t": ts * (1 if abs(ts) >= 1e11 else 1000)
              if type(ts) in (int, float) else ts, "price": r.get("price"), "side": r.get("side"),
              "size": r.get("size"), "outcome": r.get("outcome"),
              "transactionHash": r.get("transactionHash"), "asset": r.get("asset")}
        ev.update({k: r[a] for k, a in (("usdc", "usdcSize"), ("id", "id"), ("logIndex",
                   "logIndex"), ("role", "role")) if r.get(a) is not None})
        addr = r["proxyWallet"].lower() if type(r.get("proxyWallet")) is str else None
        files.setdefault((addr, r["slug"]), {"slug": r["slug"], "address": addr, "prices": []}
                         )["prices"].append(ev)
    return list(files.values())


def _markets_of(doc: object, folder: str, rep: dict, now_s: float) -> list[dict]:
    """The markets of one document after its top-level and slug checks; what it leaves out is
    counted in `rep` (read, dropped, skipped_markets, notes, status)."""
    if isinstance(doc, list):  # a data-api /trades dump
        good = [r for r in doc if type(r) is dict and type(r.get("slug")) is str]
        rep["read"] += len(doc) - len(good)
        rep["dropped"]["not_a_trade_record"] += len(doc) - len(good)
        return [{**u, "dump": True} for d in convert_data_api_trades(good)
                for u in _markets_of({**d, "address": None}, d["address"] or folder, rep, now_s)]
    if not isinstance(doc, dict):
        rep["status"], rep["reason"] = "quarantined", "not_a_json_object"
        return []
    prices, slug = doc.get("prices"), doc.get("slug")
    n = len(prices) if isinstance(prices, list) else 0
    rep["read"] += n
    m = SLUG_RE.match(slug) if type(slug) is str else None
    start = int(m.group(1)) if m else 0
    why = ("missing_slug" if type(slug) is not str else "prices_not_a_list" if not
           isinstance(prices, list) else "not_btc_15m" if m is None else "slug_off_grid" if
           start % MARKET_SECONDS else "slug_out_of_range" if not
           FIRST_START <= start <= now_s + 366 * 86400 else None)
    if why:
        rep["dropped"][why] += n
        if why in ("missing_slug", "prices_not_a_list"):
            rep["status"], rep["reason"] = "quarantined", why
            return []
        rep["skipped_markets"][slug] += n
        rep["skip_reason"] = rep.get("skip_reason") or why
        if m:
            rep["notes"].append(f"{slug}: {why}, its window would start at "
                                f"{pd.Timestamp(min(start, 4e9), unit='s')} UTC; skipped")
        return []
    events = prices if set(map(type, prices)) <= {dict} else [e for e in prices if type(e) is dict]
    rep["dropped"]["not_object"] += n - len(events)
    res = doc.get("resolution")
    res_ok = res.capitalize() if type(res) is str and res.lower() in ("up", "down") else None
    if res is not None and res_ok is None:
        rep["notes"].append(f"{slug}: resolution {str(res)[:40]!r} ignored")
    said = doc.get("address")
    if type(said) is str and said.lower() != folder:
        rep["address_mismatch"] = said[:60]
        rep["notes"].append(f"{slug}: address {said[:60]!r} is not its folder's; folder used")
    return [{"address": folder, "slug": slug, "start_s": start, "resolution": res_ok,
             "events": events, "dump": False}]


# ---------------------------------------------------------------- events
def _get(events: list, key: str) -> list:
    """Values of `key` per event dict (None where absent), read at C speed."""
    return list(map(dict.get, events, repeat(key)))


def _given(vals: list) -> np.ndarray:
    """(n,) bool: the value is neither absent nor null."""
    return np.fromiter(map(operator.is_not, vals, repeat(None)), bool, len(vals))


def _floats(vals: list) -> np.ndarray:
    """(n,) float64 of JSON numbers and numeric strings; NaN for null, bool or anything else. A
    column of plain numbers converts in C, any other value by value."""
    if set(map(type, vals)) <= {int, float, type(None)}:
        try:
            return np.array(vals, dtype=np.float64)
        except OverflowError:  # an integer beyond float range
            pass
    return np.fromiter(map(_float_or_nan, vals), np.float64, len(vals))


def _float_or_nan(v: object) -> float:
    try:
        return float(v) if type(v) in (int, float, str) else np.nan
    except (ValueError, OverflowError):
        return np.nan


def _codes(vals: list, names: dict, missing: int, unknown: int) -> np.ndarray:
    """(n,) int codes of case-insensitive names ({lower-case name: code}); `missing` for null or
    absent, `unknown` for any other value. lower, UPPER and Capitalised are looked up at C
    speed; pandas lower-cases the rest."""
    table = {None: missing, **{f(k): v for k, v in names.items()
                               for f in (str.lower, str.upper, str.capitalize)}}
    try:
        out = np.fromiter(map(table.get, vals, repeat(-99)), np.int64, len(vals))
    except TypeError:  # an unhashable value (a list, an object): all of them the slow way
        out = np.full(len(vals), -99, np.int64)
    miss = np.flatnonzero(out == -99)
    if len(miss):
        s = pd.Series([vals[i] for i in miss.tolist()], dtype=object)  # the misses only
        hit = s[np.fromiter(map(isinstance, s, repeat(str)), bool, len(s))].str.lower().map(
            names).dropna()
        out[miss] = np.where(s.isna().to_numpy(), missing, unknown)
        out[miss[hit.index.to_numpy()]] = hit.to_numpy(np.int64)
    return out


def _first_of(events: list, names: tuple, keys: set) -> pd.Series:
    """(n,) object: per event the value of the first of `names` it holds (not null)."""
    out = pd.Series(_get(events, names[0]), dtype=object)
    for k in (k for k in names[1:] if k in keys):
        out = out.where(out.notna(), pd.Series(_get(events, k), dtype=object))
    return out


def _validate(events: list, unit: np.ndarray, start_ms: np.ndarray) -> dict:
    """Validate the dict events of many markets at once (unit: (n,) market of each event,
    start_ms: (n,) its window start) -> {"reason": (n,) REASONS index, "cols": the normalised
    ARRAY_FIELDS, "ids": (n,) object or None, "ms": (n,) t in ms, "time_unit": (n,) 0 ms,
    1 s, 2 us, -1 none}.
    Each kind's fields are read on that kind's events only."""
    n, keys = len(events), set().union(*events)  # every field name: skip absent optional ones
    raw_type = _get(events, "type")
    kind, t = _codes(raw_type, _TYPES, -2, -1), _floats(_get(events, "t"))
    cols = {f: np.full(n, np.nan) for f in ARRAY_FIELDS if f not in ("t", "kind")}
    given = {f: np.zeros(n, bool) for f in _OPTIONAL}
    side, outcome, role = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    ids = pd.Series([None] * n, dtype=object) if keys & {"id", "transactionHash", "tx_hash"} \
        else None
    for k, fields in _FIELDS.items():
        idx = np.flatnonzero(kind == k)
        sub = list(map(events.__getitem__, idx.tolist()))
        for f in fields:  # the canonical name wins; its alias fills where it is absent or null
            vals, alias = _get(sub, f), _ALIASES.get(f) in keys
            cols[f][idx] = x = _floats(vals)
            has = _given(vals) if f in _OPTIONAL or alias else None
            if alias:
                va = _get(sub, _ALIASES[f])
                cols[f][idx] = np.where(has, x, _floats(va))
                has |= _given(va)
            if f in _OPTIONAL:
                given[f][idx] = has
        if k == TRADE and len(idx):
            side[idx] = _codes(_get(sub, "side"), {"buy": 1, "sell": -1}, 0, 0)
            outcome[idx] = _codes(_get(sub, "outcome"), {"up": 0, "down": 1}, 0, -1)
            for key in ("role", "liquidity"):  # unknown (0) where absent or unrecognised
                if key in keys:
                    got = _codes(_get(sub, key), {"maker": 1, "taker": 2}, 0, 0)
                    role[idx] = np.where(role[idx] == 0, got, role[idx])
            if ids is not None:  # fills: transaction hash + log index
                tx = _first_of(sub, ("transactionHash", "tx_hash"), keys)
                ix = _first_of(sub, ("index", "logIndex", "log_index"), keys)
                ids.iloc[idx] = (tx.astype(str) + ":" + ix.astype(str)).where(
                    tx.notna() & ix.notna(), None).to_numpy()
    if "id" in keys:  # an explicit id (any kind) wins
        raw = pd.Series(_get(events, "id"), dtype=object)
        ids = ids.where(raw.isna(), raw.astype(str))
    with np.errstate(invalid="ignore"):  # seconds below 1e11, ms below 1e14, us below 1e17
        t_unit = np.select([t <= 0, t < 1e11, t < 1e14, t < 1e17], [-1, 1, 0, 2], -1)
    ms = np.floor(np.select([t_unit == 1, t_unit == 2], [t * 1000.0, t / 1000.0], t))
    reason = np.zeros(n, np.int8)

    def fail(mask: np.ndarray, name: str) -> None:  # the first failing check names the reason
        reason[(reason == 0) & mask] = REASONS.index(name)

    p, s, u, b, a, o, h, lo, c, v = (cols[f] for f in (
        "price", "size", "usdc", "best_bid", "best_ask", "open", "high", "low", "close", "volume"))
    is_tr, is_pc, is_oh = kind == TRADE, kind == PRICE_CHANGE, kind == OHLCV
    slack = WINDOW_SLACK_S * 1000
    with np.errstate(invalid="ignore", over="ignore"):  # NaN compares False: it fails
        fail(kind == -2, "missing_type")
        fail(kind == -1, "unknown_type")
        fail(~np.isfinite(t) | (t_unit < 0), "bad_time")
        fail((ms < start_ms - slack) | (ms >= start_ms + MARKET_SECONDS * 1000 + slack),
             "outside_window")
        fail(is_tr & ~((p > 0) & (p < 1)), "bad_price")
        fail(is_tr & ~((s > 0) & (s < 1e12)), "bad_size")
        fail(is_tr & (side == 0), "bad_side")
        fail(is_tr & (outcome == -1), "bad_outcome")
        fail(is_tr & given["usdc"] & ~(np.abs(u - p * s) <= 0.01 * p * s + 0.01), "usdc_mismatch")
        fail(is_pc & ~((b >= 0) & (b <= 1) & (a >= 0) & (a <= 1)), "bad_quote")
        fail(is_pc & (b > a), "crossed_book")
        mid = np.where(given["mid"], cols["mid"], (b + a) / 2)
        fail(is_pc & ~((mid >= b - 1e-9) & (mid <= a + 1e-9)), "bad_mid")
        px = np.stack([o, h, lo, c])  # (4, n)
        under = ((px > 1) & (px < 1e12)).all(axis=0)  # the underlying's (BTC/USD) candle
        shape = (lo <= np.minimum(o, c)) & (h >= np.maximum(o, c))
        fail(is_oh & ~((((px > 0) & (px < 1)).all(axis=0) | under) & shape), "bad_ohlcv")
        fail(is_oh & given["volume"] & ~((v >= 0) & (v < 1e15)), "bad_volume")
    if ids is not None:  # an id repeated among the valid events of one market
        has = (reason == 0) & ids.notna().to_numpy()
        dup = pd.DataFrame({"u": unit[has], "id": ids[has].to_numpy()}).duplicated().to_numpy()
        reason[np.flatnonzero(has)[dup]] = REASONS.index("duplicate_id")
    cols.update(t=np.where(reason == 0, ms, 0).astype(np.int64),
                kind=np.where(is_oh & under, UNDERLYING, kind).astype(np.int8),
                side=side.astype(np.int8), outcome=np.where(is_tr, outcome, 0).astype(np.int8),
                role=role.astype(np.int8), mid=np.where(is_pc, mid, np.nan),
                volume=np.where(is_oh, np.where(given["volume"], v, 0.0), np.nan))
    return {"reason": reason, "cols": cols, "ids": None if ids is None else ids.to_numpy(),
            "ms": ms, "time_unit": t_unit, "type": raw_type}


# ---------------------------------------------------------------- files -> markets
def _report(path: str, address: str) -> dict:
    """A file's report: counts (read == used + sum(dropped)), status, reason, notes."""
    return {"path": path, "address": address, "status": "used", "reason": None, "slugs": [],
            "read": 0, "used": 0, "dropped": Counter(), "duplicate_id": 0,
            "identical_looking": 0, "unknown_types": Counter(), "skipped_markets": Counter(),
            "time_units": Counter(), "examples": {}, "notes": []}


def _parse_files(jobs: list[tuple[str, str]], max_bytes: int) -> dict:
    """Read and validate files [(path, folder address)]; never raises (a pool task). ->
    {"cols": the used events' ARRAY_FIELDS + unit sorted by (unit, t), + fid: the fills' ids;
    "units": one dict per market found; "reports": one per file}."""
    try:
        return _parse_batch(jobs, max_bytes)
    except Exception as e:  # noqa: BLE001 - a bug must cost one file, never the run
        if len(jobs) > 1:
            return _concat([_parse_files([j], max_bytes) for j in jobs])
        rep = {**_report(*jobs[0]), "status": "quarantined",
               "reason": f"parse_error: {type(e).__name__}: {e}"[:200]}
        return {**_parse_batch([], max_bytes), "reports": [rep]}


def _parse_batch(jobs: list[tuple[str, str]], max_bytes: int) -> dict:
    reps, units, now_s = [], [], time.time()
    for path, folder in jobs:
        reps.append(rep := _report(path, folder))
        doc, why, enc = _read_json(path, max_bytes)
        if enc:
            rep["encoding"] = enc
        if why:
            rep["status"], rep["reason"] = "quarantined", why
        else:
            units += [{**u, "file": len(reps) - 1, "path": path}
                      for u in _markets_of(doc, folder, rep, now_s)]
    lens = np.array([len(u["events"]) for u in units], dtype=np.int64)
    unit = np.repeat(np.arange(len(units)), lens)  # (n,) market of each event
    first_event = np.r_[0, np.cumsum(lens)]
    events = list(chain.from_iterable(u.pop("events") for u in units))
    v = _validate(events, unit, np.array([u["start_s"] for u in units], np.int64)[unit] * 1000)
    reason, cols = v["reason"], v["cols"]
    ok = np.flatnonzero(reason == 0)
    ok = ok[np.lexsort((cols["t"][ok], unit[ok]))]  # (used,) by (market, t), stable
    out = {**{f: cols[f][ok] for f in ARRAY_FIELDS}, "unit": unit[ok].astype(np.int32)}
    fills = np.flatnonzero(out["kind"] == TRADE)
    out["fid"] = np.full(len(fills), None, object) if v["ids"] is None else v["ids"][ok[fills]]
    # per market: counts by reason, events equal in every field but the id, fills with ids
    counts = np.bincount(unit * len(REASONS) + reason, minlength=len(units) * len(REASONS)
                         ).reshape(len(units), len(REASONS))
    same = np.zeros(len(ok), bool)  # candidates: runs of one (market, t), adjacent (sorted)
    run = (out["unit"][1:] == out["unit"][:-1]) & (out["t"][1:] == out["t"][:-1])
    cand = np.flatnonzero(np.r_[run, False] | np.r_[False, run])
    same[cand] = pd.DataFrame({f: out[f][cand] for f in out if f != "fid"}).duplicated().to_numpy()
    ident = np.bincount(out["unit"][same], minlength=len(units))
    no_id = np.bincount(out["unit"][fills[pd.isna(out["fid"])]], minlength=len(units))
    for i, u in enumerate(units):  # one step per market
        rep = reps[u["file"]]
        rep["used"] += int(counts[i, 0])
        rep["dropped"].update({REASONS[r]: int(counts[i, r]) for r in range(1, len(REASONS))})
        rep["duplicate_id"] += int(counts[i, REASONS.index("duplicate_id")])
        rep["identical_looking"] += int(ident[i])
        rep["slugs"].append(u["slug"])
        u["all_ids"] = bool(no_id[i] == 0)
    # the first bad value of each (market, reason): slug, event number, field = value
    bad = np.flatnonzero(reason > 0)
    first = pd.DataFrame({"u": unit[bad], "r": reason[bad], "i": bad}).drop_duplicates(["u", "r"])
    for m, r, i in first.itertuples(index=False):
        ev, name = events[i], REASONS[r]
        shown = ", ".join(f"{f} = {str(ev.get(f, ev.get(_ALIASES.get(f), 'missing')))[:40]!r}"
                          for f in _SHOWN.get(name, name[4:]).split())
        if name == "outside_window":  # say how the time was read
            shown += (f" read as {('ms', 's', 'us')[v['time_unit'][i]]}: "
                      f"{np.datetime64(int(v['ms'][i]), 'ms')} UTC, the window with its slack "
                      f"is {np.datetime64(units[m]['start_s'] - WINDOW_SLACK_S, 's')} .. "
                      f"{np.datetime64(units[m]['start_s'] + MARKET_SECONDS + WINDOW_SLACK_S, 's')}")
        reps[units[m]["file"]]["examples"].setdefault(
            name, f"{units[m]['slug']} event {i - first_event[m]}: {shown}")
    # per file: times given in seconds or microseconds, unknown type names (both rare)
    file_of = np.array([u["file"] for u in units], dtype=np.int64)[unit]  # (n,)
    conv = np.flatnonzero((reason == 0) & (v["time_unit"] > 0))  # converted, used
    unknown = np.flatnonzero(cols["kind"] == -1)
    for key, rows, names in (
            ("time_units", conv, np.array(["s", "us"])[v["time_unit"][conv] - 1]),
            ("unknown_types", unknown, [str(v["type"][i])[:40] for i in unknown.tolist()])):
        for (f, k), cnt in pd.DataFrame({"f": file_of[rows], "k": names}).value_counts().items():
            reps[f][key][k] += int(cnt)
    for rep in reps:
        if rep["status"] == "used" and not rep["slugs"]:
            rep["status"], rep["reason"] = "skipped", rep.get("skip_reason") or "no_market"
        rep.pop("skip_reason", None)
    return {"cols": out, "units": units, "reports": reps}


def _concat(parts: list[dict]) -> dict:
    """Parse results in order -> one (markets and files renumbered). Column by column, each
    part's column freed once copied, so at most one column is held twice."""
    n_units = np.cumsum([0] + [len(p["units"]) for p in parts]).tolist()
    n_files = np.cumsum([0] + [len(p["reports"]) for p in parts]).tolist()
    for p, du, df in zip(parts, n_units, n_files, strict=False):
        p["cols"]["unit"] = p["cols"]["unit"] + du
        for u in p["units"]:
            u["file"] += df
    return {"cols": {k: np.concatenate([p["cols"].pop(k) for p in parts]) for k in
                     list(parts[0]["cols"])},
            "units": [u for p in parts for u in p["units"]],
            "reports": [r for p in parts for r in p["reports"]]}


def _assemble(parsed: dict) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Parsed files -> (events, markets, overlapping markets): one market per (address, slug)
    (module docstring, "Several files"); the events a later file cannot add are moved to
    duplicate_market / duplicate_id in its file's report."""
    cols, units, reps = parsed["cols"], parsed["units"], parsed["reports"]
    um = pd.DataFrame({k: [u[k] for u in units] for k in ("address", "slug", "dump", "file",
                                                          "all_ids", "resolution")})
    # rank 0 owns the market (a price file before a dump); markets in their owners' path order
    um["rank"] = um.sort_values("dump", kind="stable").groupby(["address", "slug"]).cumcount()
    key = pd.MultiIndex.from_frame(um[["address", "slug"]])
    owners = np.flatnonzero(um["rank"].to_numpy() == 0)
    um["market"] = key[owners].get_indexer(key)
    market, later = um["market"].to_numpy()[cols["unit"]], um["rank"].to_numpy()[cols["unit"]]
    overlaps = []
    if later.any():
        all_ids = um.groupby("market")["all_ids"].all().to_numpy()
        keep = (later == 0) | ((cols["kind"] == TRADE) & all_ids[market])
        fills = np.flatnonzero(cols["kind"] == TRADE)  # (fills,) rows, aligned with fid
        has = pd.notna(cols["fid"]) & keep[fills]
        order = np.argsort(later[fills[has]], kind="stable")  # the owner's fills first
        rows, ids = fills[has][order], cols["fid"][has][order]
        dup = np.zeros(len(keep), bool)
        dup[rows] = pd.DataFrame({"m": market[rows], "id": ids}).duplicated().to_numpy()
        for why, mask in (("duplicate_market", ~keep), ("duplicate_id", dup)):
            for f, n in Counter(um["file"].to_numpy()[cols["unit"][mask]].tolist()).items():
                reps[f]["used"] -= n
                reps[f]["dropped"][why] += n
                reps[f]["duplicate_id"] += n if why == "duplicate_id" else 0
                reps[f]["examples"].setdefault(why, f"{n} events of a market another file owns")
        cols = {k: v[keep & ~dup] for k, v in cols.items() if k != "fid"}
        market = um["market"].to_numpy()[cols["unit"]]
        for (addr, slug), g in um[key.duplicated(keep=False)].groupby(["address", "slug"]):
            overlaps.append({"address": addr, "slug": slug,
                             "owner": reps[int(g.loc[g["rank"] == 0, "file"].iloc[0])]["path"],
                             "paths": [reps[f]["path"] for f in g["file"]]})
    res = um.sort_values(["market", "rank"]).groupby("market")["resolution"].first()
    own = [units[i] for i in owners]  # the owner's resolution, else a later file's
    mk = pd.DataFrame({
        "address": [u["address"] for u in own], "slug": [u["slug"] for u in own],
        "start_ms": np.array([u["start_s"] for u in own], dtype=np.int64) * 1000,
        "resolution": [r if isinstance(r, str) else None for r in
                       res.reindex(range(len(own))).tolist()],
        "path": [u["path"] for u in own], "n_events": np.bincount(market, minlength=len(own))})
    mk["end_ms"] = mk["start_ms"] + MARKET_SECONDS * 1000
    addr, slug = pd.Categorical(mk["address"]), pd.Categorical(mk["slug"])  # sorted by name
    events = pd.DataFrame({
        "address": pd.Categorical.from_codes(addr.codes[market], addr.categories),
        "slug": pd.Categorical.from_codes(slug.codes[market], slug.categories),
        "market": market.astype(np.int32), **{f: cols[f] for f in ARRAY_FIELDS}}, copy=False)
    a_code, t = addr.codes[market].astype(np.int64), cols["t"]
    if np.any((np.diff(a_code) < 0) | ((np.diff(a_code) == 0) & (np.diff(t) < 0))):
        events = events.iloc[np.lexsort((t, a_code))].reset_index(drop=True)  # (address, t)
    return events, mk, overlaps


def _summary(reps: list[dict], refused: list, overlaps: list, cfg: IngestionConfig) -> dict:
    """The report: the files' reports (JSON-ready, reconciliation checked) and their totals."""
    reps = reps + [{**_report(p, ""), "status": "skipped", "reason": why} for p, why in refused]
    sums = {k: Counter() for k in ("dropped", "unknown_types", "skipped_markets", "time_units")}
    examples = {}
    for rep in reps:
        for k, total in sums.items():
            rep[k] = dict(sorted((+rep[k]).items()))  # + drops the zero counts
            total.update(rep[k])
        rep["reconciles"] = rep["read"] == rep["used"] + sum(rep["dropped"].values())
        for why, text in rep["examples"].items():
            examples.setdefault(why, f"{rep['path']}: {text}")
    status = Counter(r["status"] for r in reps)
    totals = {**{k: sum(r[k] for r in reps) for k in ("read", "used", "duplicate_id",
                                                      "identical_looking")},
              "dropped": dict(sorted(sums["dropped"].items())),
              "dropped_total": sum(sums["dropped"].values()),
              "unknown_types": dict(sums["unknown_types"]), "time_units": dict(sums["time_units"]),
              "files_found": len(reps), **{f"files_{s}": status[s] for s in
                                           ("used", "quarantined", "skipped")}}
    listed = {s: [{"path": r["path"], "reason": r["reason"]} for r in reps if r["status"] == s]
              for s in ("quarantined", "skipped")}
    return {"config": asdict(cfg), "window_slack_s": WINDOW_SLACK_S, "totals": totals,
            "reconciles": totals["read"] == totals["used"] + totals["dropped_total"]
            and all(r["reconciles"] for r in reps), **listed,
            "skipped_markets": dict(sorted(sums["skipped_markets"].items())),
            "examples": dict(sorted(examples.items())), "overlapping_markets": overlaps,
            "address_mismatches": [{"path": r["path"], "folder": r["address"], "file_address":
                                    r["address_mismatch"]} for r in reps if "address_mismatch" in r],
            "files": reps}


def _load(cfg: IngestionConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """load_events without the error for a data dir that holds no usable market."""
    paths, refused = _find_files(Path(cfg.data_dir))
    batches, size = [[]], 0
    for p in paths:  # about BATCH_BYTES of JSON each, in path order
        if size >= BATCH_BYTES:
            batches, size = [*batches, []], 0
        batches[-1].append((p, os.path.basename(os.path.dirname(p)).lower()))
        size += os.stat(p).st_size
    workers = max(1, min(cfg.workers or os.cpu_count() or 1, len(batches)))
    parts = []
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool, \
            tqdm(total=len(paths), desc="ingest", unit="file", disable=None) as bar:
        for b, part in zip(batches, (pool.map if pool else map)(
                _parse_files, batches, repeat(int(cfg.max_file_mb * 2**20))), strict=True):
            parts.append(part)
            bar.update(len(b))
    parsed = _concat(parts)
    events, markets, overlaps = _assemble(parsed)
    return events, markets, _summary(parsed["reports"], refused, overlaps, cfg)


def _check_flags(cfg: IngestionConfig) -> int:
    """IngestionError for a bad flag, before any file is read; -> the bar length in ms."""
    if cfg.workers < 0:
        raise IngestionError(f"--workers {cfg.workers} must be >= 0 (0 = all cores)")
    if not cfg.max_file_mb > 0:
        raise IngestionError(f"--max_file_mb {cfg.max_file_mb} must be > 0")
    if not Path(cfg.data_dir).is_dir():
        raise IngestionError(f"data_dir {cfg.data_dir} does not exist; pass --data_dir with the "
                             f"folder that holds {{address}}/{PRICE_FILE_GLOB}")
    return interval_ms(cfg.bar_interval)


def _no_market(cfg: IngestionConfig, report: dict, where: str) -> IngestionError:
    tot = report["totals"]
    return IngestionError(f"no usable price file under {cfg.data_dir} ({tot['files_found']} "
                          f"files found, {tot['files_quarantined']} quarantined, "
                          f"{tot['files_skipped']} skipped); {where}")


def load_price_file(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """One file -> (its events sorted by (market, t), its report). Never raises; a bad file
    gives an empty table and a report with status "quarantined" (or "skipped") and the reason."""
    parsed = _parse_files([(str(path), Path(path).parent.name.lower())], 64 << 20)
    events = _assemble(parsed)[0].sort_values(["market", "t"], kind="stable")
    return events.reset_index(drop=True), _summary(parsed["reports"], [], [],
                                                   IngestionConfig())["files"][0]


def load_events(cfg: IngestionConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Parse every file under cfg.data_dir -> (events, markets, report); writes nothing.

    events: EVENT_COLUMNS sorted by (address, t), stable; markets: one row per (address, slug)
    with start_ms, resolution, path, n_events, end_ms (events.market is its row); report: per
    file and total counts. IngestionError when data_dir is missing or holds no usable market."""
    _check_flags(cfg)
    events, markets, report = _load(cfg)
    if markets.empty:
        raise _no_market(cfg, report, "run data_ingestion.py for the report")
    return events, markets, report


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


# ---------------------------------------------------------------- bars
def interval_ms(bar_interval: str) -> int:
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


def _per_row(rows: np.ndarray, vals: np.ndarray, n: int, how: str) -> np.ndarray:
    """(n,) first | last | max | min | sum of vals per bar row (rows: (k,)); NaN where none."""
    out = np.full(n, np.nan)
    if how == "sum":  # added in event order
        return np.where(np.bincount(rows, minlength=n) > 0, np.bincount(rows, vals, n), np.nan)
    if len(rows):
        got = pd.Series(vals).groupby(rows, sort=False).agg(how)
        out[got.index.to_numpy()] = got.to_numpy()
    return out


def _by_address(events: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(events sorted by (address, t), stable; (n,) address codes; the addresses by name)."""
    cat = events["address"]
    cat = cat if isinstance(cat.dtype, pd.CategoricalDtype) else cat.astype(str).astype("category")
    codes = cat.cat.codes.to_numpy().astype(np.int64)
    used = np.flatnonzero(np.bincount(codes, minlength=len(cat.cat.categories)))
    names = cat.cat.categories.astype(str).to_numpy(dtype=object)[used]
    remap = np.zeros(len(cat.cat.categories), np.int64)
    remap[used[np.argsort(names)]] = np.arange(len(used))
    ac, t = remap[codes], events["t"].to_numpy()
    if np.any((np.diff(ac) < 0) | ((np.diff(ac) == 0) & (np.diff(t) < 0))):
        order = np.lexsort((t, ac))  # load_events already sorts this way
        return events.iloc[order].reset_index(drop=True), ac[order], np.sort(names)
    return events, ac, np.sort(names)


def _marks(c: dict, mkt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event rows of the Up-token marks sorted by (market, t), stable; their Up prices): quote
    mids, token closes and fills' Up prices (p for Up, 1 - p for Down)."""
    kind = c["kind"]
    m = np.flatnonzero(kind <= OHLCV)
    m = m[np.lexsort((c["t"][m], mkt[m]))]
    k, price = kind[m], c["price"][m]
    fill = np.where(c["outcome"][m] == 0, price, 1.0 - price)
    return m, np.select([k == PRICE_CHANGE, k == OHLCV], [c["mid"][m], c["close"][m]], fill)


def _token_bars(c: dict, mkt: np.ndarray, ev_row: np.ndarray, markets: pd.DataFrame, n: int
                ) -> dict:
    """The Up token's open, high, low, close, volume, spread, has_data per bar row from the
    events inside their own market's window, the best source per bar."""
    t, kind = c["t"], c["kind"]
    tok = (t >= markets["start_ms"].to_numpy()[mkt]) & (t < markets["end_ms"].to_numpy()[mkt]) \
        & (kind <= OHLCV)
    rank = np.select([kind == PRICE_CHANGE, kind == OHLCV], [0, 1], 2).astype(np.int8)
    best = np.full(n, 9, np.int8)
    np.minimum.at(best, ev_row[tok], rank[tok])
    si = np.flatnonzero(tok & (rank == best[ev_row]))  # (chosen,) events of each bar's source
    r, k = ev_row[si], kind[si]
    price = c["price"][si]  # a quote's mid, a fill's Up price; a candle's own fields
    base = np.where(k == TRADE, np.where(c["outcome"][si] == 0, price, 1.0 - price), c["mid"][si])
    bars = {f: _per_row(r, np.where(k == OHLCV, c[f][si], base), n, how) for f, how in (
        ("open", "first"), ("high", "max"), ("low", "min"), ("close", "last"))}
    oh, pc, fill = (tok & (kind == x) for x in (OHLCV, PRICE_CHANGE, TRADE))
    bars["volume"] = np.where(np.bincount(ev_row[oh], minlength=n) > 0,
                              np.bincount(ev_row[oh], c["volume"][oh], n),
                              np.bincount(ev_row[fill], c["size"][fill], n))
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN where the bar has no quote
        bars["spread"] = _per_row(ev_row[pc], c["best_ask"][pc] - c["best_bid"][pc], n, "sum"
                                  ) / np.bincount(ev_row[pc], minlength=n)
    bars["has_data"] = ~np.isnan(bars["close"])
    return bars


def build_bars(events: pd.DataFrame, markets: pd.DataFrame, bar_interval: str = "15min"
               ) -> pd.DataFrame:
    """Event table + markets table (from load_events) -> the bar table (BAR_COLUMNS).

    One row per (address, bar_start), continuous per address, sorted; docs/INTERFACES.md says
    what each column holds. Position statistics land in `bars.attrs["positions"]`.
    IngestionError when an event's address is not its market's."""
    iv = interval_ms(bar_interval)
    if len(events) == 0:
        return pd.DataFrame({c: [] for c in BAR_COLUMNS})
    ev, ac, addrs = _by_address(events)  # ac: (n,) address code in name order
    c = {f: ev[f].to_numpy() for f in ARRAY_FIELDS}
    t, kind, mkt = c["t"], c["kind"], ev["market"].to_numpy().astype(np.int64)
    m_ac = pd.Categorical(markets["address"].astype(str), categories=addrs).codes.astype(np.int64)
    wrong = np.flatnonzero(m_ac[mkt] != ac)  # else a settlement would land on no timeline
    if len(wrong):
        i = int(wrong[0])
        raise IngestionError(
            f"build_bars: {len(wrong)} events carry an address other than their market's: event "
            f"at t={int(t[i])} of market {markets['slug'].iloc[mkt[i]]!r} has address "
            f"{addrs[ac[i]]!r}, the markets table {markets['address'].iloc[mkt[i]]!r}")
    start_ms, end_ms = markets["start_ms"].to_numpy(), markets["end_ms"].to_numpy()
    m, up = _marks(c, mkt)
    pay_up, pay_src = positions.settlement_prices(
        end_ms, markets["resolution"].to_numpy(dtype=object), (mkt[m], t[m], up))
    tr = np.flatnonzero(kind == TRADE)
    led = positions.ledger(mkt[tr], c["outcome"][tr].astype(np.int64), t[tr],
                           c["side"][tr] * c["size"][tr], c["price"][tr], tr, end_ms, pay_up)
    led_t, led_ac = led["t"].to_numpy(), m_ac[led["market"].to_numpy()]

    # the timeline: per address every bar from its first event (or settlement) to its last
    led_b = led_t - led_t % iv
    bounds = np.searchsorted(ac, np.arange(len(addrs) + 1))  # events sorted by address
    first, last = t[bounds[:-1]] - t[bounds[:-1]] % iv, t[bounds[1:] - 1] - t[bounds[1:] - 1] % iv
    np.minimum.at(first, led_ac, led_b)
    np.maximum.at(last, led_ac, led_b)
    nrows = (last - first) // iv + 1
    off = np.r_[0, np.cumsum(nrows)]
    n = int(off[-1])
    row_addr = np.repeat(np.arange(len(addrs)), nrows)
    row_start = first[row_addr] + (np.arange(n) - off[row_addr]) * iv
    ev_row = off[ac] + (t - t % iv - first[ac]) // iv  # (n_events,) ascending
    led_row = off[led_ac] + (led_b - first[led_ac]) // iv

    bars = _token_bars(c, mkt, ev_row, markets, n)
    # the underlying: a candle repeated in several files of one address counts once
    ui = np.flatnonzero(kind == UNDERLYING)
    ui = ui[~pd.DataFrame({"a": ac[ui], "t": t[ui]}).duplicated().to_numpy()]
    for f, how in (("open", "first"), ("high", "max"), ("low", "min"), ("close", "last"),
                   ("volume", "sum")):
        bars[f"u_{f}"] = _per_row(ev_row[ui], c[f][ui], n, how)
    bars["has_underlying"] = ~np.isnan(bars["u_close"])
    # positions; a bar's mark is its market's last before the bar's end, so the last mark of
    # each (market, bar) is all the marks the positions need
    last_of_bar = np.r_[(mkt[m][1:] != mkt[m][:-1]) | (ev_row[m][1:] != ev_row[m][:-1]), True]
    mark = (mkt[m][last_of_bar], t[m][last_of_bar], up[last_of_bar])
    fills = {f: c[f][tr] for f in ("side", "size", "price", "outcome")}
    bars.update(positions.bar_positions(fills, ev_row[tr], led, led_row, led_ac, row_addr,
                                        row_start, iv, mark))

    # the market whose window contains bar_start (windows of one address never overlap)
    rows_of = off[m_ac, None] + np.clip(-(-(np.c_[start_ms, end_ms] - first[m_ac, None]) // iv),
                                        0, nrows[m_ac, None])  # (markets, 2) row range
    lens = np.where(m_ac >= 0, rows_of[:, 1] - rows_of[:, 0], 0)  # 0: an address without bars
    which = np.full(n, -1)
    which[np.repeat(rows_of[:, 0] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())] = \
        np.repeat(np.arange(len(markets)), lens)
    inside = which >= 0
    out = pd.DataFrame({
        "address": addrs.astype(object)[row_addr],
        "bar_start": pd.to_datetime(row_start, unit="ms", utc=True),
        "slug": np.where(inside, markets["slug"].astype(str).to_numpy(dtype=object)[which], None),
        # what that market's Up token paid at its end: an outcome, for backtests, never state
        "settle_up": np.where(inside, pay_up[which] if len(pay_up) else np.nan, np.nan),
        **bars})[BAR_COLUMNS]
    out.attrs["positions"] = positions.summary(led, pay_src, bars["realized_pnl"][off[1:] - 1])
    return out


def forward_filled(bars: pd.DataFrame, column: str = "close") -> pd.Series:
    """`column` forward-filled within each address (a filled value is NOT data: has_data stays
    False there); for features that need a value on every bar."""
    return bars.groupby("address", sort=False)[column].ffill()


# ---------------------------------------------------------------- stage
def run(cfg: IngestionConfig) -> pd.DataFrame:
    """Load, validate and bar the data dir -> the bar table. Once files are read it writes
    {out_dir}/ingestion_report.json (atomically) whatever happens. IngestionError (one line) on
    a bad flag (nothing written) or when no file is usable (the message names the report)."""
    _check_flags(cfg)
    path, report = Path(cfg.out_dir) / "ingestion_report.json", {"config": asdict(cfg)}
    try:
        events, markets, report = _load(cfg)
        if markets.empty:
            raise _no_market(cfg, report, f"report: {path}")
        bars = build_bars(events, markets, cfg.bar_interval)
        span = bars.groupby("address")["bar_start"].agg(["min", "max", "size"])
        report.update(positions=bars.attrs["positions"], bars={
            "rows": len(bars), "addresses": len(span), "bar_interval": cfg.bar_interval,
            "rows_with_data": int(bars["has_data"].sum())}, addresses={
            a: {"first_bar": str(r["min"]), "last_bar": str(r["max"]), "rows": int(r["size"]),
                "markets": int((markets["address"] == a).sum())} for a, r in span.iterrows()})
        return bars
    except Exception as e:
        report["error"] = (str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}")[:300]
        raise
    finally:
        atomic_write(path, orjson.dumps(report, option=orjson.OPT_INDENT_2
                                        | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))


def write_bars(bars: pd.DataFrame, path: Path) -> None:
    """Atomic parquet write of the bar table (pyarrow, no index)."""
    atomic_write(path, lambda tmp: bars.assign(slug=bars["slug"].astype(object)).to_parquet(
        tmp, index=False))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p, IngestionConfig, help_suffix="")
    cfg = IngestionConfig(**vars(p.parse_args(argv)))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        bars = run(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    write_bars(bars, Path(cfg.out_dir) / "bars.parquet")
    rep = orjson.loads((Path(cfg.out_dir) / "ingestion_report.json").read_bytes())
    for why, text in rep["examples"].items():
        log.warning("dropped %s, e.g. %s", why, text)
    tot = rep["totals"]
    log.info("%d bars for %d address(es); events read %d used %d dropped %d; files quarantined "
             "%d skipped %d -> %s", len(bars), bars["address"].nunique(), tot["read"],
             tot["used"], tot["dropped_total"], tot["files_quarantined"], tot["files_skipped"],
             cfg.out_dir)


if __name__ == "__main__":
    main()
