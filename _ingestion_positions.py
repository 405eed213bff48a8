"""Position accounting for data_ingestion: marks, settlement prices and the average-cost ledger.

Promise: given the event table and the markets table of `data_ingestion.load_events`, build a
ledger with one entry per trader fill and one settlement entry per traded (market, outcome
token), each carrying the change it makes to inventory, signed cost basis, |cost|, |shares| and
realised P&L. `data_ingestion.build_bars` turns those deltas into per-bar levels with
cumulative sums; nothing here loops over bars.

No-leakage rule: a settlement price uses only `resolution` (a fact of the market's end) or marks
before the end (the first mark after it only when there is none before, and then only fills
after the end use it); every ledger entry's effect is placed at its own time.

Run alone: no CLI; `python data_ingestion.py` runs it.

Decisions: average cost per (market, outcome); a sell beyond holdings opens a short (counted as
oversold); a fill after the market's end settles at once at the market's payout. The
average-cost recursion is sequential by nature (the average after a fill depends on the
average before it), but (market, outcome) groups are independent: `average_cost` steps through
positions within a group, vectorised across groups (steps = the longest group's entries).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from _ingestion_parse import OHLCV, PRICE_CHANGE, TRADE

KEY_STRIDE = np.int64(1) << 43
"""Sort keys group * KEY_STRIDE + t (ms) stay int64 until 2100 for 2**20 groups; shared by
the ingestion modules (defined once here)."""
FLAT_EPS = 1e-9
"""|shares| below this is a flat position (also zeroes P&L rounding dust)."""


def marks(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up-token marks of every market -> (market, t, up_price) sorted by (market, t), stable.

    A mark is a price_change mid, a token ohlcv close, or a fill's Up price (p, or 1 - p for a
    Down fill); underlying candles are not marks."""
    kind, price = events["kind"].to_numpy(), events["price"].to_numpy()
    # values over all events, then one compress of three arrays (cheaper than gathering six)
    val = np.where(kind == PRICE_CHANGE, events["mid"].to_numpy(),
                   np.where(kind == OHLCV, events["close"].to_numpy(),
                            np.where(events["outcome"].to_numpy() == 0, price, 1.0 - price)))
    m = kind <= OHLCV
    mk, t, val = events["market"].to_numpy()[m].astype(np.int64), events["t"].to_numpy()[m], val[m]
    key = mk * KEY_STRIDE + t
    if not np.all(key[1:] >= key[:-1]):  # usually sorted already: (address, t) order
        order = np.lexsort((t, mk))
        mk, t, val = mk[order], t[order], val[order]
    return mk, t, val


def settlement_prices(markets: pd.DataFrame, mark: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Per market: Up payout (1.0 or 0.0) and its source ("resolution", "last_mark",
    "first_mark_after_end", "none"). Down pays 1 - the Up payout."""
    mk, t, val = mark
    n = len(markets)
    key = mk * KEY_STRIDE + t
    end_key = np.arange(n, dtype=np.int64) * KEY_STRIDE + markets["end_ms"].to_numpy()
    before = np.searchsorted(key, end_key, "left") - 1
    ok_b = (before >= 0) & (mk[np.clip(before, 0, None)] == np.arange(n)) if len(mk) else \
        np.zeros(n, bool)
    after = np.clip(before + 1, 0, max(len(mk) - 1, 0))
    ok_a = ~ok_b & (mk[after] == np.arange(n)) if len(mk) else np.zeros(n, bool)
    res = markets["resolution"].to_numpy(dtype=object)
    has_res = ~pd.isna(res)
    last = np.where(ok_b, val[np.clip(before, 0, None)] if len(mk) else 0.5,
                    val[after] if len(mk) else 0.5)
    pay = np.where(has_res, res == "Up", last >= 0.5).astype(np.float64)
    src = np.select([has_res, ok_b, ok_a], ["resolution", "last_mark", "first_mark_after_end"],
                    "none")
    return pay, src


def ledger(events: pd.DataFrame, markets: pd.DataFrame, pay_up: np.ndarray) -> pd.DataFrame:
    """Average-cost ledger in (market, outcome, t) order, fills then one settlement per group.

    Columns: gid (group = market x outcome), market, outcome, t (ms; settlement at end - 1),
    settle, seq (event row, settlement = -1), dq, dc, dabs_q, dabs_c, realized (deltas of
    shares, signed cost, |shares|, |cost|, realised P&L), q, c (group levels after the entry),
    oversold, post_end (bool)."""
    tr = np.flatnonzero(events["kind"].to_numpy() == TRADE)
    mkt = events["market"].to_numpy()[tr].astype(np.int64)
    out = events["outcome"].to_numpy()[tr].astype(np.int64)
    t = events["t"].to_numpy()[tr]
    dq = (events["side"].to_numpy()[tr] * events["size"].to_numpy()[tr]).astype(np.float64)
    px = events["price"].to_numpy()[tr]
    gkey = mkt * 2 + out
    groups = np.unique(gkey)
    # one settlement entry per traded (market, outcome), at end - 1 ms, after same-time fills
    s_m = groups // 2
    t_all = np.concatenate([t, markets["end_ms"].to_numpy()[s_m] - 1])
    g_all = np.concatenate([gkey, groups])
    settle = np.concatenate([np.zeros(len(tr), bool), np.ones(len(groups), bool)])
    order = np.lexsort((settle, t_all, g_all))  # stable: fills keep their file order
    g_all, t_all, settle = g_all[order], t_all[order], settle[order]
    dq_all = np.concatenate([dq, np.zeros(len(groups))])[order]
    px_all = np.concatenate([px, np.zeros(len(groups))])[order]
    seq = np.concatenate([tr, np.full(len(groups), -1)])[order]
    o_all = (g_all % 2).astype(np.int8)
    pay = pay_up[g_all // 2]
    pay = np.where(o_all == 0, pay, 1.0 - pay)
    new = np.r_[True, g_all[1:] != g_all[:-1]] if len(g_all) else np.zeros(0, bool)

    q_out, c_out, r_out, oversold, post = average_cost(new, settle, dq_all, px_all, pay)
    prev_q = np.where(new, 0.0, np.r_[0.0, q_out[:-1]])
    prev_c = np.where(new, 0.0, np.r_[0.0, c_out[:-1]])
    return pd.DataFrame({
        "gid": g_all, "market": g_all // 2, "outcome": o_all, "t": t_all, "settle": settle,
        "seq": seq, "dq": q_out - prev_q, "dc": c_out - prev_c,
        "dabs_q": np.abs(q_out) - np.abs(prev_q), "dabs_c": np.abs(c_out) - np.abs(prev_c),
        "realized": r_out, "q": q_out, "c": c_out, "oversold": oversold, "post_end": post},
        copy=False)  # fresh arrays: no consolidation copy into 2-D blocks


def average_cost(new: np.ndarray, settle: np.ndarray, d: np.ndarray, p: np.ndarray,
                 pv: np.ndarray) -> tuple[np.ndarray, ...]:
    """The average-cost recursion over ledger entries in group order (each group contiguous,
    `new` True at its first entry): -> (q, c, realized, oversold, post_end) per entry, q and c
    being the group's shares and signed cost after it.

    Per entry: a settlement books q * pv - c and closes the group; a fill after it books
    d * (pv - p) at once (post_end); a fill from flat or on the held side adds (q + d,
    c + d * p); an opposite fill closes min(|d|, |q|) at the average c / q, and any rest opens
    the other side at p (a short from a sell beyond holdings counts as oversold); |q| < 1e-9
    is flat. The recursion is sequential within a group but groups are independent, so it runs
    one step per position in a group, vectorised over the groups that have an entry there:
    max group length numpy steps instead of one Python step per fill. Each element sees the
    same IEEE operations in the same order as a scalar loop, so results are bit-identical
    (tests/test_data_ingestion_positions.py keeps that loop as the reference)."""
    n = len(new)
    out = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
    if n == 0:
        return out
    q_out, c_out, r_out, oversold, post = out
    start = np.flatnonzero(new)
    gi = np.cumsum(new) - 1                       # (n,) group of each entry
    pos = np.arange(n) - start[gi]                # (n,) position inside its group
    by_pos = np.argsort(pos, kind="stable")       # entries of step k are contiguous, gi ascending
    bounds = np.r_[0, np.cumsum(np.bincount(pos))]
    q, c, done = np.zeros(len(start)), np.zeros(len(start)), np.zeros(len(start), bool)
    for k in range(len(bounds) - 1):  # one step per position in a group, not per fill
        i = by_pos[bounds[k]:bounds[k + 1]]  # (groups with a k-th entry,)
        g = gi[i]
        qg, cg, was = q[g], c[g], done[g]
        st, dk, pk, pvk = settle[i], d[i], p[i], pv[i]
        live = ~st & ~was
        add = live & ((qg == 0.0) | ((qg > 0) == (dk > 0)))
        qn, cn = np.where(add, qg + dk, qg), np.where(add, cg + dk * pk, cg)
        r = np.where(was, dk * (pvk - pk), 0.0)  # after the settlement: booked at once
        j = np.flatnonzero(live & ~add)  # opposite fills: close at the average, maybe flip
        if len(j):
            qj, cj, dj, pj = qg[j], cg[j], dk[j], pk[j]
            sgn = np.where(qj > 0, 1.0, -1.0)
            avg = cj / qj
            close = np.minimum(np.abs(dj), np.abs(qj))
            r[j] = close * (pj - avg) * sgn
            qr = qj - sgn * close
            cr = avg * qr
            rem = dj + sgn * close
            flip = np.abs(rem) > FLAT_EPS
            qr, cr = np.where(flip, rem, qr), np.where(flip, rem * pj, cr)
            flat = np.abs(qr) < FLAT_EPS
            qn[j], cn[j] = np.where(flat, 0.0, qr), np.where(flat, 0.0, cr)
        r[st] = (qg * pvk - cg)[st]
        qn[st], cn[st] = 0.0, 0.0
        post[i], oversold[i] = ~st & was, live & (dk < 0) & (qn < -FLAT_EPS)
        q_out[i], c_out[i], r_out[i] = qn, cn, r
        q[g], c[g], done[g] = qn, cn, was | st
    return out


def unrealized_by_row(led: pd.DataFrame, led_row: np.ndarray, row_start: np.ndarray,
                      iv: int, mark: tuple) -> np.ndarray:
    """Sum over open (market, outcome) positions of shares x mark - cost at each bar's end.

    led_row: the bar row of each ledger entry (ledger order). A position is open from its
    group's first fill row to the row before its settlement row; the mark is the market's last
    mark with t < bar end (Up at the mark, Down at 1 - mark); no mark yet -> valued at cost."""
    n_rows = len(row_start)
    g = led["gid"].to_numpy()
    if len(g) == 0:
        return np.zeros(n_rows)
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    settle_idx = np.flatnonzero(led["settle"].to_numpy())  # one per group, same group order
    r0, r1 = led_row[first], led_row[settle_idx]
    length = np.clip(r1 - r0, 0, None)
    total = int(length.sum())
    grp = np.repeat(np.arange(len(first)), length)
    prow = np.repeat(r0, length) + (np.arange(total) - np.repeat(np.cumsum(length) - length,
                                                                  length))
    stride = np.int64(n_rows + 1)
    gi = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(g)]))
    ekey = gi * stride + led_row
    idx = np.searchsorted(ekey, grp * stride + prow, "right") - 1
    q, c = led["q"].to_numpy()[idx], led["c"].to_numpy()[idx]
    mk, mt, mv = mark
    m = led["market"].to_numpy()[first][grp]
    j = np.searchsorted(mk * KEY_STRIDE + mt, m * KEY_STRIDE + row_start[prow] + iv, "left") - 1
    ok = (j >= 0) & (mk[np.clip(j, 0, None)] == m) if len(mk) else np.zeros(total, bool)
    up = mv[np.clip(j, 0, None)] if len(mk) else np.zeros(total)
    val = np.where(led["outcome"].to_numpy()[first][grp] == 0, up, 1.0 - up)
    return np.bincount(prow, np.where(ok, q * val - c, 0.0), minlength=n_rows)
