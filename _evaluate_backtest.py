"""The twin report's backtest: Polymarket's taker fee, fills at quotes, settlement, the replay check.

Promise: `taker_fee` is the one fee formula of the project (predict.py uses it too);
`execution_quotes` finds, for each bar, the quote a bot deciding at the bar's start meets;
`simulate` trades signed Up-equivalent orders per bar as a taker at those quotes and settles
every position at 1 or 0; `run_backtest` (called by evaluate.py) runs the twin's bot, the
trader's replay and one bot per target RTG of the sweep, and returns the report's numbers (USDC
and shares throughout). Everything is a pure function of the rows, the quotes and the fills.

No-leakage rule (no peeking): the bot's action in bar t is the twin's prediction from the state
of bar t (events before bar_start); it fills at the FIRST quote (price_change event) stamped at
or after bar_start + latency and before the bar's and the market's end; an earlier quote, the
trader's own fill prices and anything after the fill never enter its price. Settlement (the
parquet's `settle_up`, the ingestion's payout) is an outcome, used only to value positions.

Run alone: no CLI; `python evaluate.py` runs it.

Decisions where the issue is silent:
- Fee schedule: docs.polymarket.com "Maker Rebates Program" (polymarket-learn/trading/
  maker-rebates-program, published 2026-01-06 for the 15-minute crypto markets): takers pay
  fee = shares x rate x (p (1 - p))^exponent, makers pay nothing. rate 0.25 and exponent 2
  reproduce the page's tables (100 shares: 0.20 at p 0.10, 1.56 at 0.50, 0.64 at 0.20). The
  page takes the fee from what the taker receives: on a BUY in tokens (100 shares at 0.50 give
  98.44 tokens, a fee worth 0.78 USDC at the fill price), on a SELL in USDC (1.56). The engine
  books it that way: bought tokens net of the fee settle at 1 or 0, so a buy fee costs its token
  count x the payout. Maker rebates (a daily share of the pool) are not modelled: a maker's P&L
  after fees is a lower bound.
- Execution: one taker order per bar and market, at the first quote's top (no depth is known:
  any size fills there). A SELL-side order sells held Up first and buys Down (at 1 - Up bid) for
  the rest; a BUY-side order sells held Down (at 1 - Up ask) first and buys Up at the ask, as
  demo_data's trader does. An order that would push |held Up - held Down| past the cap (shares,
  per market) is cut to the cap. No quote in the window: no fill, counted (`unfilled_orders`).
- Statistics over markets (each market one draw, zero where the bot held): mean per market with
  a 95 % percentile bootstrap interval (markets resampled with replacement), hit rate over the
  markets it traded, daily Sharpe (UTC days by market start, all days of the span; x sqrt(365)
  annualised: the markets trade every day), maximum drawdown of the per-market equity. The
  equity band is the 2.5..97.5 % range of equity paths of resampled markets. Target RTGs are
  compared paired (the same resampled markets for every target).
- Replay check: the trader's own net shares per bar through the same engine (no cap) must give
  the trader's settled P&L before fees within REPLAY_TOLERANCE of the replay's traded notional:
  it fills at the first quote after the latency, not at the trader's own prices (on the demo,
  fills a few seconds later that walk up to 3 ticks into the book).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from action_discretization import inverse
from data_ingestion import MARKET_SECONDS

FEE_RATE = 0.25
"""Polymarket's taker fee rate of the 15-minute crypto markets (Maker Rebates Program, 2026-01)."""
FEE_EXPONENT = 2.0
"""Exponent of p (1 - p) in the taker fee (same source)."""
LATENCY_S = 2.0
"""Seconds from the bar's start (the decision) to the bot's order reaching the book."""
REPLAY_TOLERANCE = 0.03
"""Largest |replay - trader| settled P&L before fees, as a fraction of the replay's notional."""
EPS = 1e-9


# ---------------------------------------------------------------- the fee
def taker_fee(shares, price, rate: float = FEE_RATE, exponent: float = FEE_EXPONENT):
    """Fee of a taker fill: shares x rate x (p (1 - p))^exponent (arrays broadcast). It is in
    tokens on a BUY (taken from the tokens received) and in USDC on a SELL; makers pay 0."""
    p = np.asarray(price, dtype=np.float64)
    return np.asarray(shares, dtype=np.float64) * rate * (p * (1.0 - p)) ** exponent


def fee_usdc_at_fill(shares, price, buy, rate: float = FEE_RATE, exponent: float = FEE_EXPONENT):
    """The taker fee's value at the fill price in USDC: tokens x price on a BUY, as is on a SELL."""
    fee = taker_fee(shares, price, rate, exponent)
    return np.where(np.asarray(buy, bool), fee * np.asarray(price, np.float64), fee)


def fill_fee_cost(fills: pd.DataFrame, payout_up: np.ndarray, taker: np.ndarray,
                  rate: float = FEE_RATE, exponent: float = FEE_EXPONENT) -> np.ndarray:
    """USDC the fee of each recorded fill cost at settlement (0 for makers: `taker` False).

    fills: price, size, side (+1 BUY), outcome (0 Up); payout_up: what the market's Up token paid
    (NaN unknown: a buy's token fee then valued at the fill price)."""
    price, size = fills["price"].to_numpy(np.float64), fills["size"].to_numpy(np.float64)
    buy = fills["side"].to_numpy() > 0
    pay = np.where(fills["outcome"].to_numpy() == 0, payout_up, 1.0 - payout_up)
    fee = taker_fee(size, price, rate, exponent)
    cost = np.where(buy, fee * np.where(np.isfinite(pay), pay, price), fee)
    return np.where(np.asarray(taker, bool), cost, 0.0)


# ---------------------------------------------------------------- quotes and fills
def market_start_ms(slugs) -> np.ndarray:
    """Window start (ms) from `btc-updown-15m-{start s}` slugs; NaN where no slug."""
    s = pd.Series(slugs, dtype=object)
    return pd.to_numeric(s.str.rsplit("-", n=1).str[-1], errors="coerce").to_numpy(np.float64) * 1000


def execution_quotes(rows: pd.DataFrame, quotes: pd.DataFrame, latency_s: float = LATENCY_S,
                     bar_ms: int = MARKET_SECONDS * 1000) -> pd.DataFrame:
    """Per row (same order): market (code of (address, slug), -1 outside a settled market),
    start_ms, payout (settle_up), q_t (ms of the quote met, NaN: none), bid, ask.

    The quote met is the first of the row's market with t >= bar_start + latency and t < the
    bar's end and the market's end (quotes: address, slug, t, best_bid, best_ask)."""
    start = market_start_ms(rows["slug"])
    pay = rows["settle_up"].to_numpy(np.float64)
    ok = np.isfinite(start) & np.isfinite(pay)
    key = pd.Series(rows["address"].astype(str).to_numpy(), dtype=object) + "/" + rows["slug"].astype(str)
    code = np.where(ok, pd.factorize(key.where(ok, None))[0], -1)
    t0 = rows["bar_start"].to_numpy("datetime64[ms]").astype(np.int64)
    out = pd.DataFrame({"market": code, "start_ms": start, "payout": pay, "q_t": np.nan,
                        "bid": np.nan, "ask": np.nan})
    if quotes is None or quotes.empty or not ok.any():
        return out
    left = pd.DataFrame({"address": rows["address"].astype(str).to_numpy(),
                         "slug": rows["slug"].astype(str).to_numpy(),
                         "t": t0 + int(round(latency_s * 1000)), "_row": np.arange(len(rows))})
    right = quotes[["address", "slug", "t", "best_bid", "best_ask"]].assign(
        q_t=quotes["t"].to_numpy(np.float64)).sort_values("t", kind="stable")
    hit = pd.merge_asof(left[ok].sort_values("t", kind="stable"), right, on="t",
                        by=["address", "slug"], direction="forward", allow_exact_matches=True)
    rr = hit["_row"].to_numpy()
    end = np.minimum(t0[rr] + bar_ms, start[rr] + MARKET_SECONDS * 1000)
    inside = hit["q_t"].to_numpy() < end  # NaN (no later quote) is False
    out.loc[rr[inside], ["q_t", "bid", "ask"]] = hit.loc[inside, ["q_t", "best_bid", "best_ask"]].to_numpy()
    return out


def simulate(book: pd.DataFrame, orders, bar_start, cap: float = math.inf,
             rate: float = FEE_RATE, exponent: float = FEE_EXPONENT) -> tuple[pd.DataFrame, dict]:
    """Trade `orders` (signed Up-equivalent shares per row of `book`) as a taker; settle.

    Rows are taken in bar_start order. Returns (fills, per_market) where fills has one row per
    token traded (row, t, token Up|Down, side +1/-1, shares, price, fee, fee_in: tokens|usdc) and
    per_market maps arrays over market codes 0..M-1: pnl_before, fees, pnl_after (USDC),
    shares, notional, n_fills; plus the counts unfilled_orders and capped_orders."""
    orders = np.nan_to_num(np.asarray(orders, np.float64))
    mkt, pay = book["market"].to_numpy(), book["payout"].to_numpy()
    bid, ask, qt = book["bid"].to_numpy(), book["ask"].to_numpy(), book["q_t"].to_numpy()
    m = int(mkt.max()) + 1 if len(mkt) else 0
    up, dn, cash, fee_c, fee_u, fee_d = (np.zeros(m) for _ in range(6))  # gross tokens; fees apart
    shares, notional, n_fills = np.zeros(m), np.zeros(m), np.zeros(m, np.int64)
    rec, unfilled, capped = [], 0, 0
    want = np.flatnonzero((np.abs(orders) > EPS) & (mkt >= 0))
    for i in want[np.argsort(np.asarray(bar_start)[want], kind="stable")].tolist():
        if not np.isfinite(qt[i]):
            unfilled += 1
            continue
        k, sign = mkt[i], 1.0 if orders[i] > 0 else -1.0
        held_up, held_dn = up[k] - fee_u[k], dn[k] - fee_d[k]
        size = min(abs(orders[i]), max(0.0, cap - sign * (held_up - held_dn)))
        capped += size < abs(orders[i]) - EPS
        if size <= EPS:
            continue
        # (token, side, shares, price): close the opposite token first, then open
        if sign > 0:
            legs = [("Down", -1.0, min(max(held_dn, 0.0), size), 1.0 - ask[i]), ("Up", 1.0, 0.0, ask[i])]
        else:
            legs = [("Up", -1.0, min(max(held_up, 0.0), size), bid[i]), ("Down", 1.0, 0.0, 1.0 - bid[i])]
        legs[1] = (*legs[1][:2], size - legs[0][2], legs[1][3])
        for token, side, q, px in legs:
            if q <= EPS:
                continue
            fee = float(taker_fee(q, px, rate, exponent))
            cash[k] -= side * q * px
            if token == "Up":
                up[k] += side * q
            else:
                dn[k] += side * q
            if side > 0:  # a buy's fee is taken in the tokens received
                (fee_u if token == "Up" else fee_d)[k] += fee
            else:
                fee_c[k] += fee
            shares[k] += q
            notional[k] += q * px
            n_fills[k] += 1
            rec.append((i, qt[i], token, side, q, px, fee, "tokens" if side > 0 else "usdc"))
    p = np.zeros(m)
    have = mkt >= 0
    p[mkt[have]] = pay[have]
    before = cash + up * p + dn * (1.0 - p)
    fees = fee_c + fee_u * p + fee_d * (1.0 - p)
    fills = pd.DataFrame(rec, columns=["row", "t", "token", "side", "shares", "price", "fee", "fee_in"])
    return fills, {"pnl_before": before, "fees": fees, "pnl_after": before - fees, "shares": shares,
                   "notional": notional, "n_fills": n_fills, "unfilled_orders": unfilled,
                   "capped_orders": int(capped)}


def default_cap(df: pd.DataFrame) -> float:
    """The trader's largest |Up-equivalent net shares| accumulated in one market over the train
    split's bars (bar-end inventory is 0 once a market settles inside its bar); inf if unknown."""
    train = df[(df["split"] == "train") & df["slug"].notna()] if "slug" in df else df.iloc[:0]
    if train.empty:
        return math.inf
    held = train.groupby([train["address"], train["slug"]], sort=False)["net_shares"].cumsum()
    v = float(np.abs(held.to_numpy(np.float64)).max())
    return v if v > 0 else math.inf


# ---------------------------------------------------------------- statistics
def resample_markets(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices of markets drawn with replacement (shared by every compared series)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)


def mean_interval(x: np.ndarray, idx: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """(mean, 2.5 %, 97.5 %) of the per-market mean over the resamples `idx`."""
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return None, None, None
    boot = x[idx].mean(1)
    return float(x.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def pnl_summary(pnl: np.ndarray, traded: np.ndarray, day: np.ndarray, idx: np.ndarray) -> dict:
    """Total, per-market mean with its 95 % interval, hit rate, daily Sharpe, max drawdown (USDC);
    `pnl` per market in time order, `traded` where a fill happened, `day` the UTC day of each."""
    mean, lo, hi = mean_interval(pnl, idx)
    daily = pd.Series(pnl).groupby(day).sum()
    full = pd.date_range(daily.index.min(), daily.index.max(), freq="D") if len(daily) else []
    daily = daily.reindex(full, fill_value=0.0).to_numpy()
    sd = daily.std(ddof=1) if len(daily) > 1 else 0.0
    sharpe = float(daily.mean() / sd) if sd > EPS else None
    eq = np.r_[0.0, np.cumsum(pnl)]
    return {
        "total_usdc": float(np.sum(pnl)), "mean_per_market_usdc": mean,
        "mean_ci95_usdc": [lo, hi], "markets": int(len(pnl)), "markets_traded": int(traded.sum()),
        "hit_rate": float((pnl[traded] > 0).mean()) if traded.any() else None,
        "days": int(len(daily)), "sharpe_daily": sharpe,
        "sharpe_annualised": None if sharpe is None else sharpe * math.sqrt(365.0),
        "max_drawdown_usdc": float((np.maximum.accumulate(eq) - eq).max()),
    }


def equity_band(pnl: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5 % and 97.5 % of the equity after each market over paths of resampled markets."""
    if len(pnl) == 0:
        return np.zeros(0), np.zeros(0)
    paths = np.cumsum(np.asarray(pnl, np.float64)[idx], axis=1)
    return np.quantile(paths, 0.025, axis=0), np.quantile(paths, 0.975, axis=0)


# ---------------------------------------------------------------- the report's backtest
def rtg_table(targets: np.ndarray, per_target: np.ndarray, idx: np.ndarray) -> dict:
    """Per target: mean P&L after fees per market with its interval; Spearman with the target,
    the paired highest-minus-lowest difference and whether all intervals overlap, in words."""
    stats = [mean_interval(x, idx) for x in per_target]
    mean = [s[0] for s in stats]
    lo, hi = [s[1] for s in stats], [s[2] for s in stats]
    rho = p = None
    if len(targets) >= 3 and np.ptp(mean) > EPS:
        r = spearmanr(targets, mean)
        rho, p = float(r.statistic), float(r.pvalue)
    diff = mean_interval(per_target[-1] - per_target[0], idx)
    overlap = bool(max(lo) <= min(hi)) if lo and lo[0] is not None else None
    trend = p is not None and p < 0.05  # per-target means monotone in the target
    apart = diff[0] is not None and (diff[1] > 0 or diff[2] < 0)  # paired interval excludes 0
    steer = trend and apart and np.sign(rho) == np.sign(diff[0])
    rank = "n/a (the same P&L at every target)" if rho is None else f"{rho:+.2f} (p {p:.2f})"
    ends = ("" if diff[0] is None else f"highest minus lowest target {diff[0]:+.3f} USDC per "
            f"market (paired 95 % interval {diff[1]:+.3f} .. {diff[2]:+.3f})")
    both = f"Spearman of mean P&L with the target {rank}; {ends}" + (
        "; the per-target intervals all overlap" if overlap else "")
    if steer:
        verdict = (f"the target steers return: higher targets give "
                   f"{'higher' if diff[0] > 0 else 'lower'} P&L after fees ({both})")
    elif trend or apart:
        verdict = f"the target does not reliably steer return: only one of the two tests agrees ({both})"
    else:
        verdict = f"no evidence that the target steers return ({both})"
    return {"targets": [float(t) for t in targets], "mean_per_market_usdc": mean,
            "ci95_low_usdc": lo, "ci95_high_usdc": hi,
            "total_usdc": [float(x.sum()) for x in per_target], "spearman": rho, "spearman_p": p,
            "highest_minus_lowest_usdc": list(diff), "intervals_overlap": overlap,
            "steers": bool(steer), "verdict": verdict}


def _trader_fees(fills, rows, codes, payout, bar_ms, rate, exponent) -> dict:
    """Fee cost of the trader's own fills in the evaluated bars, per market (roles where known,
    and as if every fill were a taker's)."""
    m = len(codes)
    zero = {"known_share": None, "per_market": None, "all_taker_per_market": np.zeros(m), "fills": 0}
    if fills is None or fills.empty:
        return zero | {"known_share": 1.0, "per_market": np.zeros(m)}
    bar = pd.to_datetime((fills["t"].to_numpy() // bar_ms) * bar_ms, unit="ms", utc=True)
    key = pd.DataFrame({"address": rows["address"].astype(str).to_numpy(),
                        "bar_start": rows["bar_start"].to_numpy(), "_in": True})
    key["bar_start"] = pd.to_datetime(key["bar_start"], utc=True).astype(bar.dtype)
    f = fills.assign(bar_start=bar).merge(key, on=["address", "bar_start"], how="inner")
    slot = codes.reindex(pd.MultiIndex.from_frame(f[["address", "slug"]])).to_numpy()
    slot = np.where(np.isnan(slot), -1, slot).astype(np.int64)
    pay = np.where(slot >= 0, payout[np.clip(slot, 0, None)], np.nan)
    f = f[slot >= 0]
    pay, slot = pay[slot >= 0], slot[slot >= 0]
    if f.empty:
        return zero | {"known_share": 1.0, "per_market": np.zeros(m)}
    role = f["role"].to_numpy()
    known = float((role != 0).mean())
    cost = fill_fee_cost(f, pay, role == 2, rate, exponent)
    bound = fill_fee_cost(f, pay, np.ones(len(f), bool), rate, exponent)
    return {"known_share": known, "fills": int(len(f)),
            "per_market": np.bincount(slot, cost, m) if known == 1.0 else None,
            "all_taker_per_market": np.bincount(slot, bound, m)}


def run_backtest(rows: pd.DataFrame, pred: np.ndarray, targets: np.ndarray, target_pred: np.ndarray,
                 class_sizes: dict, quotes: pd.DataFrame | None, fills: pd.DataFrame | None, *,
                 bar_ms: int, latency_s: float = LATENCY_S, cap: float = math.inf,
                 rate: float = FEE_RATE, exponent: float = FEE_EXPONENT, n_boot: int = 2000,
                 seed: int = 0, reason: str | None = None) -> tuple[dict, pd.DataFrame | None]:
    """The report's backtest of the evaluated `rows` (address, bar_start, slug, settle_up,
    net_shares, pnl): the twin's bot (`pred`, class sizes), the trader and its replay, and the
    bot at each target RTG (`target_pred` (G, N)). Returns (summary, equity curves per market in
    time order, None without quotes; `reason` says why quotes are missing)."""
    trader_total = float(rows["pnl"].sum())
    base = {"fee_model": {"rate": rate, "exponent": exponent, "maker_fee": 0.0,
                          "source": "docs.polymarket.com, Maker Rebates Program, 2026-01-06"},
            "latency_s": latency_s, "inventory_cap_shares": None if math.isinf(cap) else cap,
            "class_sizes": {k: float(v or 0.0) for k, v in class_sizes.items()},
            "trader_total_pnl_usdc": trader_total}
    if quotes is None or quotes.empty:
        return base | {"available": False, "reason": reason or "the price files carry no "
                       "price_change quotes for these addresses"}, None
    book = execution_quotes(rows, quotes, latency_s, bar_ms)
    if (book["market"] < 0).all():
        return base | {"available": False, "reason": "no evaluated bar lies in a settled market"}, None
    t = rows["bar_start"].to_numpy()
    have = book["market"].to_numpy() >= 0
    first = book[have].assign(address=rows["address"].astype(str).to_numpy()[have],
                              slug=rows["slug"].astype(str).to_numpy()[have]).groupby("market").first()
    order = np.lexsort((first["address"].to_numpy(), first["start_ms"].to_numpy()))  # time order
    codes = pd.Series(first.index.to_numpy(), index=pd.MultiIndex.from_frame(first[["address", "slug"]]))
    day = pd.to_datetime(first["start_ms"].to_numpy()[order], unit="ms", utc=True).floor("D")
    idx = resample_markets(len(first), n_boot, seed)

    def per_market(x):  # market-code arrays -> time order
        return np.asarray(x, np.float64)[order]

    def run(orders, c=cap):
        _, r = simulate(book, orders, t, c, rate, exponent)
        return r

    bot = run(inverse(pred, class_sizes))
    replay = run(rows["net_shares"].to_numpy(np.float64), math.inf)
    trader = per_market(np.bincount(book["market"].to_numpy()[have], rows["pnl"].to_numpy()[have],
                                    len(first)))
    fees = _trader_fees(fills, rows, codes, first["payout"].to_numpy(), bar_ms, rate, exponent)
    traded_by_trader = per_market(np.bincount(book["market"].to_numpy()[have],
                                              np.abs(rows["net_shares"].to_numpy()[have]) > 0,
                                              len(first))) > 0
    bot_traded = per_market(bot["n_fills"]) > 0
    summ = {k: pnl_summary(per_market(bot[k]), bot_traded, day, idx) for k in ("pnl_before", "pnl_after")}
    tr_before = pnl_summary(trader, traded_by_trader, day, idx)
    tr_after = None
    if fees["per_market"] is not None:
        tr_after = pnl_summary(trader - per_market(fees["per_market"]), traded_by_trader, day, idx)
    diff = float(replay["pnl_before"].sum() - trader.sum())
    notional = float(replay["notional"].sum())
    rel = abs(diff) / notional if notional > EPS else None
    per_target = np.stack([per_market(run(inverse(p, class_sizes))["pnl_after"]) for p in target_pred])
    b_after = per_market(bot["pnl_after"])
    corr = None
    if len(trader) > 2 and b_after.std() > EPS and trader.std() > EPS:
        corr = float(np.corrcoef(b_after, trader)[0, 1])
    summary = base | {
        "available": True, "markets": int(len(first)), "bootstrap_resamples": int(n_boot),
        "bot": {"before_fees": summ["pnl_before"], "after_fees": summ["pnl_after"],
                "fees_usdc": float(bot["fees"].sum()), "fills": int(bot["n_fills"].sum()),
                "shares_traded": float(bot["shares"].sum()), "notional_usdc": float(bot["notional"].sum()),
                "unfilled_orders": bot["unfilled_orders"], "capped_orders": bot["capped_orders"]},
        "trader": {"before_fees": tr_before, "after_fees": tr_after,
                   "fees_known": fees["per_market"] is not None, "role_known_share": fees["known_share"],
                   "fills": fees["fills"],
                   "fees_usdc": None if fees["per_market"] is None else float(fees["per_market"].sum()),
                   "fees_if_all_taker_usdc": float(fees["all_taker_per_market"].sum())},
        "replay": {"pnl_before_fees_usdc": float(replay["pnl_before"].sum()),
                   "pnl_after_fees_usdc": float(replay["pnl_after"].sum()),
                   "trader_pnl_usdc": float(trader.sum()), "difference_usdc": diff,
                   "notional_usdc": notional, "relative_difference": rel,
                   "tolerance": REPLAY_TOLERANCE,
                   "within_tolerance": None if rel is None else bool(rel <= REPLAY_TOLERANCE),
                   "unfilled_orders": replay["unfilled_orders"]},
        "pnl_correlation_per_market": corr,
        "rtg_table": rtg_table(np.asarray(targets, np.float64), per_target, idx),
    }
    lo, hi = equity_band(b_after, idx)
    curve = pd.DataFrame({"market_start": pd.to_datetime(first["start_ms"].to_numpy()[order], unit="ms", utc=True),
                          "bot_after_fees": np.cumsum(b_after),
                          "bot_before_fees": np.cumsum(per_market(bot["pnl_before"])),
                          "bot_band_low": lo, "bot_band_high": hi, "trader": np.cumsum(trader)})
    if tr_after is not None:
        curve["trader_after_fees"] = np.cumsum(trader - per_market(fees["per_market"]))
    return summary, curve
