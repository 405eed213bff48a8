"""The `extended` state set's extra features: what a BTC Up/Down trader could see before a bar.

Promise: `extended_raw(bars, bar_interval)` returns, for every bar-table row (same index), the
unnormalised columns `extended_columns(bar_interval)`; state_features standardises them on the
train split and clips them like every other state column. `EXTENDED_UNITS` names each one's
unit. Private part of state_features.py (nothing else imports it).

No-leakage rule: the value of row t uses only what is known at bar_start(t): BTC closes of bars
that ended at or before bar_start (u_close of rows < t of the same address), the Up token's
last mid of bars that ended before it, markets that ended at or before it, and the trader's own
fills and P&L of rows < t. tests/test_state_extended.py perturbs every bar from T on and checks
that no row before T (nor T itself) moves.

Decisions where the issue is silent (b = the bar length in minutes):
- Horizons are in minutes and exist only where they are whole multiples of b (>= 1 bar for
  returns, >= 2 bars for realised volatility): at 15-minute bars btc_ret_1m / _5m are not
  observable from the bar table, and the current-market features are constant at a market's
  open (time left 1, distance 0, fair value 0.5), so those columns exist only at b < 15.
- Volatility unit: sigma_1 = std of the 1-bar BTC log returns over the trailing day (1440 / b
  bars, at least 20; >= 10 needed, else the vol-unit features are NaN -> the train mean).
  btc_ret_{h}m = log(P_t / P_{t-k}) / (sigma_1 sqrt k), k = h / b, P_t = BTC at bar_start(t).
  rv_{h}m = log of the std of the 1-bar log returns over the last k bars (a level; standardised).
- Strike = BTC at the market's start (P of its first bar); strike_dist = log(P_t / strike) /
  (sigma_1 sqrt(minutes left / b)); fair_value = Phi(strike_dist), the driftless binary's value.
  up_mid = the Up token's mid close of the previous bar when it is the same market, else the
  fair value (the market just opened: no quote of its own yet); mid_minus_fair = up_mid - fair.
  The bar table has no bid/ask, so the spread is left out.
- Resolutions: a market resolved Up (+1) or Down (-1) by its settle_up, else by BTC at its end
  >= its strike. res_1..3 are the last three markets that ended at or before bar_start, and
  res_streak the signed run of equal outcomes ending with res_1 (capped at +-10).
- Own activity: bars_since_trade = log1p(bars since the last bar with net shares != 0, capped at
  a day); net_15m / net_60m = signed net shares of the bars in the last 15 / 60 minutes (at
  least one bar); pnl_15m / pnl_1d = the trader's P&L (USDC) over the last 15 minutes / day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr

MARKET_MINUTES = 15
RETURN_HORIZONS = (1, 5, 15, 60, 240)
"""Minutes of the BTC log-return features (those that are whole multiples of the bar)."""
VOL_HORIZONS = (60, 240, 1440)
"""Minutes of the realised-volatility features (those spanning >= 2 bars)."""
STREAK_CAP = 10
MARKET_COLUMNS = ["market_time_left", "strike_dist", "fair_value", "up_mid", "mid_minus_fair"]
RESOLUTION_COLUMNS = ["res_1", "res_2", "res_3", "res_streak"]
ACTIVITY_COLUMNS = ["bars_since_trade", "net_15m", "net_60m", "pnl_15m", "pnl_1d"]
EXTENDED_UNITS = {
    **{f"btc_ret_{h}m": "BTC log return / 1-bar vol x sqrt(bars)" for h in RETURN_HORIZONS},
    **{f"rv_{h}m": "log per-bar BTC vol" for h in VOL_HORIZONS},
    "market_time_left": "fraction of the market left", "strike_dist": "vol units to the strike",
    "fair_value": "P(Up), 0..1", "up_mid": "Up-token mid, 0..1", "mid_minus_fair": "mid - P(Up)",
    "res_1": "+1 Up / -1 Down", "res_2": "+1 Up / -1 Down", "res_3": "+1 Up / -1 Down",
    "res_streak": "signed markets in a row", "bars_since_trade": "log(1 + bars)",
    "net_15m": "Up-equivalent shares", "net_60m": "Up-equivalent shares",
    "pnl_15m": "USDC", "pnl_1d": "USDC",
}
"""The unit of each extended column (standardised away in the state; the rules show it)."""


def bar_minutes(bar_interval: str) -> float:
    """The bar length in minutes."""
    return pd.Timedelta(bar_interval).total_seconds() / 60.0


def extended_columns(bar_interval: str) -> list[str]:
    """The extended set's extra column names at this bar interval (see the module docstring)."""
    b = bar_minutes(bar_interval)
    rets = [f"btc_ret_{h}m" for h in RETURN_HORIZONS if h >= b and (h / b).is_integer()]
    vols = [f"rv_{h}m" for h in VOL_HORIZONS if h >= 2 * b and (h / b).is_integer()]
    market = MARKET_COLUMNS if b < MARKET_MINUTES else []
    return rets + vols + market + RESOLUTION_COLUMNS + ACTIVITY_COLUMNS


def _shift(x: pd.Series, by: np.ndarray, k: int = 1) -> pd.Series:
    return x.groupby(by, sort=False).shift(k)


def _rolling(x: pd.Series, by: np.ndarray, n: int, how: str, min_periods: int = 1) -> pd.Series:
    r = x.groupby(by, sort=False).rolling(n, min_periods=min_periods)
    return getattr(r, how)().reset_index(level=0, drop=True).sort_index()


def _resolutions(bars: pd.DataFrame, strike: pd.Series, u: pd.Series, addr: np.ndarray,
                 window: np.ndarray) -> pd.DataFrame:
    """res_1..3 and res_streak per row from one row per (address, market window); u = BTC's
    forward-filled close of each bar (its last value in a window is BTC at the market's end)."""
    per = pd.DataFrame({"address": addr, "window": window, "strike": strike, "u_end": u,
                        "settle": bars["settle_up"].astype(float) if "settle_up" in bars else np.nan})
    m = per.groupby(["address", "window"], sort=False).agg(
        strike=("strike", "first"), u_end=("u_end", "last"), settle=("settle", "last"))
    up = np.where(m["settle"].notna(), m["settle"] >= 0.5, m["u_end"] >= m["strike"])
    known = m["settle"].notna() | (m["u_end"].notna() & m["strike"].notna())
    res = pd.Series(np.where(known, np.where(up, 1.0, -1.0), np.nan), index=m.index)
    a = m.index.get_level_values(0).to_numpy()
    out = pd.DataFrame(index=m.index)
    for k in (1, 2, 3):  # market w sees the outcomes of w-1, w-2, w-3 (ended by its start)
        out[f"res_{k}"] = _shift(res, a, k).to_numpy()
    prev = out["res_1"]
    run_id = (prev != _shift(prev, a)).groupby(a, sort=False).cumsum()
    length = prev.groupby([a, run_id.to_numpy()], sort=False).cumcount() + 1
    out["res_streak"] = (prev * np.minimum(length, STREAK_CAP)).to_numpy()
    key = pd.MultiIndex.from_arrays([addr, window])
    return out.reindex(key).set_axis(bars.index)


def extended_raw(bars: pd.DataFrame, bar_interval: str) -> pd.DataFrame:
    """The extended columns for every row of the bar table (sorted by address, bar_start).

    Reads address, bar_start, u_close, close, settle_up, net_shares and pnl; NaN where a value is
    not defined yet (warm-up, no BTC data), which standardisation maps to the train mean."""
    b = bar_minutes(bar_interval)
    addr = bars["address"].astype(str).to_numpy()
    start = pd.to_datetime(bars["bar_start"], utc=True)
    u = bars["u_close"].astype(float).where(lambda x: x > 0).groupby(addr, sort=False).ffill()
    price = _shift(u, addr)  # BTC at bar_start(t): the close of bar t-1
    lr1 = np.log(price / _shift(price, addr))
    day = max(int(round(1440 / b)), 20)
    sigma = _rolling(lr1, addr, day, "std", min_periods=10).where(lambda x: x > 0)
    out = pd.DataFrame(index=bars.index)
    cols = extended_columns(bar_interval)
    for h in RETURN_HORIZONS:
        if f"btc_ret_{h}m" in cols:
            k = int(round(h / b))
            out[f"btc_ret_{h}m"] = np.log(price / _shift(price, addr, k)) / (sigma * np.sqrt(k))
    for h in VOL_HORIZONS:
        if f"rv_{h}m" in cols:
            k = int(round(h / b))
            out[f"rv_{h}m"] = np.log(_rolling(lr1, addr, k, "std", min_periods=2).where(lambda x: x > 0))
    window = start.dt.floor(f"{MARKET_MINUTES}min")
    strike = price.groupby([addr, window.to_numpy()], sort=False).transform("first")
    if "market_time_left" in cols:
        left = (window + pd.Timedelta(minutes=MARKET_MINUTES) - start).dt.total_seconds() / 60.0
        out["market_time_left"] = left / MARKET_MINUTES
        out["strike_dist"] = np.log(price / strike) / (sigma * np.sqrt(left / b))
        fair = pd.Series(ndtr(out["strike_dist"].to_numpy()), index=bars.index)
        out["fair_value"] = fair
        same = (_shift(window, addr) == window).to_numpy()
        mid = _shift(bars["close"].astype(float), addr).where(same)
        out["up_mid"] = mid.fillna(fair)
        out["mid_minus_fair"] = out["up_mid"] - fair
    out = pd.concat([out, _resolutions(bars, strike, u, addr, window.to_numpy())], axis=1)
    net = _shift(bars["net_shares"].astype(float).fillna(0.0), addr).fillna(0.0)
    pnl = _shift(bars["pnl"].astype(float).fillna(0.0), addr).fillna(0.0)
    traded = pd.Series(np.where(net.to_numpy() != 0, np.arange(len(bars)), np.nan), index=bars.index)
    last = traded.groupby(addr, sort=False).ffill()
    since = (np.arange(len(bars)) - last + 1).fillna(day).clip(upper=day)  # row t-1 traded -> 1
    out["bars_since_trade"] = np.log1p(since)
    for name, minutes, x in (("net_15m", 15, net), ("net_60m", 60, net),
                             ("pnl_15m", 15, pnl), ("pnl_1d", 1440, pnl)):
        out[name] = _rolling(x, addr, max(int(round(minutes / b)), 1), "sum")
    return out[cols].replace([np.inf, -np.inf], np.nan)
