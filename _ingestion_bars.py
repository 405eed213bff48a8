"""The bar table of data_ingestion: the validated event table -> one row per (address, bar_start).

Promise: `build_bars(events, markets, bar_interval)` turns load_events' event and markets tables
into BAR_COLUMNS (docs/INTERFACES.md): continuous per address, sorted, the Up token's OHLC from
the best source per bar, the underlying's bar, the trader's fills, and the positions of
_ingestion_positions' ledger as per-bar levels (vectorised: cumulative sums and searchsorted,
nothing loops over bars or events). `forward_filled` gives a filled close that is never data.
Tables that disagree (an event whose address is not its market's, as when a data-api
dump's markets are keyed by folder, not proxyWallet) raise IngestionError naming both.
The decisions (sources, settlement, exposure) are listed in data_ingestion's docstring.

No-leakage rule: every column of a row is a function of events with time < its bar's end (marks
are the last mid before the end; settlement comes from `resolution` or marks before the
market's end); the one-bar shift for state is state_features'.

Run alone: no CLI; `python data_ingestion.py --data_dir DIR` runs it.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pandas as pd

import _ingestion_positions
from _ingestion_io import IngestionError
from _ingestion_parse import OHLCV, PRICE_CHANGE, TRADE, UNDERLYING
from _ingestion_positions import FLAT_EPS, KEY_STRIDE

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
"""The bar table's columns, in order (docs/INTERFACES.md says what each holds)."""


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


def _agg(rows: np.ndarray, vals: np.ndarray, n: int, how: str,
         starts: np.ndarray | None = None) -> np.ndarray:
    """Per-row first/last/max/min of vals; rows sorted ascending; NaN for rows without values.
    starts: where each run of equal rows begins, when the caller already has it."""
    out = np.full(n, np.nan)
    if len(rows) == 0:
        return out
    if starts is None:
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
    return lvl, np.where(np.abs(at_end) < FLAT_EPS, 0.0, at_end)


def build_bars(events: pd.DataFrame, markets: pd.DataFrame, bar_interval: str = "15min"
               ) -> pd.DataFrame:
    """Event table + markets table (from load_events) -> the bar table (BAR_COLUMNS).

    One row per (address, bar_start), continuous per address, sorted; see docs/INTERFACES.md
    for each column. Position statistics land in `bars.attrs["positions"]`."""
    iv = interval_ms(bar_interval)
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
    key = ac.astype(np.int64) * KEY_STRIDE + events["t"].to_numpy()
    ev = events
    if np.any(key[1:] < key[:-1]):  # load_events already sorts by (address, t)
        order = np.argsort(key, kind="stable")
        ev, ac = events.iloc[order].reset_index(drop=True), ac[order]
    ac = ac.astype(np.int64)
    t, kind = ev["t"].to_numpy(), ev["kind"].to_numpy()
    mkt = ev["market"].to_numpy().astype(np.int64)
    m_ac = pd.Categorical(markets["address"].astype(str), categories=addrs).codes.astype(np.int64)
    wrong = np.flatnonzero(m_ac[mkt] != ac)  # (n_events,) compare: each market is one address's
    if len(wrong):  # else its settlement would land on no address's timeline
        i = int(wrong[0])
        raise IngestionError(
            f"build_bars: {len(wrong)} events carry an address other than their market's: event "
            f"at t={int(t[i])} of market {markets['slug'].iloc[mkt[i]]!r} has address "
            f"{ev['address'].iloc[i]!r}, the markets table {markets['address'].iloc[mkt[i]]!r}")
    mark = _ingestion_positions.marks(ev)
    pay_up, pay_src = _ingestion_positions.settlement_prices(markets, mark)
    led = _ingestion_positions.ledger(ev, markets, pay_up)
    # the ledger's columns read more than once below, read once: (n_entries,) each
    led_seq, led_settle, led_mkt = (led[k].to_numpy() for k in ("seq", "settle", "market"))
    led_t = led["t"].to_numpy()
    led_ac = m_ac[led_mkt]  # the check above: a fill's address is its market's (settlements too)
    addrs = addrs.astype(object)

    # timeline: per address, the bars of its events and of its settlements, continuous;
    # events are sorted by (address, t), so an address's first/last event bar is at its bounds
    ev_b, led_b = t - t % iv, led_t - led_t % iv
    bounds = np.searchsorted(ac, np.arange(len(addrs) + 1))  # every address has events
    first, last = ev_b[bounds[:-1]], ev_b[bounds[1:] - 1]
    np.minimum.at(first, led_ac, led_b)  # settlements (one per traded market and token)
    np.maximum.at(last, led_ac, led_b)
    nrows = (last - first) // iv + 1
    off = np.r_[0, np.cumsum(nrows)]
    n = int(off[-1])
    row_addr = np.repeat(np.arange(len(addrs)), nrows)
    row_start = first[row_addr] + (np.arange(n) - off[row_addr]) * iv
    ev_row = off[ac] + (ev_b - first[ac]) // iv
    led_row = off[led_ac] + (led_b - first[led_ac]) // iv

    # token market data: events inside their own market's window, best source per bar
    ms, me = markets["start_ms"].to_numpy()[mkt], markets["end_ms"].to_numpy()[mkt]
    tok = (t >= ms) & (t < me) & (kind <= OHLCV)
    cls = np.select([kind == PRICE_CHANGE, kind == OHLCV], [0, 1], 2)
    best = np.full(n, 9)
    np.minimum.at(best, ev_row[tok], cls[tok])
    sel = tok & (cls == best[ev_row])
    c = {f: ev[f].to_numpy() for f in ("price", "size", "mid", "open", "high", "low", "close",
                                       "volume", "best_bid", "best_ask", "side", "outcome")}
    si = np.flatnonzero(sel)  # the chosen source's events only, (n_sel,), rows ascending
    r, k_s = ev_row[si], kind[si]
    starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if len(r) else r
    ends = np.r_[starts[1:], len(r)] - 1 if len(r) else r
    # one source per bar: a quote's mid, a token candle's own field, or a fill's Up price
    base = c["mid"][si]  # NaN off quotes; fills (rare) get their Up price, candles use `f`
    ft = si[k_s == TRADE]
    base[k_s == TRADE] = np.where(c["outcome"][ft] == 0, c["price"][ft], 1.0 - c["price"][ft])
    is_oh = k_s == OHLCV
    bars = {}
    for f, at in (("open", starts), ("close", ends)):  # one event per bar: gather there only
        bars[f] = np.full(n, np.nan)
        bars[f][r[at]] = np.where(is_oh[at], c[f][si[at]], base[at])
    for f, how in (("high", "max"), ("low", "min")):
        bars[f] = _agg(r, np.where(is_oh, c[f][si], base), n, how, starts)
    oh, trw, pc = tok & (kind == OHLCV), tok & (kind == TRADE), tok & (kind == PRICE_CHANGE)
    has_oh = np.bincount(ev_row[oh], minlength=n) > 0
    bars["volume"] = np.where(has_oh, np.bincount(ev_row[oh], c["volume"][oh], minlength=n),
                              np.bincount(ev_row[trw], c["size"][trw], minlength=n))
    n_pc = np.bincount(ev_row[pc], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        bars["spread"] = np.bincount(ev_row[pc], c["best_ask"][pc] - c["best_bid"][pc],
                                     minlength=n) / np.where(n_pc > 0, n_pc, np.nan)
    bars["has_data"] = ~np.isnan(bars["close"])

    # underlying: candles repeated across files of one address are used once
    ui = np.flatnonzero(kind == UNDERLYING)
    ui = ui[np.sort(np.unique(ac[ui] * KEY_STRIDE + t[ui], return_index=True)[1])]
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
    o = np.lexsort((led_seq, led_settle, led_t, led_ac))
    e_ac, e_row = led_ac[o], led_row[o]
    # the six columns used below, reordered (not the whole 15-column ledger frame)
    lo = {k: led[k].to_numpy()[o] for k in ("outcome", "dq", "dc", "dabs_c", "dabs_q",
                                             "realized")}
    up = lo["outcome"] == 0
    lv = {k: _level(d, e_ac, e_row, row_addr) for k, d in (
        ("inv_up", np.where(up, lo["dq"], 0.0)), ("inv_down", np.where(up, 0.0, lo["dq"])),
        ("cost_up", np.where(up, lo["dc"], 0.0)), ("cost_down", np.where(up, 0.0, lo["dc"])),
        ("gross_c", lo["dabs_c"]), ("gross_q", lo["dabs_q"]), ("realized", lo["realized"]))}
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
    bars["unrealized_pnl"] = np.where(np.abs(un) < FLAT_EPS, 0.0, un)
    total = bars["realized_pnl"] + bars["unrealized_pnl"]
    bars["pnl"] = total - np.where(new_addr, 0.0, np.r_[0.0, total[:-1]])
    held = end["gross_q"] > FLAT_EPS
    entry = held & (new_addr | ~np.r_[False, held[:-1]])
    run_start = np.flatnonzero(entry)
    k = np.cumsum(entry) - 1
    since = np.arange(n) - (run_start[np.clip(k, 0, None)] if len(run_start) else 0)
    bars["bars_since_entry"] = np.where(held, since, -1).astype(np.int64)
    settled = np.zeros(n, bool)
    settled[led_row[led_settle]] = True
    bars["settled"] = settled

    # the market whose window contains bar_start (markets of the same address only)
    mo = np.lexsort((markets["start_ms"].to_numpy(), m_ac))
    mkey = m_ac[mo] * KEY_STRIDE + markets["start_ms"].to_numpy()[mo]
    j = np.searchsorted(mkey, row_addr * KEY_STRIDE + row_start, "right") - 1
    jj = mo[np.clip(j, 0, None)]
    inside = (j >= 0) & (m_ac[jj] == row_addr) & (row_start < markets["end_ms"].to_numpy()[jj])
    slug = np.where(inside, markets["slug"].astype(str).to_numpy(dtype=object)[jj], None)
    # what that market's Up token paid at its end: an outcome, for backtests, never for state
    settle_up = np.where(inside, pay_up[jj] if len(pay_up) else np.nan, np.nan)
    out = pd.DataFrame({"address": addrs[row_addr],
                        "bar_start": pd.to_datetime(row_start, unit="ms", utc=True),
                        "slug": slug, "settle_up": settle_up, **bars})[BAR_COLUMNS]
    traded = np.unique(led_mkt[led_settle])
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
