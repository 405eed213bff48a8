"""File parsing and event validation for data_ingestion (one price file -> compact arrays).

Promise: `parse_files(jobs)` never raises. It reads JSON files (seed price files or Polymarket
data-api /trades dumps), validates every event against DESIGN.md "Input contract" and returns
the surviving events of each market as compact numpy arrays plus per-file reports whose counts
reconcile exactly: read = used + sum(dropped.values()). It runs in the process-pool workers of
`data_ingestion.load_events`, so it imports no stage module (only its siblings _ingestion_files
and _ingestion_merge).
No-leakage rule: parsing is per file and per event; nothing here looks across time.
Run alone: no CLI; `python data_ingestion.py --data_dir DIR` runs it for every file.

Decisions where the issue is silent:
- Numeric fields accept JSON numbers and numeric strings; booleans, lists and objects are wrong
  types. `t` must be Unix milliseconds in [2000-01-01, 2100-01-01); fractional ms are floored.
- Aliases: type ohlcv|bar|candle; open|o, high|h, low|l, close|c, volume|v; size|shares;
  best_bid|bid, best_ask|ask. The canonical name wins when both are present. Names of type,
  side, outcome and resolution are case-insensitive.
- ohlcv: all four prices must be inside (0, 1) (token bar) or all > 1 (underlying bar), with
  low <= min(open, close) and high >= max(open, close); volume is optional (0) but >= 0.
  price_change: mid optional (else (bid + ask) / 2), must lie in [bid, ask].
- Ids: `id`, else `transactionHash|tx_hash` + `index|logIndex|log_index` (read on fills; per
  event the first name it holds, so files that name them differently mix); a repeat of an id
  in the same market is dropped as `duplicate_id`. Identical-looking events
  (equal in every normalised field but the id) are kept and counted.
- A top-level JSON list is a data-api dump; a transaction hash alone is not an id there (one
  transaction can hold several real fills). Reading files, slugs and dumps: _ingestion_files.py.
- A fill's optional `role` (alias `liquidity`), maker|taker in any case, is kept as the `role`
  array (ROLE_NAMES: 0 unknown, 1 maker, 2 taker) for the fee accounting of evaluate.py; a missing
  or unrecognised role is unknown, never a reason to drop the fill.
"""

from __future__ import annotations

import gc
import operator
from collections import Counter
from collections.abc import Hashable
from itertools import chain, repeat

import numpy as np
import pandas as pd

from _ingestion_files import document_units, read_document
from _ingestion_merge import finish_report, merge_parsed, pack_parsed

TRADE, PRICE_CHANGE, OHLCV, UNDERLYING = 0, 1, 2, 3
KIND_NAMES = ("trade", "price_change", "ohlcv", "underlying")
TYPE_ALIASES = {"trade": TRADE, "price_change": PRICE_CHANGE, "ohlcv": OHLCV, "bar": OHLCV,
                "candle": OHLCV, None: -2}
FIELD_ALIASES = {"open": ("o",), "high": ("h",), "low": ("l",), "close": ("c",), "volume": ("v",),
                 "size": ("shares",), "best_bid": ("bid",), "best_ask": ("ask",)}
NUMERIC_FIELDS = ("t", "price", "size", "usdc", "best_bid", "best_ask", "mid",
                  "open", "high", "low", "close", "volume")
ARRAY_FIELDS = ("t", "kind", "price", "size", "side", "outcome", "role", "usdc", "best_bid",
                "best_ask", "mid", "open", "high", "low", "close", "volume")
"""The compact per-event arrays a market carries (t int64, kind/side/outcome/role int8, rest f8)."""
ROLE_NAMES = ("unknown", "maker", "taker")
"""A fill's liquidity role by its `role` code (0 on every event that is not a fill)."""

T_MIN_MS, T_MAX_MS = 946_684_800_000, 4_102_444_800_000
REASONS = ("used", "missing_type", "unknown_type", "bad_time", "bad_price", "bad_size",
           "bad_side", "bad_outcome", "usdc_mismatch", "bad_quote", "crossed_book", "bad_mid",
           "bad_ohlcv", "bad_volume", "duplicate_id")
"""Event drop reasons (index 0 = used); the first failing check names an event's reason."""
_OPTIONAL = ("usdc", "mid", "volume")
_NUMERIC_TYPES = {int, float, type(None)}
_TYPE_FIELDS = {TRADE: ("t", "price", "size", "usdc"),
                PRICE_CHANGE: ("t", "best_bid", "best_ask", "mid"),
                OHLCV: ("t", "open", "high", "low", "close", "volume")}
_ID_KEYS_IX, _ID_KEYS_TX = ("index", "logIndex", "log_index"), ("transactionHash", "tx_hash")
_SIDES = {"BUY": 1, "SELL": -1, "buy": 1, "sell": -1, None: 0}
_OUTCOMES = {"Up": 0, "Down": 1, "up": 0, "down": 1, None: 0}
_ROLES = {"maker": 1, "taker": 2, "MAKER": 1, "TAKER": 2, None: 0}


# ---------------------------------------------------------------- column extraction
_MISSING = float("nan")  # the default of an absent numeric field (one object, tested by identity)


def _column(events: list, key: str, default: object = None) -> list:
    """Values of `key` (`default` where absent), one per event dict, extracted at C speed."""
    return list(map(dict.get, events, repeat(key), repeat(default)))


def _numbers(vals: list) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, wrong-type mask) of one JSON field; None -> NaN (missing). Only a column
    holding other than ints, floats and None goes per element (numeric str ok, bool wrong)."""
    types = set(map(type, vals))
    if types <= _NUMERIC_TYPES:
        try:
            return np.array(vals, dtype=np.float64), np.zeros(len(vals), bool)
        except OverflowError:  # an integer beyond float range
            pass
    out, wrong = np.full(len(vals), np.nan), np.zeros(len(vals), bool)
    for i, v in enumerate(vals):  # messy-column fallback only
        if v is not None and (type(v) is bool or not isinstance(v, int | float | str)):
            wrong[i] = True
        elif v is not None:
            try:
                out[i] = float(v)
            except (ValueError, OverflowError):
                wrong[i] = True
    return out, wrong


def _codes(vals: list, table: dict, unknown: int) -> np.ndarray:
    """Map JSON values to int codes through `table` (which maps None too): exact lookups at C
    speed, then a case-insensitive retry for the misses only; still unknown -> `unknown`."""
    try:
        out = np.fromiter(map(table.get, vals, repeat(unknown)), np.int64, count=len(vals))
    except TypeError:  # an unhashable value (list, object)
        out = np.array([table.get(v, unknown) if isinstance(v, Hashable) else unknown
                        for v in vals], dtype=np.int64)
    for i in np.flatnonzero(out == unknown):  # misses only
        v = vals[i]
        if type(v) is str:
            out[i] = table.get(v.lower(), unknown)
    return out


def _ids(events: list, keys: set) -> np.ndarray | None:
    """Explicit event ids as str (None where absent): `id`, else tx hash + index; None when no
    event has one (keys: the field names present in `events`)."""
    ids = None
    if "id" in keys:
        vals = _column(events, "id")
        if not set(map(type, vals)) <= {str, type(None)}:  # only then convert per element
            vals = [None if v is None else str(v) for v in vals]
        ids = np.array(vals, dtype=object)
    ix = [k for k in _ID_KEYS_IX if k in keys]
    tx = [k for k in _ID_KEYS_TX if k in keys]
    if not ix or not tx:
        return ids  # a transaction hash alone is no id (one transaction holds several fills)

    def first_of(names: list) -> list:  # per event: the first of `names` it holds (not null)
        got = _column(events, names[0])
        for alias in names[1:]:
            got = [g if g is not None else a for g, a in zip(got, _column(events, alias),
                                                             strict=True)]
        return got
    pair = np.array([None if a is None or i is None else f"{a}:{i}"
                     for a, i in zip(first_of(tx), first_of(ix), strict=True)], dtype=object)
    return pair if ids is None else np.where(np.equal(ids, None), pair, ids)


def _fast_field(sub: list, f: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(float64 values of field `f`, one C pass; rows to re-read checked), or None when an event
    lacks `f` or holds what float() refuses. np.fromiter converts through float(), as the
    checked read does, but cannot tell null (-> NaN) or a bool (-> 1.0/0.0) from a number: rows
    holding NaN, 0.0 or 1.0 are re-read by `_checked` (rare when clean). Per field, so an
    optional field absent from every event (usdc) sends only itself to the checked read."""
    try:
        x = np.fromiter(map(operator.itemgetter(f), sub), np.float64, count=len(sub))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return x, np.flatnonzero(np.isnan(x) | (x == 0.0) | (x == 1.0))


def _checked(sub: list, fields: tuple) -> tuple[dict, dict, dict]:
    """Per-field read of `sub` that tells every JSON type apart: (values, finite, given) per
    field; a missing canonical name falls back to its aliases, a wrong type is not finite."""
    num, fin, given = {}, {}, {}
    for f in fields:
        vals = _column(sub, f, _MISSING)
        x, bad = _numbers(vals)
        for alias in FIELD_ALIASES.get(f, ()):  # where the canonical name is absent only
            gap = np.flatnonzero(np.isnan(x) & ~bad)
            if len(gap) == 0:
                break
            va = _column(_pick(sub, gap), alias, _MISSING)
            xa, ba = _numbers(va)
            x[gap], bad[gap] = np.where(np.isnan(xa), x[gap], xa), ba
            vals = [*vals]
            for j, v in zip(gap.tolist(), va, strict=True):
                vals[j] = vals[j] if v is _MISSING else v
        num[f], fin[f] = x, ~bad & np.isfinite(x)
        if f in _OPTIONAL:  # an explicit NaN is given
            maybe = np.flatnonzero(np.isnan(x) & ~bad)
            pres = ~np.isnan(x) | bad
            for i in maybe.tolist():  # given = neither absent nor null
                pres[i] = vals[i] is not _MISSING and vals[i] is not None
            given[f] = pres
    return num, fin, given


def _pick(events: list, idx: np.ndarray) -> list:
    """events[idx] as a list, at C speed."""
    got = operator.itemgetter(*idx.tolist())(events) if len(idx) else ()
    return [got] if len(idx) == 1 else list(got)


# ---------------------------------------------------------------- validation
def validate_events(events: list, unit: np.ndarray, n_units: int) -> tuple[dict, np.ndarray,
                                                                          dict, np.ndarray]:
    """Validate dict events of many units (markets) at once; unit[i] is the unit of events[i].

    Returns (arrays of the used events sorted by (unit, t), stable, with arrays["unit"]; counts
    (n_units x len(REASONS)) by reason, reason 0 = "used", so counts.sum(1) is the events of
    each unit; {unit: Counter of unknown type names}; identical-looking events per unit).
    Fields are read per event type (a price_change for t, bid, ask and mid only)."""
    n = len(events)
    raw_type = _column(events, "type")
    kind = _codes(raw_type, TYPE_ALIASES, -1)
    # one allocation per table, a row per field: (len(NUMERIC_FIELDS), n)
    num = dict(zip(NUMERIC_FIELDS, np.full((len(NUMERIC_FIELDS), n), np.nan), strict=True))
    fin = dict(zip(NUMERIC_FIELDS, np.zeros((len(NUMERIC_FIELDS), n), bool), strict=True))
    given = dict(zip(_OPTIONAL, np.zeros((len(_OPTIONAL), n), bool), strict=True))
    side, out_c, role = np.full(n, -9, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    id_keys: set = set()
    for k, fields in _TYPE_FIELDS.items():
        idx = np.flatnonzero(kind == k)
        if len(idx) == 0:
            continue
        sub = _pick(events, idx)
        clean = True  # every field of every event read by the fast pass
        for f in fields:
            fast = _fast_field(sub, f)
            if fast is None:  # missing somewhere or a wrong type: this field read checked
                clean, rows, part = False, idx, sub
            else:
                x, again = fast
                num[f][idx], fin[f][idx] = x, np.isfinite(x)
                if f in _OPTIONAL:
                    given[f][idx] = True
                if len(again) == 0:  # the clean case: nothing to re-read
                    continue
                rows, part = idx[again], _pick(sub, again)
            got = _checked(part, (f,))  # the checked rows overwrite the fast ones
            num[f][rows], fin[f][rows] = got[0][f], got[1][f]
            if f in _OPTIONAL:
                given[f][rows] = got[2][f]
        if k == TRADE:
            # which id keys any fill has: a C scan per key, stopped at its first holder (cheaper
            # than a union of every fill's keys); _ids decides which of them make an id
            id_keys.update(key for key in ("id", *_ID_KEYS_IX, *_ID_KEYS_TX)
                           if any(map(operator.contains, sub, repeat(key))))
            side[idx] = _codes(_column(sub, "side"), _SIDES, -9)
            out_c[idx] = _codes(_column(sub, "outcome"), _OUTCOMES, -1)
            for key in ("role", "liquidity"):  # optional: unknown (0) where absent or unrecognised
                if any(map(operator.contains, sub, repeat(key))):
                    got = _codes(_column(sub, key), _ROLES, 0)
                    role[idx] = np.where(role[idx] == 0, got, role[idx])
        elif not clean or sum(map(len, sub)) != len(sub) * (len(fields) + 1):
            # exactly `type` + the fields in every event (the clean case) leaves no room for an id
            if any(map(operator.contains, sub, repeat("id"))):
                id_keys.add("id")

    reason = np.zeros(n, np.int8)

    def fail(mask: np.ndarray, name: str) -> None:  # the first failing check names the reason
        reason[(reason == 0) & mask] = REASONS.index(name)

    t, p, s, u = num["t"], num["price"], num["size"], num["usdc"]
    b, a, o, h, lo, c = (num[k] for k in ("best_bid", "best_ask", "open", "high", "low", "close"))
    is_tr, is_pc, is_oh = kind == TRADE, kind == PRICE_CHANGE, kind == OHLCV
    with np.errstate(invalid="ignore", over="ignore"):
        fail(kind == -2, "missing_type")
        fail(kind == -1, "unknown_type")
        fail(~fin["t"] | (t < T_MIN_MS) | (t >= T_MAX_MS), "bad_time")
        fail(is_tr & ~(fin["price"] & (p > 0) & (p < 1)), "bad_price")
        fail(is_tr & ~(fin["size"] & (s > 0) & (s < 1e12)), "bad_size")
        fail(is_tr & ((side == 0) | (side == -9)), "bad_side")
        fail(is_tr & (out_c == -1), "bad_outcome")
        u_ok = fin["usdc"] & (np.abs(u - p * s) <= 0.01 * p * s + 0.01)
        fail(is_tr & given["usdc"] & ~u_ok, "usdc_mismatch")
        quote = fin["best_bid"] & fin["best_ask"] & (b >= 0) & (b <= 1) & (a >= 0) & (a <= 1)
        fail(is_pc & ~quote, "bad_quote")
        fail(is_pc & (b > a), "crossed_book")
        mid = np.where(given["mid"], num["mid"], (b + a) / 2)
        mid_ok = np.where(given["mid"], fin["mid"], True) & (mid >= b - 1e-9) & (mid <= a + 1e-9)
        fail(is_pc & ~mid_ok, "bad_mid")
        px = np.stack([o, h, lo, c])
        under = ((px > 1) & (px < 1e12)).all(axis=0)
        inside = ((px > 0) & (px < 1)).all(axis=0) | under
        shape = (lo <= np.minimum(o, c)) & (h >= np.maximum(o, c))
        fail(is_oh & ~(fin["open"] & fin["high"] & fin["low"] & fin["close"] & inside & shape),
             "bad_ohlcv")
        v = num["volume"]
        fail(is_oh & given["volume"] & ~(fin["volume"] & (v >= 0) & (v < 1e15)), "bad_volume")
    kind = np.where(is_oh & under, UNDERLYING, kind).astype(np.int8)
    ids = _ids(_pick(events, valid_kind := np.flatnonzero(kind >= 0)), id_keys) if id_keys else None
    if ids is not None:  # an explicit id repeated among valid events of one unit
        full = np.full(n, None, dtype=object)
        full[valid_kind] = ids
        has = (reason == 0) & ~np.equal(full, None)
        dup = pd.DataFrame({"u": unit[has], "id": full[has]}).duplicated().to_numpy()
        reason[np.flatnonzero(has)[dup]] = REASONS.index("duplicate_id")
    counts = np.bincount(unit.astype(np.int64) * len(REASONS) + reason,
                         minlength=n_units * len(REASONS)).reshape(n_units, len(REASONS))
    unknown: dict[int, Counter] = {}
    for i in np.flatnonzero(kind == -1):  # unknown types are rare: name them per unit
        unknown.setdefault(int(unit[i]), Counter())[str(raw_type[i])[:40]] += 1

    ok = np.flatnonzero(reason == 0)
    ok = ok[np.lexsort((t[ok], unit[ok]))]
    k = kind[ok]
    trade, quote_k, bar_k = k == TRADE, k == PRICE_CHANGE, k >= OHLCV
    num.update(mid=mid, volume=np.where(given["volume"], v, 0.0))
    arrays = {"unit": unit[ok].astype(np.int32), "t": np.floor(t[ok]).astype(np.int64), "kind": k,
              "side": np.where(trade, side[ok], 0).astype(np.int8),
              "outcome": np.where(trade, out_c[ok], 0).astype(np.int8),
              "role": np.where(trade, role[ok], 0).astype(np.int8)}
    # a field is read on its own kind's rows only (NaN elsewhere), so a gather keeps it; mid
    # and volume were filled on every row above and keep their own kind's rows by a mask
    # (a used trade's usdc is finite or absent: a given non-finite one fails usdc_mismatch)
    for f in ("price", "size", "usdc", "best_bid", "best_ask", "open", "high", "low", "close"):
        arrays[f] = num[f][ok]
    arrays["mid"] = np.where(quote_k, num["mid"][ok], np.nan)
    arrays["volume"] = np.where(bar_k, num["volume"][ok], np.nan)
    # identical-looking: equal in every normalised field but the id, within a unit; counted only
    ident = np.bincount(arrays["unit"][_duplicated_rows(arrays)], minlength=n_units)
    return arrays, counts, unknown, ident


def _duplicated_rows(arrays: dict) -> np.ndarray:
    """Rows equal in every array to an earlier row (NaN == NaN): a 64-bit hash of the columns
    that tell clean rows apart finds the candidates, pandas confirms them over every array."""
    n = len(arrays["t"])
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for f in ("unit", "t", "kind", "price", "size", "mid", "close"):
            x = arrays[f]  # + 0.0 maps -0.0 to 0.0; every NaN hashes alike
            v = (x.astype(np.int64) if x.dtype.kind in "iu" else
                 np.where(np.isnan(x), -7.0, x + 0.0)).view(np.uint64)
            h = (h ^ v) * np.uint64(0x100000001B3) + np.uint64(0x9E3779B97F4A7C15)
    out = np.zeros(n, bool)
    hs = np.sort(h)  # a sort beats pandas' hash table on these ~1e3-1e4 rows (measured)
    rep = hs[1:][hs[1:] == hs[:-1]]
    cand = np.flatnonzero(np.isin(h, rep)) if len(rep) else rep
    if len(cand):
        out[cand] = pd.DataFrame({k: v[cand] for k, v in arrays.items()}).duplicated().to_numpy()
    return out


def parse_files(jobs: list[tuple[str, str]]) -> dict:
    """Read and validate a batch of files [(path, address)]; never raises. Returns
    {"arrays": event arrays of all used events (ARRAY_FIELDS + "unit"), sorted by
    (unit, t); "markets": [{"address", "slug", "start_s", "resolution", "path", "lo", "hi"}]
    (unit i owns arrays rows lo:hi); "reports": one per file, with read == used +
    sum(dropped.values()) and status "used" | "skipped" | "quarantined"}.
    The cyclic garbage collector is paused meanwhile (and restored as it was): every ~700 event
    dicts orjson allocates would start a collection over the batch's live lists of dicts (on the
    30-day demo in one process: 717 gen0, 65 gen1 and 1 full collection, ~0.05 s, counted with
    gc.callbacks); parsing makes no reference cycles worth collecting."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_batch(jobs)
    finally:
        if was_enabled:
            gc.enable()


def _parse_batch(jobs: list[tuple[str, str]]) -> dict:
    """parse_files with the collector paused."""
    reps, units, owner = [], [], []
    for path, address in jobs:
        rep = {"path": path, "address": address, "status": "used", "reason": None, "slugs": [],
               "read": 0, "used": 0, "dropped": Counter(), "duplicate_id": 0,
               "identical_looking": 0, "unknown_types": Counter(), "skipped_markets": {},
               "notes": []}
        reps.append(rep)
        doc, why = read_document(path)
        if why is not None:
            rep["status"], rep["reason"] = "quarantined", why
            continue
        try:
            new = document_units(doc, address, rep)
        except RecursionError:
            new, rep["status"], rep["reason"] = [], "quarantined", "too_deeply_nested"
        units += new
        owner += [len(reps) - 1] * len(new)
    try:
        return _validate_units(units, owner, reps, jobs)
    except Exception as e:  # noqa: BLE001 - never raise out of the loader: fall back per file
        if len(jobs) > 1:
            return merge_parsed([_parse_batch([j]) for j in jobs])
        rep = reps[0]
        rep.update(status="quarantined", reason=f"parse_error: {type(e).__name__}: {e}"[:200],
                   used=0, dropped=Counter({"quarantined_file": rep["read"]}))
        return {"arrays": validate_events([], np.zeros(0, np.int32), 0)[0], "markets": [],
                "reports": [finish_report(rep)]}


def _validate_units(units: list, owner: list, reps: list, jobs: list) -> dict:
    """parse_files' second half: validate the events of all units at once, fill the reports."""
    lens = [len(u[4]) for u in units]
    events = list(chain.from_iterable(u[4] for u in units))
    unit = np.repeat(np.arange(len(units), dtype=np.int32), lens)
    arrays, counts, unknown, ident = validate_events(events, unit, len(units))
    bounds = np.searchsorted(arrays["unit"], np.arange(len(units) + 1))
    markets, dup = [], REASONS.index("duplicate_id")
    # plain ints once (tolist), then one cheap step per unit; dropped reasons are rare
    rows = zip(counts.tolist(), ident.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(),
               strict=True)
    for i, (row, n_ident, lo, hi) in enumerate(rows):
        address, slug, start_s, res, _ = units[i]
        rep = reps[owner[i]]
        rep["used"] += row[0]
        if any(row[1:]):
            for r in range(1, len(row)):
                if row[r]:
                    rep["dropped"][REASONS[r]] += row[r]
        rep["duplicate_id"] += row[dup]
        rep["identical_looking"] += n_ident
        if i in unknown:
            rep["unknown_types"].update(unknown[i])
        rep["slugs"].append(slug)
        markets.append({"address": address, "slug": slug, "start_s": start_s, "resolution": res,
                        "path": jobs[owner[i]][0], "lo": lo, "hi": hi})
    for rep in reps:
        if rep["status"] == "used" and not rep["slugs"]:
            rep["status"] = "skipped"
            rep["reason"] = "not_btc_15m" if rep["skipped_markets"] else "no_market"
    return {"arrays": arrays, "markets": markets, "reports": [finish_report(r) for r in reps]}


def parse_files_packed(jobs: list[tuple[str, str]]) -> dict:
    """parse_files for a process-pool worker: the result with its float arrays packed
    (`pack_parsed`), so about 40 % of the bytes cross the pipe; merge_parsed unpacks."""
    return pack_parsed(parse_files(jobs))
