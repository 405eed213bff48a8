"""Market features: Yang-Zhang volatility, FFD price, volume z-score, RSI, MACD histogram, Bollinger width.

Promise: `run(bars, train_mask, cfg)` returns one row per bar-table row (same index) with the raw
columns `ffd_price, yz_vol, volume_z, rsi, macd_hist, bb_width` (NOT shifted, NOT normalised),
computed per address on the price series chosen by `price_source`, and a `fitted` dict with the
FFD order d chosen on the train split. sma, ema, rsi, macd_histogram and bollinger_bands call
TA-Lib; the tests check them and TA-Lib against independent numpy references (<= 1e-8, real BTC bars).

No-leakage rule: every value at row i uses only rows <= i of the same address (TA-Lib's
convention: a bar's value includes its own close). The one-bar shift that keeps the state of bar
t on events before bar_start(t) happens in state_features. The only fitted parameter, d, is
chosen on train rows alone (changing any other row cannot change it).

Run alone: python feature_engineering.py --bars data/bars.parquet --out data/features.parquet
(`--bars/--out/--train_end` are the stand-alone I/O flags; every other flag is a config field).

Decisions where the issue is silent:
- Yang-Zhang is in per-bar units (TTR's N = 1, no annualisation); first value at index n
  (the overnight term needs the previous close).
- volume_z = (v_i - mean) / std of v = log1p(volume) over the trailing volume_z_n bars, population
  std; 0 where that std is 0. Bars without data count as volume 0.
- Bars without data (has_data / has_underlying False) become flat bars at the last close
  (open = high = low = close = previous close, volume 0) for feature computation only; bars
  before an address's first data stay NaN (warm-up).
- auto price source = underlying when has_underlying covers more than half of the train bars.
- ADF: statsmodels adfuller(maxlag=1, regression="c", autolag=None) (Lopez de Prado's setting)
  on the FFD series of the train rows. With several addresses d = the largest per-address choice
  (every address stationary); adf_stat/adf_pvalue are those of the address that set d. If no d
  in the grid passes, d = 1.0 with its statistic; a series too short for the test gives d = 1.0
  and NaN statistics; a constant series gives d = 0.
- SMA, EMA, RSI, MACD and BBANDS call TA-Lib (talib.SMA/EMA/RSI/MACD/BBANDS(matype=0)): it is the
  field's reference, one C loop per indicator (1-2x of hand-written numpy that was 5-17x slower),
  and "equal to TA-Lib" then holds by construction. Yang-Zhang (no TA-Lib version) keeps TTR's
  formula with talib.VAR (x n/(n-1)) and talib.SMA as its rolling windows. volume_z and FFD stay
  numpy (no TA-Lib counterpart; FFD long kernels use an overlap-add FFT).
- Interior NaN poison only the windows (SMA, Bollinger, YZ) or the rest of the series (EMA, RSI,
  MACD: recursions) they enter. TA-Lib's running sums would poison every later window value, so
  the wrapper forward-fills gaps for the call and masks their windows. Leading non-finite values
  are skipped like TA-Lib's Python wrapper skips leading NaN. Periods outside TA-Lib's [2, 100000]
  (MACD signal: [1, 100000]) raise ValueError.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import talib
from scipy.signal import oaconvolve

from common import add_config_args, atomic_write

log = logging.getLogger("feature_engineering")

FEATURE_COLUMNS = ["ffd_price", "yz_vol", "volume_z", "rsi", "macd_hist", "bb_width"]
"""The raw feature columns run() returns, in STATE_FEATURES order."""

_OHLCV = {"underlying": ["u_open", "u_high", "u_low", "u_close", "u_volume"],
          "token": ["open", "high", "low", "close", "volume"]}
_HAS = {"underlying": "has_underlying", "token": "has_data"}


@dataclass(frozen=True)
class FeatureConfig:
    price_source: str = "auto"
    """Price series for the features: auto | underlying (u_* BTC/USD bars) | token (Up-token mid)."""
    rsi_n: int = 14
    """RSI period (Wilder smoothing, SMA-seeded, as TA-Lib)."""
    macd_fast: int = 12
    """MACD fast EMA period."""
    macd_slow: int = 26
    """MACD slow EMA period."""
    macd_signal: int = 9
    """MACD signal EMA period."""
    bb_n: int = 20
    """Bollinger window (SMA middle band, population sigma)."""
    bb_k: float = 2.0
    """Bollinger band width in sigmas."""
    yz_n: int = 20
    """Yang-Zhang volatility window in bars."""
    volume_z_n: int = 96
    """Trailing window of the log1p(volume) z-score in bars."""
    ffd_thresh: float = 1e-4
    """FFD weights are cut where |w_k| < ffd_thresh."""
    d_step: float = 0.05
    """Grid step of the FFD order d in [0, 1]."""
    adf_pvalue: float = 0.05
    """d = the smallest grid value whose ADF p-value is below this."""


# ----------------------------------------------------------------------------- helpers

def _as_float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def _first_finite(x: np.ndarray) -> int:
    """Index of the first finite value (len(x) if none)."""
    ok = np.flatnonzero(np.isfinite(x))
    return int(ok[0]) if ok.size else len(x)


def _rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    """out[i] = sum(x[i-n+1..i]) for i >= n-1 (length len(x)-n+1), NaN where a window holds NaN.

    Blocked cumulative sums around a per-block reference value keep the rounding error at
    ~eps * block * |local deviation| instead of eps * |running total| (cumsum over 1e6 prices).
    """
    m = len(x) - n + 1
    if m <= 0:
        return np.empty(0)
    bad = ~np.isfinite(x)
    xz = np.where(bad, 0.0, x)
    block = 4096
    nb = -(-m // block)
    pad = np.concatenate([xz, np.zeros(nb * block + n - 1 - len(x))])
    # (nb, block + n - 1): block b holds inputs for outputs b*block .. b*block + block - 1
    win = np.lib.stride_tricks.sliding_window_view(pad, block + n - 1)[::block]
    ref = win[:, :1]
    c = np.cumsum(win - ref, axis=1)                    # c[:, j] = sum of the first j+1 values
    sums = np.empty((nb, block))
    sums[:, 0] = c[:, n - 1]
    np.subtract(c[:, n:], c[:, :block - 1], out=sums[:, 1:])
    sums += n * ref                                     # (nb, block)
    out = sums.ravel()[:m]
    if bad.any():
        nbad = np.convolve(bad.astype(np.float64), np.ones(n), "valid")
        out[nbad > 0] = np.nan
    return out


def _rolling_mean_var(x: np.ndarray, n: int, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean and variance (ddof) over n values, aligned to x (NaN for i < n-1)."""
    mean = np.full(len(x), np.nan)
    var = np.full(len(x), np.nan)
    if len(x) < n:
        return mean, var
    fin = x[np.isfinite(x)]
    c = fin[0] if fin.size else 0.0  # causal shift (first value): sums of small deviations
    y = x - c
    s1, s2 = _rolling_sum(y, n), _rolling_sum(y * y, n)
    mean[n - 1:] = s1 / n + c
    var[n - 1:] = np.maximum((s2 - s1 * s1 / n) / (n - ddof), 0.0)
    return mean, var


def _period(name: str, n: int, low: int = 2) -> int:
    """n as an int, or a one-line ValueError where it is outside TA-Lib's range [low, 100000]."""
    if not low <= int(n) <= 100_000:
        raise ValueError(f"{name} needs a period in [{low}, 100000] (TA-Lib's range), got {n}")
    return int(n)


def _talib(fn, x: np.ndarray, *args, windowed: bool) -> tuple[np.ndarray, ...]:
    """fn(x, *args) from TA-Lib as a tuple aligned to x, leading non-finite values skipped.

    windowed: fn is a trailing-window statistic (SMA, VAR, BBANDS) of length args[0]. TA-Lib keeps
    running sums, so one interior NaN would poison every later value; here the value is NaN only
    in the windows that hold a non-finite input (the gaps are forward-filled for the call and those
    windows masked after it). A finite last value proves no gap entered, so that path costs nothing.
    Recursions (EMA, RSI, MACD) are left as TA-Lib has them: a NaN poisons the rest of the series.
    """
    b = 0 if len(x) and np.isfinite(x[0]) else _first_finite(x)
    y = x[b:]
    if len(y) == 0:   # TA-Lib raises on an all-NaN input
        res = fn(np.zeros(len(x)), *args)
        res = res if isinstance(res, tuple) else (res,)
        return tuple(np.full(len(x), np.nan) for _ in res)
    res = fn(y, *args)
    res = res if isinstance(res, tuple) else (res,)
    if windowed and not np.isfinite(res[0][-1]) and len(y) >= args[0]:
        n = args[0]
        bad = ~np.isfinite(y)
        fill = np.maximum.accumulate(np.where(bad, 0, np.arange(len(y))))   # y[0] is finite
        res = fn(y[fill], *args)
        res = res if isinstance(res, tuple) else (res,)
        cnt = np.cumsum(bad)
        hit = (cnt[n - 1:] - np.r_[0, cnt[:-n]]) > 0          # window ending at j holds a gap
        for r in res:
            r[n - 1:][hit] = np.nan
    if b:
        res = tuple(np.r_[np.full(b, np.nan), r] for r in res)
    return res


def sma(close, n: int = 20) -> np.ndarray:
    """talib.SMA: value i = mean(close[i-n+1..i]); NaN for the first n-1 finite bars and in windows
    holding a NaN."""
    return _talib(talib.SMA, _as_float(close), _period("sma", n), windowed=True)[0]


def ema(close, n: int = 20) -> np.ndarray:
    """talib.EMA: k = 2/(n+1), seeded with the SMA of the first n bars; value i uses bars <= i."""
    return _talib(talib.EMA, _as_float(close), _period("ema", n), windowed=False)[0]


def rsi(close, n: int = 14) -> np.ndarray:
    """talib.RSI: Wilder averages of gains/losses seeded with the mean of the first n changes.

    Value i uses closes <= i; first value at index n (after leading NaN). 0 where the average
    gain + loss is below 1e-8 (TA-Lib's TA_IS_ZERO).
    """
    return _talib(talib.RSI, _as_float(close), _period("rsi", n), windowed=False)[0]


def macd_histogram(close, fast: int = 12, slow: int = 26, signal: int = 9) -> np.ndarray:
    """talib.MACD histogram = MACD line - signal EMA of it; value i uses closes <= i.

    As TA-Lib, both EMAs are seeded at index slow-1 (the fast one with the mean of its last
    `fast` closes), the signal EMA is seeded at slow+signal-2, the first histogram value.
    """
    if not 0 < fast < slow:   # TA-Lib would silently swap them
        raise ValueError(f"macd needs 0 < fast < slow, got fast={fast} slow={slow}")
    args = (_period("macd fast", fast), _period("macd slow", slow), _period("macd signal", signal, 1))
    return _talib(talib.MACD, _as_float(close), *args, windowed=False)[2]


def bollinger_bands(close, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper, middle, lower) = talib.BBANDS(n, k, k, matype=SMA): middle +- k population sigma.

    Value i uses closes <= i; sigma is 0 where its variance is below 1e-8 (TA-Lib's TA_IS_ZERO).
    """
    return _talib(talib.BBANDS, _as_float(close), _period("bollinger", n), float(k), float(k), 0,
                  windowed=True)


def bollinger_width(close, n: int = 20, k: float = 2.0) -> np.ndarray:
    """(upper - lower) / middle of bollinger_bands; value i uses closes <= i; NaN where middle is 0."""
    up, mid, lo = bollinger_bands(close, n, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.divide(np.subtract(up, lo, out=up), mid, out=up)
    w[mid == 0] = np.nan
    return w


def yang_zhang(open, high, low, close, n: int = 20) -> np.ndarray:  # noqa: A002 (the seed's name)
    """Yang-Zhang volatility as R TTR volatility(calc="yang.zhang", N=1), per-bar units.

    sigma_i^2 = var(log(O/C_prev)) + k var(log(C/O)) + (1-k) mean(RS), k = 0.34/(1.34+(n+1)/(n-1)),
    both variances demeaned with n-1, RS = log(H/C)log(H/O) + log(L/C)log(L/O), every term over
    bars i-n+1..i; value i uses bars i-n..i (the previous close), first value at index n.
    The windows are TA-Lib's: talib.VAR (population, times n/(n-1)) and talib.SMA.
    """
    o, h, lo, c = (_as_float(v) for v in (open, high, low, close))
    n = _period("yang_zhang", n)
    with np.errstate(invalid="ignore", divide="ignore"):
        # ratios then logs in place: every fresh 8 MB temporary costs page faults at 1e6 bars
        overnight = np.empty(len(c))
        overnight[:1] = np.nan
        np.log(np.divide(o[1:], c[:-1], out=overnight[1:]), out=overnight[1:])
        oc, hc, lc = (np.log(r, out=r) for r in (c / o, h / c, lo / c))
        # RS = hc (hc + oc) + lc (lc + oc), as log(H/O) = log(H/C) + log(C/O); in place: four logs
        rs = np.add(hc, oc)
        rs *= hc
        lc *= np.add(lc, oc, out=hc)
        rs += lc
    kk = 0.34 / (1.34 + (n + 1.0) / (n - 1.0))
    b = 1 if len(c) > 1 and np.isfinite(overnight[1]) else _first_finite(overnight)
    out = np.full(len(c), np.nan)
    if len(c) - b < n:
        return out
    s2o = _talib(talib.VAR, overnight[b:], n, windowed=True)[0]
    s2c = _talib(talib.VAR, oc[b:], n, windowed=True)[0]
    s2rs = _talib(talib.SMA, rs[b:], n, windowed=True)[0]
    s2c *= kk
    s2o += s2c
    s2o *= n / (n - 1.0)                              # population -> sample variance
    s2rs *= 1.0 - kk
    s2o += s2rs
    out[b:] = np.sqrt(np.maximum(s2o, 0.0, out=s2o), out=s2o)
    return out


def volume_zscore(volume, n: int = 96) -> np.ndarray:
    """Trailing z-score of log1p(volume) over bars i-n+1..i (population std, 0 where it is 0)."""
    v = np.log1p(np.maximum(_as_float(volume), 0.0))
    mean, var = _rolling_mean_var(v, n, 0)
    sd = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(sd > 1e-12, (v - mean) / sd, 0.0)
    z[np.isnan(mean)] = np.nan
    return z


def ffd_weights(d: float, thresh: float = 1e-4) -> np.ndarray:
    """FFD weights w_0 = 1, w_k = -w_{k-1} (d-k+1)/k, stopping before the first |w_k| < thresh.

    Returns (width,) with w[k] the weight of x[i-k]; w_k = (-1)^k C(d, k).
    """
    w = [1.0]
    k = 1
    while k < 100_000:  # a safety cap; thresh >= 1e-6 stops far earlier for d in [0, 1]
        nxt = -w[-1] * (d - k + 1) / k
        if abs(nxt) < thresh:
            break
        w.append(nxt)
        k += 1
    return np.asarray(w)


def frac_diff_ffd(series, d: float, thresh: float = 1e-4) -> np.ndarray:
    """Fixed-width fractional difference: out[i] = sum_k w_k x[i-k], value i uses x[i-width+1..i].

    NaN for the first width-1 finite values; leading NaN are skipped. Long kernels use an
    overlap-add FFT, so a value can move by FFT rounding (~1e-15 relative) when later inputs change.
    """
    x = _as_float(series)
    w = ffd_weights(d, thresh)
    out = np.full(len(x), np.nan)
    b = _first_finite(x)
    y = x[b:]
    if len(y) < len(w):
        return out
    if len(w) > 64 and np.isfinite(y).all():
        val = oaconvolve(y, w, mode="valid")   # overlap-add FFT: O(N log W) instead of O(N W)
    else:
        val = np.convolve(y, w, mode="valid")
    out[b + len(w) - 1:] = val
    return out


def choose_d(series, thresh: float = 1e-4, step: float = 0.05, pvalue: float = 0.05,
             maxlag: int = 1) -> tuple[float, float, float]:
    """Smallest d in the grid 0, step, ..., 1 whose FFD series has ADF p < pvalue: (d, stat, p).

    ADF = statsmodels adfuller(maxlag, regression="c", autolag=None) on the finite FFD values.
    No d passes -> (1.0, stat, p) of d = 1; too short (< 20 values at every d) -> (1.0, nan, nan);
    constant series -> (0.0, nan, nan).
    """
    from statsmodels.tsa.stattools import adfuller

    x = _as_float(series)
    fin = x[np.isfinite(x)]
    if fin.size and np.ptp(fin) == 0:
        return 0.0, float("nan"), float("nan")
    last = (1.0, float("nan"), float("nan"))
    for d in np.round(np.arange(0.0, 1.0 + step / 2, step), 10):
        y = frac_diff_ffd(x, float(d), thresh)
        y = y[np.isfinite(y)]
        if y.size < 20 or np.ptp(y) == 0:
            continue
        stat, p = adfuller(y, maxlag=maxlag, regression="c", autolag=None)[:2]
        last = (float(d), float(stat), float(p))
        if p < pvalue:
            return last
    return last


# ----------------------------------------------------------------------------- the stage

def resolve_price_source(bars: pd.DataFrame, price_source: str, train_mask=None) -> str:
    """auto -> underlying when has_underlying covers more than half of the train bars, else token.

    train_mask None = all bars. Deciding on train rows keeps later data from switching the source.
    """
    if price_source not in ("auto", "underlying", "token"):
        raise ValueError(f"price_source must be auto, underlying or token, got {price_source!r}")
    if price_source != "auto":
        return price_source
    if "has_underlying" not in bars:
        return "token"
    has = bars["has_underlying"].fillna(False).astype(bool).to_numpy()
    if train_mask is not None:
        has = has[np.asarray(train_mask, dtype=bool)]
    return "underlying" if has.size and float(has.mean()) > 0.5 else "token"


def filled_ohlcv(bars: pd.DataFrame, source: str) -> pd.DataFrame:
    """open/high/low/close/volume of `source`, no-data bars made flat at the last close (volume 0).

    Forward-filling is per address and causal (a bar only sees earlier bars).
    """
    cols = _OHLCV[source]
    missing = [c for c in cols if c not in bars]
    if missing:
        raise ValueError(f"bar table lacks columns {missing} needed by price_source={source}")
    raw = bars[cols].astype(float).set_axis(["open", "high", "low", "close", "volume"], axis=1)
    has = bars[_HAS[source]].fillna(False).astype(bool) if _HAS[source] in bars else raw["close"].notna()
    ok = has.to_numpy() & raw["close"].notna().to_numpy()
    close = raw["close"].where(ok).groupby(bars["address"].to_numpy(), sort=False).ffill()
    out = pd.DataFrame(index=bars.index)
    for c in ("open", "high", "low"):
        out[c] = raw[c].where(ok & raw[c].notna().to_numpy(), close)
    out["close"] = close
    out["volume"] = raw["volume"].where(ok, 0.0).fillna(0.0)
    return out


def _address_groups(bars: pd.DataFrame) -> list[np.ndarray]:
    """Row indices of each address, in bar_start order."""
    groups = [np.asarray(ix) for ix in bars.groupby("address", sort=False).indices.values()]
    return [g[np.argsort(bars["bar_start"].to_numpy()[g], kind="stable")] for g in groups]


def _ffd_input(px: pd.DataFrame, source: str) -> np.ndarray:
    """The series FFD differences: log BTC close (underlying) or the Up-token mid (token)."""
    return np.log(px["close"].to_numpy()) if source == "underlying" else px["close"].to_numpy()


def fit(bars: pd.DataFrame, train_mask, cfg: FeatureConfig) -> dict:
    """The fitted parameters, from train rows only: the price source, the FFD order d (per address
    on its train rows, the largest choice wins: every address stationary) with its ADF
    statistics, and the indicator periods, so transform() needs nothing else."""
    train = np.asarray(train_mask, dtype=bool)
    if train.shape != (len(bars),):
        raise ValueError(f"train_mask has shape {train.shape}, expected ({len(bars)},)")
    source = resolve_price_source(bars, cfg.price_source, train)
    ffd_in = _ffd_input(filled_ohlcv(bars, source), source)
    chosen = [choose_d(ffd_in[g[train[g]]], cfg.ffd_thresh, cfg.d_step, cfg.adf_pvalue)
              for g in _address_groups(bars) if train[g].any()]
    d, stat, pval = max(chosen, key=lambda r: r[0]) if chosen else (0.0, float("nan"), float("nan"))
    periods = {k: getattr(cfg, k) for k in ("rsi_n", "macd_fast", "macd_slow", "macd_signal",
                                            "bb_n", "bb_k", "yz_n", "volume_z_n")}
    return {"price_source": source, "d": float(d), "adf_stat": stat, "adf_pvalue": pval,
            "ffd_thresh": cfg.ffd_thresh, "ffd_width": int(len(ffd_weights(d, cfg.ffd_thresh))),
            "n_train_rows": int(train.sum()), **periods}


def transform(bars: pd.DataFrame, fitted: dict) -> pd.DataFrame:
    """The six raw feature columns (FEATURE_COLUMNS) per address, indexed like bars, with the
    fitted source, d and periods (periods missing from an older `fitted`: FeatureConfig's)."""
    p = {**FeatureConfig().__dict__, **fitted}
    source, d = p["price_source"], float(p["d"])
    px = filled_ohlcv(bars, source)
    ffd_in = _ffd_input(px, source)
    out = np.full((len(bars), len(FEATURE_COLUMNS)), np.nan)
    o, h, lo, c, v = (px[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    for g in _address_groups(bars):  # one pass per address: a handful, never per bar
        out[g, 0] = frac_diff_ffd(ffd_in[g], d, p["ffd_thresh"])
        out[g, 1] = yang_zhang(o[g], h[g], lo[g], c[g], p["yz_n"])
        out[g, 2] = volume_zscore(v[g], p["volume_z_n"])
        out[g, 3] = rsi(c[g], p["rsi_n"])
        out[g, 4] = macd_histogram(c[g], p["macd_fast"], p["macd_slow"], p["macd_signal"])
        out[g, 5] = bollinger_width(c[g], p["bb_n"], p["bb_k"])
    return pd.DataFrame(out, index=bars.index, columns=FEATURE_COLUMNS)


def run(bars: pd.DataFrame, train_mask, cfg: FeatureConfig) -> tuple[pd.DataFrame, dict]:
    """Raw market features per address (indexed like bars) and the fitted parameters:
    fit on train rows, transform every row."""
    fitted = fit(bars, train_mask, cfg)
    return transform(bars, fitted), fitted


def add_standalone_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """The stand-alone I/O flags of a stage run on data/bars.parquet: --bars, --out, --train_end."""
    p.add_argument("--bars", default="data/bars.parquet", help="bar table parquet (data_ingestion)")
    p.add_argument("--out", default=out_default, help="output parquet")
    p.add_argument("--train_end", default=None,
                   help="UTC time: bars before it are train (default: the first 70%% of bar times)")


def standalone_train_mask(bars: pd.DataFrame, train_end: str | None) -> np.ndarray:
    """(N,) bool: bar_start < train_end, or the first 70 % of bar times when it is None."""
    t = pd.to_datetime(bars["bar_start"], utc=True)
    end = pd.Timestamp(train_end, tz="UTC") if train_end else t.quantile(0.7)
    return (t < end).to_numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_standalone_args(p, "data/features.parquet")
    add_config_args(p, FeatureConfig)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = FeatureConfig(**{k: getattr(a, k) for k in FeatureConfig.__dataclass_fields__})
    try:
        bars = pd.read_parquet(a.bars)
        feats, fitted = run(bars, standalone_train_mask(bars, a.train_end), cfg)
    except (OSError, ValueError, KeyError) as e:
        print(f"feature_engineering: {a.bars}: {e} (run data_ingestion.py first, or fix the flag)",
              file=sys.stderr)
        raise SystemExit(2) from None
    out = pd.concat([bars[["address", "bar_start"]], feats], axis=1)
    atomic_write(a.out, lambda tmp: out.to_parquet(tmp, index=False))
    log.info("wrote %s: %d rows, price_source %s, d %.2f (ADF p %.3g)", a.out, len(out),
             fitted["price_source"], fitted["d"], fitted["adf_pvalue"])


if __name__ == "__main__":
    main()
