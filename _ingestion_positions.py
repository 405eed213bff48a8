"""Position accounting of data_ingestion: settlement prices, the average-cost ledger and the
per-bar position columns.

Promise: from the trader's fills, the Up-token marks and the markets' ends, `ledger` builds one
entry per fill and one settlement entry per traded (market, outcome token), each with the change
it makes to shares, signed cost, |shares|, |cost| and realised P&L; `bar_positions` turns those
changes into the bar table's position columns (levels at each bar's end, exposure, marks,
P&L, time since entry) with cumulative sums and as-of joins. Nothing loops over bars or fills
in Python except the average-cost recursion's steps (below). It works on plain arrays and
imports no project module; data_ingestion.build_bars is its one caller.

No-leakage rule: a settlement price uses `resolution` (a fact of the market's end) or marks
before the end (the first mark after it only when there is none before); marks for bar t are
the last before the bar's end; every entry's effect lands in its own bar.

Run alone: no CLI; `python data_ingestion.py --data_dir DIR` runs it.

Decisions: average cost per (market, outcome) with cash = price x size; a sell beyond holdings
opens a short (counted as oversold); a fill after the market's end settles at once at the
market's payout; |shares| < FLAT_EPS is flat. The recursion is sequential within a (market,
outcome) group (the average after a fill depends on the one before) but groups are independent,
so `average_cost` takes one numpy step per position inside a group, across all groups at once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FLAT_EPS = 1e-9
"""|shares| below this is a flat position (also zeroes P&L rounding dust)."""


def settlement_prices(end_ms: np.ndarray, resolution: np.ndarray, mark: tuple
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per market: what its Up token pays (1.0 / 0.0; NaN without resolution and marks) and the
    source ("resolution", "last_mark", "first_mark_after_end", "none"). Down pays 1 - Up.

    mark: (market, t, up_price) arrays sorted by (market, t)."""
    mk, t, val = mark
    n = len(end_ms)
    before = t < end_ms[mk]  # (n_marks,)
    last_b = pd.Series(val[before]).groupby(mk[before]).last().reindex(range(n)).to_numpy()
    first_a = pd.Series(val[~before]).groupby(mk[~before]).first().reindex(range(n)).to_numpy()
    has_res = ~pd.isna(resolution)
    ok_b, ok_a = ~np.isnan(last_b), ~np.isnan(first_a)
    mark_pay = np.where(np.where(ok_b, last_b, first_a) >= 0.5, 1.0, 0.0)
    pay = np.where(has_res, resolution == "Up", np.where(ok_b | ok_a, mark_pay, np.nan))
    src = np.select([has_res, ok_b, ok_a], ["resolution", "last_mark", "first_mark_after_end"],
                    "none")
    return pay.astype(np.float64), src


def ledger(market: np.ndarray, outcome: np.ndarray, t: np.ndarray, dq: np.ndarray,
           price: np.ndarray, seq: np.ndarray, end_ms: np.ndarray, pay_up: np.ndarray
           ) -> pd.DataFrame:
    """Average-cost ledger in (market, outcome, t) order: fills, then one settlement per group.

    Inputs are per fill, in event order: market row, outcome (0 Up / 1 Down), t (ms), dq (signed
    shares, + buy), price, seq (event row). Columns: gid (market x 2 + outcome), market,
    outcome, t (settlement at end - 1 ms), settle, seq (-1 on a settlement), dq, dc, dabs_q,
    dabs_c, realized (changes of shares, signed cost, |shares|, |cost| and realised P&L), q, c
    (group levels after the entry), oversold, post_end."""
    gkey = market.astype(np.int64) * 2 + outcome
    groups = np.unique(gkey)
    # one settlement entry per traded (market, outcome), at end - 1 ms, after same-time fills
    t_all = np.concatenate([t, end_ms[groups // 2] - 1])
    g_all = np.concatenate([gkey, groups])
    settle = np.r_[np.zeros(len(gkey), bool), np.ones(len(groups), bool)]
    order = np.lexsort((settle, t_all, g_all))  # stable: fills at one time keep their order
    g_all, t_all, settle = g_all[order], t_all[order], settle[order]
    d = np.r_[dq, np.zeros(len(groups))][order].astype(np.float64)
    p = np.r_[price, np.zeros(len(groups))][order]
    out = (g_all % 2).astype(np.int8)
    pay = np.where(out == 0, pay_up[g_all // 2], 1.0 - pay_up[g_all // 2])
    new = np.r_[True, g_all[1:] != g_all[:-1]] if len(g_all) else np.zeros(0, bool)
    q, c, realized, oversold, post = average_cost(new, settle, d, p, pay)
    prev_q = np.where(new, 0.0, np.r_[0.0, q[:-1]])
    prev_c = np.where(new, 0.0, np.r_[0.0, c[:-1]])
    return pd.DataFrame({
        "gid": g_all, "market": g_all // 2, "outcome": out, "t": t_all, "settle": settle,
        "seq": np.r_[seq, np.full(len(groups), -1)][order], "dq": q - prev_q, "dc": c - prev_c,
        "dabs_q": np.abs(q) - np.abs(prev_q), "dabs_c": np.abs(c) - np.abs(prev_c),
        "realized": realized, "q": q, "c": c, "oversold": oversold, "post_end": post})


def average_cost(new: np.ndarray, settle: np.ndarray, d: np.ndarray, p: np.ndarray,
                 pv: np.ndarray) -> tuple[np.ndarray, ...]:
    """The average-cost recursion over ledger entries in group order (each group contiguous,
    `new` True at its first entry) -> (q, c, realized, oversold, post_end) per entry, q and c
    being the group's shares and signed cost after it.

    Per entry: a settlement books q * pv - c and closes the group; a fill after it books
    d * (pv - p) at once (post_end); a fill from flat or on the held side adds (q + d,
    c + d * p); an opposite fill closes min(|d|, |q|) at the average c / q and any rest opens
    the other side at p (a short from a sell beyond holdings counts as oversold); |q| < FLAT_EPS
    is flat. Step k handles the k-th entry of every group at once, so the loop runs as many
    times as the longest group has entries; each element sees the same operations in the same
    order as a scalar loop (tests/test_data_ingestion_positions.py keeps one as the reference)."""
    n = len(new)
    q_out, c_out, r_out = np.zeros(n), np.zeros(n), np.zeros(n)
    oversold, post = np.zeros(n, bool), np.zeros(n, bool)
    if n == 0:
        return q_out, c_out, r_out, oversold, post
    start = np.flatnonzero(new)
    gi = np.cumsum(new) - 1  # (n,) group of each entry
    pos = np.arange(n) - start[gi]  # (n,) position inside its group
    by_pos = np.argsort(pos, kind="stable")  # the entries of step k are contiguous
    bounds = np.r_[0, np.cumsum(np.bincount(pos))]
    q, c, done = np.zeros(len(start)), np.zeros(len(start)), np.zeros(len(start), bool)
    for k in range(len(bounds) - 1):
        i = by_pos[bounds[k]:bounds[k + 1]]  # (groups with a k-th entry,)
        g = gi[i]
        qg, cg, was, st, dk, pk, pvk = q[g], c[g], done[g], settle[i], d[i], p[i], pv[i]
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
    return q_out, c_out, r_out, oversold, post


def _levels(delta: np.ndarray, addr: np.ndarray, e_row: np.ndarray, row_addr: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Running level per address after each entry, and its value at each bar's end (0 before an
    address's first entry). Entries sorted by row; e_row, addr: (n_entries,)."""
    lvl = pd.Series(delta).groupby(addr).cumsum().to_numpy() if len(delta) else delta
    idx = np.searchsorted(e_row, np.arange(len(row_addr)), "right") - 1  # last entry <= row
    safe = np.clip(idx, 0, None)
    ok = (idx >= 0) & (addr[safe] == row_addr) if len(delta) else np.zeros(len(row_addr), bool)
    at_end = np.where(ok, lvl[safe] if len(delta) else 0.0, 0.0)
    return lvl, np.where(np.abs(at_end) < FLAT_EPS, 0.0, at_end)


def _unrealized(led: pd.DataFrame, led_row: np.ndarray, row_start: np.ndarray, iv: int,
                mark: tuple) -> np.ndarray:
    """Sum over open (market, outcome) positions of shares x mark - cost at each bar's end.

    A group is open from the row of its first entry to the row before its settlement row; its
    shares and cost are those after its last entry in or before the row, the mark the market's
    last one before the bar's end (Up at the mark, Down at 1 - mark; none yet: 0)."""
    n_rows, g = len(row_start), led["gid"].to_numpy()
    if len(g) == 0:
        return np.zeros(n_rows)
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # ledger order: groups contiguous
    r0, r1 = led_row[first], led_row[led["settle"].to_numpy()]  # one settlement per group
    length = np.clip(r1 - r0, 0, None)
    grp = np.repeat(np.arange(len(first)), length)  # (pairs,): one per open (group, row)
    prow = np.repeat(r0, length) + np.arange(len(grp)) - np.repeat(np.cumsum(length) - length,
                                                                   length)
    pairs = pd.DataFrame({"gid": g[first][grp], "market": led["market"].to_numpy()[first][grp],
                          "row": prow, "end": row_start[prow] + iv, "pair": np.arange(len(grp))})
    entries = pd.DataFrame({"gid": g, "row": led_row, "q": led["q"].to_numpy(),
                            "c": led["c"].to_numpy()}).sort_values("row", kind="stable")
    held = pd.merge_asof(pairs.sort_values("row", kind="stable"), entries, on="row", by="gid")
    marks = pd.DataFrame({"market": mark[0], "end": mark[1], "up": mark[2]})
    held = pd.merge_asof(held.sort_values("end", kind="stable"), marks.sort_values(
        "end", kind="stable"), on="end", by="market", allow_exact_matches=False)
    held = held.sort_values("pair")  # back to pair order: each row's sum in group order
    up = held["up"].to_numpy()
    val = np.where(held["gid"].to_numpy() % 2 == 0, up, 1.0 - up)
    value = np.where(np.isnan(up), 0.0, held["q"].to_numpy() * val - held["c"].to_numpy())
    return np.bincount(held["row"].to_numpy(), value, minlength=n_rows)


def bar_positions(fills: dict, fill_row: np.ndarray, led: pd.DataFrame, led_row: np.ndarray,
                  led_addr: np.ndarray, row_addr: np.ndarray, row_start: np.ndarray, iv: int,
                  mark: tuple) -> dict:
    """The fills (side, size, price, outcome arrays and each fill's bar row) and the ledger
    (ledger order, with each entry's bar row and address code) -> the bar table's
    POSITION_COLUMNS, one value per row: n_trades, net_shares, buy_usdc, sell_usdc, inv_up,
    inv_down, inventory, avg_entry_up, avg_entry_down, cost_basis, exposure_usdc, realized_pnl,
    unrealized_pnl, pnl, bars_since_entry, settled."""
    n = len(row_addr)
    side, size = fills["side"], fills["size"]
    cash, up_sign = fills["price"] * size, np.where(fills["outcome"] == 0, 1.0, -1.0)
    out = {"n_trades": np.bincount(fill_row, minlength=n).astype(np.int64),
           "net_shares": np.bincount(fill_row, side * size * up_sign, minlength=n),
           "buy_usdc": np.bincount(fill_row, np.where(side > 0, cash, 0.0), minlength=n),
           "sell_usdc": np.bincount(fill_row, np.where(side < 0, cash, 0.0), minlength=n)}
    # entries in time order per address (settlements after same-time fills), rows ascending
    o = np.lexsort((led["seq"].to_numpy(), led["settle"].to_numpy(), led["t"].to_numpy(),
                    led_addr))
    e_addr, e_row = led_addr[o], led_row[o]
    col = {k: led[k].to_numpy()[o] for k in ("outcome", "dq", "dc", "dabs_c", "dabs_q",
                                              "realized")}
    up = col["outcome"] == 0
    lv = {k: _levels(d, e_addr, e_row, row_addr) for k, d in (
        ("inv_up", np.where(up, col["dq"], 0.0)), ("inv_down", np.where(up, 0.0, col["dq"])),
        ("cost_up", np.where(up, col["dc"], 0.0)), ("cost_down", np.where(up, 0.0, col["dc"])),
        ("gross_c", col["dabs_c"]), ("gross_q", col["dabs_q"]), ("realized", col["realized"]))}
    end = {k: v[1] for k, v in lv.items()}
    out.update(inv_up=end["inv_up"], inv_down=end["inv_down"],
               inventory=end["inv_up"] - end["inv_down"])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["avg_entry_up"] = np.where(end["inv_up"] != 0, end["cost_up"] / end["inv_up"], np.nan)
        out["avg_entry_down"] = np.where(end["inv_down"] != 0,
                                         end["cost_down"] / end["inv_down"], np.nan)
    out["cost_basis"] = end["cost_up"] + end["cost_down"]
    new_addr = np.r_[True, row_addr[1:] != row_addr[:-1]]
    # exposure: the larger of the level the bar opens with and the peak after any entry in it
    peak = pd.Series(lv["gross_c"][0]).groupby(e_row).max()
    in_bar = np.full(n, np.nan)
    in_bar[peak.index.to_numpy()] = peak.to_numpy()
    out["exposure_usdc"] = np.fmax(np.where(new_addr, 0.0, np.r_[0.0, end["gross_c"][:-1]]),
                                   in_bar)
    out["realized_pnl"] = end["realized"]
    un = _unrealized(led, led_row, row_start, iv, mark)
    out["unrealized_pnl"] = np.where(np.abs(un) < FLAT_EPS, 0.0, un)
    total = out["realized_pnl"] + out["unrealized_pnl"]
    out["pnl"] = total - np.where(new_addr, 0.0, np.r_[0.0, total[:-1]])
    # bars since the trader last went from holding nothing to holding something
    held = end["gross_q"] > FLAT_EPS
    entry = held & (new_addr | ~np.r_[False, held[:-1]])
    run_start = np.flatnonzero(entry)
    since = np.arange(n) - (run_start[np.clip(np.cumsum(entry) - 1, 0, None)]
                            if len(run_start) else 0)
    out["bars_since_entry"] = np.where(held, since, -1).astype(np.int64)
    settled = np.zeros(n, bool)
    settled[led_row[led["settle"].to_numpy()]] = True
    out["settled"] = settled
    return out


def summary(led: pd.DataFrame, pay_src: np.ndarray, realized_end: np.ndarray) -> dict:
    """The report's "positions": oversold and post-end fills, traded markets, their settlement
    sources and the settled P&L (realized_end: each address's realised P&L at its last bar)."""
    traded = np.unique(led["market"].to_numpy()[led["settle"].to_numpy()])
    return {"oversold_trades": int(led["oversold"].sum()),
            "post_end_trades": int(led["post_end"].sum()), "markets_traded": len(traded),
            "settlement_source": {k: int(v) for k, v in pd.Series(pay_src[traded], dtype=object)
                                  .value_counts().items()},
            "settled_pnl": float(realized_end.sum())}
