"""State phi(s_t): the 17 named state features, their normalisation and the market clock.

Promise: `run(bars, features, train_mask, cfg)` returns one row per bar-table row with the
columns `STATE_FEATURES` (+ `EXTRA_FEATURES` with `extra_features=True`, state_dim 19), every
value finite and inside +-clip, and a `fitted` dict with the capital and every scale used.

No-leakage rule: the state of bar t may use only events with time < bar_start(t). The bar table
and the raw features describe a bar's own interval, so market, technical and agent features of
row t are taken from row t-1 of the same address (the one-bar shift; a trader's first bar sees
zeros). Temporal features come from bar_start(t) itself, which is known at bar_start. Every
normalising statistic (means, standard deviations, the inventory scale, the capital) is fitted
on train-split rows only.

Run alone: this stage has no CLI of its own; `python pipeline.py` runs it (it needs the bar table
and the raw features of the stages above).

Decisions where the issue is silent:
- Market features (ffd_price, yz_vol, volume_z, macd_hist, bb_width) are z-scored with the
  train-split mean and standard deviation of the shifted raw values; RSI uses the fixed map
  (rsi - 50) / 50. A zero or undefined standard deviation becomes 1.
- unrealized_pnl = unrealized P&L / capital; pnl_pct_position = unrealized / cost_basis (0 when
  flat); inventory = Up-equivalent shares / the train split's 99th percentile of |inventory|
  (1 when that is 0); position_size_ratio = cost_basis / capital; time_since_entry =
  log1p(bars_since_entry + 1), so the entry bar reads log 2 and a flat book reads exactly 0.
- Capital = cfg.capital, else the peak exposure_usdc on train rows (1.0 if that is not > 0,
  with a warning in fitted["warnings"]).
- The market clock is the position of bar_start inside its UTC-aligned 15-minute market window
  (MARKET_SECONDS), as sin/cos of 2 pi x elapsed / 900 s; with 15-minute bars it is constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STATE_FEATURES = [
    "ffd_price", "yz_vol", "volume_z", "rsi", "macd_hist", "bb_width",
    "tod_sin", "tod_cos", "hour_sin", "hour_cos", "dow_sin", "dow_cos",
    "unrealized_pnl", "pnl_pct_position", "inventory", "position_size_ratio", "time_since_entry",
]
"""The 17 state feature names, in DESIGN.md's order (market, technical, temporal, agent)."""

EXTRA_FEATURES = ["market_clock_sin", "market_clock_cos"]
"""Optional market-clock features appended with --extra-features (state_dim 19)."""

MARKET_FEATURES = ["ffd_price", "yz_vol", "volume_z", "rsi", "macd_hist", "bb_width"]
TEMPORAL_FEATURES = ["tod_sin", "tod_cos", "hour_sin", "hour_cos", "dow_sin", "dow_cos"]
AGENT_FEATURES = [
    "unrealized_pnl", "pnl_pct_position", "inventory", "position_size_ratio", "time_since_entry",
]
MARKET_WINDOW_SECONDS = 900

FEATURE_UNITS = {
    "ffd_price": "FFD of log price", "yz_vol": "per-bar volatility (fraction)",
    "volume_z": "z of log1p volume", "rsi": "RSI 0..100", "macd_hist": "price units",
    "bb_width": "band width / middle", "unrealized_pnl": "USDC", "pnl_pct_position": "% of cost",
    "inventory": "Up-equivalent shares", "position_size_ratio": "USDC of cost basis",
    "time_since_entry": "bars since entry",
    **{c: "sin/cos of the cycle" for c in TEMPORAL_FEATURES + EXTRA_FEATURES},
}
"""The unit of each state feature after `raw_units` undoes its normalisation."""
  # the 15-minute market (= data_ingestion.MARKET_SECONDS)


@dataclass(frozen=True)
class StateConfig:
    extra_features: bool = False
    """Append the market-clock sin/cos (EXTRA_FEATURES); state_dim becomes 19."""
    clip: float = 5.0
    """Every normalised feature is clipped to [-clip, +clip]."""
    capital: float | None = None
    """Capital in USDC for P&L ratios; None = peak exposure_usdc on the train split."""


def state_columns(extra_features: bool) -> list[str]:
    """The state column names, in model order, for the given extra-features switch."""
    return STATE_FEATURES + (EXTRA_FEATURES if extra_features else [])


def shift_within_address(frame: pd.DataFrame, address: pd.Series) -> pd.DataFrame:
    """Row t gets row t-1 of the same address; each address's first row is NaN.

    `frame` must be sorted by (address, bar_start) like the bar table.
    """
    return frame.groupby(address.to_numpy(), sort=False).shift(1)


def temporal_features(bar_start: pd.Series) -> pd.DataFrame:
    """Cyclical time-of-day (minute / 1440), hour (/24) and day-of-week (/7) sin/cos of bar_start."""
    ts = pd.DatetimeIndex(pd.to_datetime(bar_start, utc=True))
    tod = (ts.hour * 60 + ts.minute).to_numpy(float) / 1440.0
    hour = ts.hour.to_numpy(float) / 24.0
    dow = ts.dayofweek.to_numpy(float) / 7.0
    two_pi = 2.0 * np.pi
    return pd.DataFrame(
        {
            "tod_sin": np.sin(two_pi * tod), "tod_cos": np.cos(two_pi * tod),
            "hour_sin": np.sin(two_pi * hour), "hour_cos": np.cos(two_pi * hour),
            "dow_sin": np.sin(two_pi * dow), "dow_cos": np.cos(two_pi * dow),
        },
        index=bar_start.index,
    )


def market_clock(bar_start: pd.Series) -> pd.DataFrame:
    """sin/cos of the elapsed fraction of bar_start's UTC-aligned 15-minute market window."""
    ts = pd.DatetimeIndex(pd.to_datetime(bar_start, utc=True))
    seconds = ts.asi8 // 1_000_000_000  # ns -> s since epoch
    frac = (seconds % MARKET_WINDOW_SECONDS) / MARKET_WINDOW_SECONDS
    angle = 2.0 * np.pi * frac
    return pd.DataFrame(
        {"market_clock_sin": np.sin(angle), "market_clock_cos": np.cos(angle)},
        index=bar_start.index,
    )


def fit_capital(bars: pd.DataFrame, train_mask: np.ndarray, capital: float | None) -> float:
    """cfg capital if given, else the peak exposure_usdc on train rows; 0 if neither is > 0."""
    if capital is not None:
        return float(capital)
    exposure = bars["exposure_usdc"].to_numpy(float)[np.asarray(train_mask, bool)]
    exposure = exposure[np.isfinite(exposure)]
    return float(exposure.max()) if exposure.size and exposure.max() > 0 else 0.0


def agent_raw(bars: pd.DataFrame, capital: float) -> pd.DataFrame:
    """Agent features of each row's own bar end (unshifted); inventory still in shares.

    Ratios with a zero denominator (flat book) are 0, never NaN or inf.
    """
    unreal = bars["unrealized_pnl"].to_numpy(float)
    cost = bars["cost_basis"].to_numpy(float)
    since = bars["bars_since_entry"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(np.abs(cost) > 1e-12, unreal / cost, 0.0)
    tse = np.where(since >= 0, np.log1p(np.clip(since, 0, None) + 1.0), 0.0)
    return pd.DataFrame(
        {
            "unrealized_pnl": unreal / capital,
            "pnl_pct_position": pct,
            "inventory": bars["inventory"].to_numpy(float),
            "position_size_ratio": cost / capital,
            "time_since_entry": tse,
        },
        index=bars.index,
    )


def fit_scales(shifted: pd.DataFrame, train_mask: np.ndarray) -> dict:
    """Train-split {column: {"mean", "std"}} of the shifted raw market features (rsi fixed).

    The inventory entry is {"mean": 0, "std": p99 of |inventory| on train} (1 when 0).
    """
    train = np.asarray(train_mask, bool)
    scales: dict[str, dict[str, float]] = {}
    for col in MARKET_FEATURES:
        if col == "rsi":
            scales[col] = {"mean": 50.0, "std": 50.0}
            continue
        x = shifted[col].to_numpy(float)[train]
        x = x[np.isfinite(x)]
        mean = float(x.mean()) if x.size else 0.0
        std = float(x.std()) if x.size > 1 else 0.0
        scales[col] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
    inv = np.abs(shifted["inventory"].to_numpy(float)[train])
    inv = inv[np.isfinite(inv)]
    p99 = float(np.quantile(inv, 0.99)) if inv.size else 0.0
    scales["inventory"] = {"mean": 0.0, "std": p99 if p99 > 1e-12 else 1.0}
    return scales


def raw_units(column: str, x, scales: dict, capital: float) -> np.ndarray:
    """Undo the normalisation of one state column: values in FEATURE_UNITS[column].

    `scales` and `capital` are the fitted values (pipeline_meta "scales" and "capital"): scaled
    columns return x * std + mean (rsi: 50 + 50 x), P&L ratios x capital in USDC,
    pnl_pct_position in %, time_since_entry expm1(x) - 1 bars (a flat book reads -1: no
    entry); sin/cos columns are returned as they are. Clipped values invert to the clip edge."""
    x = np.asarray(x, dtype=np.float64)
    if column in scales:
        return x * float(scales[column]["std"]) + float(scales[column]["mean"])
    if column in ("unrealized_pnl", "position_size_ratio"):
        return x * float(capital)
    if column == "pnl_pct_position":
        return 100.0 * x
    if column == "time_since_entry":
        return np.expm1(x) - 1.0
    return x


def apply_scales(frame: pd.DataFrame, scales: dict, clip: float) -> pd.DataFrame:
    """(x - mean) / std for the scaled columns, then clip to +-clip and NaN/inf -> 0."""
    out = frame.copy()
    for col, s in scales.items():
        out[col] = (out[col].to_numpy(float) - s["mean"]) / s["std"]
    values = out.to_numpy(float)
    values = np.where(np.isfinite(values), values, 0.0)
    return pd.DataFrame(np.clip(values, -clip, clip), index=frame.index, columns=frame.columns)


def run(
    bars: pd.DataFrame, features: pd.DataFrame, train_mask: np.ndarray, cfg: StateConfig
) -> tuple[pd.DataFrame, dict]:
    """Build the normalised state of every bar-table row.

    bars: the bar table (sorted by address, bar_start); features: feature_engineering's raw
    columns indexed like bars; train_mask: bool per row. Returns (states, fitted) where states
    has the columns state_columns(cfg.extra_features) as float32 and fitted =
    {"capital", "scales", "state_features", "state_dim", "clip", "warnings"}.
    """
    train = np.asarray(train_mask, bool)
    if len(train) != len(bars):
        raise ValueError(f"train_mask has {len(train)} rows, bar table has {len(bars)}")
    warnings: list[str] = []
    capital = fit_capital(bars, train, cfg.capital)
    if not capital > 0:
        warnings.append("capital: no positive exposure_usdc on the train split; using 1.0 USDC")
        capital = 1.0

    # Market/technical/agent from row t-1 (events < bar_start); shapes (N, 6) and (N, 5).
    raw = pd.concat([features[MARKET_FEATURES], agent_raw(bars, capital)], axis=1)
    shifted = shift_within_address(raw, bars["address"])
    scales = fit_scales(shifted, train)
    normed = apply_scales(shifted, scales, cfg.clip)
    # A trader's first bar has no previous bar: a flat book and unknown market -> zeros.
    temporal = temporal_features(bars["bar_start"])
    parts = [normed[MARKET_FEATURES], temporal, normed[AGENT_FEATURES]]
    if cfg.extra_features:
        parts.append(market_clock(bars["bar_start"]))
    cols = state_columns(cfg.extra_features)
    states = pd.concat(parts, axis=1)[cols].astype(np.float32)
    states = states.clip(-cfg.clip, cfg.clip)
    fitted = {
        "capital": capital,
        "scales": scales,
        "state_features": cols,
        "state_dim": len(cols),
        "clip": cfg.clip,
        "extra_features": cfg.extra_features,
        "warnings": warnings,
    }
    return states, fitted
