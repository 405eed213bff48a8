"""State phi(s_t): the named state sets, their train-fitted standardisation and the market clock.

Promise: `run(bars, features, train_mask, cfg)` returns one row per bar-table row with the
columns `state_columns(cfg.extra_features, cfg.feature_set, cfg.bar_interval)`, every value
finite and inside +-clip, and the fitted parameters (capital, one mean/std per column, clip,
the set). It is `fit` on train rows then `transform` of every row: `raw_state(bars, features,
feature_set, bar_interval, extra_features)` builds the unnormalised columns (each in its own
unit, FEATURE_UNITS), `fit(raw, train_mask, ...)` fits the scales on train and
`transform(raw, fitted)` applies them; predict.py calls raw_state and transform only.

State sets (`--features` in pipeline.py): `seed` = the 17 STATE_FEATURES (+ market clock with
extra_features); `extended` = the same plus _state_extended's columns (BTC returns and realised
volatility over several horizons in volatility units, the current market's clock, strike
distance, fair value and Up quote at 1-minute bars, the last markets' resolutions and streak,
and the trader's own recent activity and P&L).

No-leakage rule: the state of bar t may use only events with time < bar_start(t). The bar table
and the raw features describe a bar's own interval, so market, technical and agent features of
row t are taken from row t-1 of the same address (the one-bar shift; a trader's first bar sees a
flat book). Temporal features come from bar_start(t) itself, which is known at bar_start. The
extended columns follow the same rule (see _state_extended). Every normalising statistic is
fitted on train-split rows only.

Run alone: this stage has no CLI of its own; `python pipeline.py` runs it (it needs the bar table
and the raw features of the stages above).

Decisions where the issue is silent:
- Every column is standardised with its train-split mean and standard deviation (a zero or
  undefined standard deviation becomes 1), then clipped to +-clip; a value not defined yet
  (warm-up) becomes 0, the train mean. RSI is standardised like the rest (the seed's fixed
  (rsi - 50) / 50 left it at a std of ~0.24).
- Raw agent features: unrealized_pnl and position_size_ratio (cost basis) in USDC,
  pnl_pct_position = unrealized / cost_basis in % (0 when flat), inventory in Up-equivalent
  shares, time_since_entry = log1p(bars_since_entry + 1) (the entry bar reads log 2, a flat book
  0). A trader's first bar sees zeros (a flat book) before standardisation.
- Capital (for returns and P&L ratios elsewhere) = cfg.capital, else the peak exposure_usdc on
  train rows (1.0 if that is not > 0, with a warning in fitted["warnings"]).
- The market clock is the position of bar_start inside its UTC-aligned 15-minute market window
  (MARKET_SECONDS), as sin/cos of 2 pi x elapsed / 900 s; with 15-minute bars it is constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from _state_extended import EXTENDED_UNITS, extended_columns, extended_raw

STATE_FEATURES = [
    "ffd_price", "yz_vol", "volume_z", "rsi", "macd_hist", "bb_width",
    "tod_sin", "tod_cos", "hour_sin", "hour_cos", "dow_sin", "dow_cos",
    "unrealized_pnl", "pnl_pct_position", "inventory", "position_size_ratio", "time_since_entry",
]
"""The 17 seed state feature names, in the seed's order (market, technical, temporal, agent)."""

EXTRA_FEATURES = ["market_clock_sin", "market_clock_cos"]
"""Optional market-clock features appended with --extra-features (state_dim + 2)."""

FEATURE_SETS = ("seed", "extended")
"""The named state sets of pipeline.py --features."""

MARKET_FEATURES = ["ffd_price", "yz_vol", "volume_z", "rsi", "macd_hist", "bb_width"]
TEMPORAL_FEATURES = ["tod_sin", "tod_cos", "hour_sin", "hour_cos", "dow_sin", "dow_cos"]
AGENT_FEATURES = [
    "unrealized_pnl", "pnl_pct_position", "inventory", "position_size_ratio", "time_since_entry",
]
MARKET_WINDOW_SECONDS = 900  # the 15-minute market (= data_ingestion.MARKET_SECONDS)

FEATURE_UNITS = {
    "ffd_price": "FFD of log price", "yz_vol": "per-bar volatility (fraction)",
    "volume_z": "z of log1p volume", "rsi": "RSI 0..100", "macd_hist": "price units",
    "bb_width": "band width / middle", "unrealized_pnl": "USDC", "pnl_pct_position": "% of cost",
    "inventory": "Up-equivalent shares", "position_size_ratio": "USDC of cost basis",
    "time_since_entry": "bars since entry",
    **{c: "sin/cos of the cycle" for c in TEMPORAL_FEATURES + EXTRA_FEATURES},
    **EXTENDED_UNITS,
}
"""The unit of each state feature after `raw_units` undoes its standardisation."""
_LOG_BARS = {"time_since_entry": 1.0, "bars_since_trade": 0.0}
"""Columns stored as log1p(bars + offset): raw_units shows them in bars."""


@dataclass(frozen=True)
class StateConfig:
    extra_features: bool = False
    """Append the market-clock sin/cos (EXTRA_FEATURES) to the set; state_dim + 2."""
    feature_set: str = "seed"
    """The named state set: seed (17 features) or extended (seed + _state_extended's columns)."""
    bar_interval: str = "15min"
    """The bar table's interval (the extended set's horizons depend on it)."""
    clip: float = 5.0
    """Every standardised feature is clipped to [-clip, +clip]."""
    capital: float | None = None
    """Capital in USDC for P&L ratios; None = peak exposure_usdc on the train split."""


def state_columns(extra_features: bool = False, feature_set: str = "seed",
                  bar_interval: str = "15min") -> list[str]:
    """The state column names, in model order: the seed 17, the market clock with
    extra_features, then the extended set's columns at this bar interval."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature set must be one of {FEATURE_SETS}, got {feature_set!r}")
    extended = extended_columns(bar_interval) if feature_set == "extended" else []
    return STATE_FEATURES + (EXTRA_FEATURES if extra_features else []) + extended


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


def agent_raw(bars: pd.DataFrame) -> pd.DataFrame:
    """Agent features of each row's own bar end (unshifted), in their own units: USDC, % of
    cost, shares, log1p(bars since entry + 1). Ratios of a flat book are 0, never NaN or inf."""
    unreal = bars["unrealized_pnl"].to_numpy(float)
    cost = bars["cost_basis"].to_numpy(float)
    since = bars["bars_since_entry"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(np.abs(cost) > 1e-12, 100.0 * unreal / cost, 0.0)
    tse = np.where(since >= 0, np.log1p(np.clip(since, 0, None) + 1.0), 0.0)
    return pd.DataFrame(
        {"unrealized_pnl": unreal, "pnl_pct_position": pct,
         "inventory": bars["inventory"].to_numpy(float), "position_size_ratio": cost,
         "time_since_entry": tse},
        index=bars.index,
    )


def raw_state(bars: pd.DataFrame, features: pd.DataFrame, feature_set: str = "seed",
              bar_interval: str = "15min", extra_features: bool = False) -> pd.DataFrame:
    """Every state column of the set, unnormalised, each row from what is known at its
    bar_start: market/technical/agent columns from row t-1 (the shift; a first bar sees a flat
    book and unknown markets: NaN market columns), temporal and clock from bar_start, the
    extended columns from _state_extended. `bars` sorted by (address, bar_start)."""
    raw = pd.concat([features[MARKET_FEATURES], agent_raw(bars)], axis=1)
    shifted = shift_within_address(raw, bars["address"])
    shifted[AGENT_FEATURES] = shifted[AGENT_FEATURES].fillna(0.0)
    parts = [shifted, temporal_features(bars["bar_start"]), market_clock(bars["bar_start"])]
    if feature_set == "extended":
        parts.append(extended_raw(bars, bar_interval))
    cols = state_columns(extra_features, feature_set, bar_interval)
    return pd.concat(parts, axis=1)[cols]


def fit(raw: pd.DataFrame, train_mask: np.ndarray) -> dict:
    """{column: {"mean", "std"}} of the finite train-split values of each raw state column
    (mean 0 / std 1 where a column has no finite train value; std 1 where it is constant)."""
    train = np.asarray(train_mask, bool)
    x = raw.to_numpy(float)[train]
    scales = {}
    for j, col in enumerate(raw.columns):
        v = x[:, j][np.isfinite(x[:, j])]
        mean = float(v.mean()) if v.size else 0.0
        std = float(v.std()) if v.size > 1 else 0.0
        scales[col] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
    return scales


def transform(raw: pd.DataFrame, fitted: dict) -> pd.DataFrame:
    """Standardise raw (columns fitted["state_features"]) with fitted["scales"], undefined
    values -> 0 (the train mean), clip to +-fitted["clip"]; float32."""
    cols = list(fitted["state_features"])
    mean = np.array([fitted["scales"][c]["mean"] for c in cols])
    std = np.array([fitted["scales"][c]["std"] for c in cols])
    z = (raw[cols].to_numpy(float) - mean) / std
    z = np.clip(np.where(np.isfinite(z), z, 0.0), -fitted["clip"], fitted["clip"])
    return pd.DataFrame(z.astype(np.float32), index=raw.index, columns=cols)


def raw_units(column: str, x, scales: dict) -> np.ndarray:
    """Undo the standardisation of one state column: values in FEATURE_UNITS[column] (log-bar
    columns in bars; sin/cos as they are). `scales` is the fitted pipeline_meta "scales".
    Clipped values invert to the clip edge."""
    x = np.asarray(x, dtype=np.float64)
    s = scales.get(column)
    v = x * float(s["std"]) + float(s["mean"]) if s else x
    return np.expm1(v) - _LOG_BARS[column] if column in _LOG_BARS else v


def run(
    bars: pd.DataFrame, features: pd.DataFrame, train_mask: np.ndarray, cfg: StateConfig
) -> tuple[pd.DataFrame, dict]:
    """Build the standardised state of every bar-table row: fit on train, transform all.

    bars: the bar table (sorted by address, bar_start); features: feature_engineering's raw
    columns indexed like bars; train_mask: bool per row. Returns (states, fitted) where states
    has the columns state_columns(...) as float32 and fitted = {"capital", "scales",
    "state_features", "state_dim", "clip", "extra_features", "feature_set", "bar_interval",
    "warnings"}.
    """
    train = np.asarray(train_mask, bool)
    if len(train) != len(bars):
        raise ValueError(f"train_mask has {len(train)} rows, bar table has {len(bars)}")
    warnings: list[str] = []
    capital = fit_capital(bars, train, cfg.capital)
    if not capital > 0:
        warnings.append("capital: no positive exposure_usdc on the train split; using 1.0 USDC")
        capital = 1.0
    raw = raw_state(bars, features, cfg.feature_set, cfg.bar_interval, cfg.extra_features)
    cols = list(raw.columns)
    fitted = {
        "capital": capital, "scales": fit(raw, train), "state_features": cols,
        "state_dim": len(cols), "clip": cfg.clip, "extra_features": cfg.extra_features,
        "feature_set": cfg.feature_set, "bar_interval": cfg.bar_interval, "warnings": warnings,
    }
    return transform(raw, fitted), fitted
