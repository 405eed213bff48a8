"""feature_engineering: TA-Lib differential tests on real BTC bars, TTR's Yang-Zhang, FFD, d choice,
causality (value t ignores bars after t) and train-only fitting of d."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import binom

import feature_engineering as fe

TOL = 1e-8


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "btc_perp_1m_head3000.csv")


def _max_diff_after_warmup(ours: np.ndarray, ref: np.ndarray) -> float:
    """Max |ours - ref| where TA-Lib has a value; the NaN warm-up must coincide exactly."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    m = ~np.isnan(ref)
    assert m.sum() > 1000
    return float(np.abs(ours[m] - ref[m]).max())


@pytest.mark.parametrize("transform", ["price", "log"])
def test_indicators_equal_talib_on_real_bars(btc, transform):
    c = btc["close"].to_numpy(float)
    c = np.log(c) if transform == "log" else c
    assert _max_diff_after_warmup(fe.sma(c, 20), talib.SMA(c, 20)) <= TOL
    assert _max_diff_after_warmup(fe.ema(c, 12), talib.EMA(c, 12)) <= TOL
    assert _max_diff_after_warmup(fe.ema(c, 26), talib.EMA(c, 26)) <= TOL
    assert _max_diff_after_warmup(fe.rsi(c, 14), talib.RSI(c, 14)) <= TOL
    assert _max_diff_after_warmup(fe.macd_histogram(c, 12, 26, 9), talib.MACD(c, 12, 26, 9)[2]) <= TOL
    up, mid, lo = talib.BBANDS(c, 20, 2.0, 2.0, 0)
    ours = fe.bollinger_bands(c, 20, 2.0)
    for a, b in zip(ours, (up, mid, lo), strict=True):
        assert _max_diff_after_warmup(a, b) <= TOL
    assert _max_diff_after_warmup(fe.bollinger_width(c, 20, 2.0), (up - lo) / mid) <= TOL


def test_indicators_equal_talib_with_leading_nan_and_other_periods(btc):
    c = btc["close"].to_numpy(float)[:1500].copy()
    c[:37] = np.nan
    assert _max_diff_after_warmup(fe.rsi(c, 7), talib.RSI(c, 7)) <= TOL
    assert _max_diff_after_warmup(fe.macd_histogram(c, 5, 35, 5), talib.MACD(c, 5, 35, 5)[2]) <= TOL
    assert _max_diff_after_warmup(fe.sma(c, 50), talib.SMA(c, 50)) <= TOL


# ----------------------------------------------------------------------------- independent references
# Written from the textbook formulas, sharing no code with the module or TA-Lib, so a wrapper that
# misaligns TA-Lib's output (or a TA-Lib with a different seed convention) fails here.

def _ema_ref(x: np.ndarray, n: int, seed_at: int | None = None) -> np.ndarray:
    """EMA with k = 2/(n+1), seeded at seed_at (default n-1) with the mean of the n values up to it."""
    seed_at = n - 1 if seed_at is None else seed_at
    k, out = 2.0 / (n + 1.0), np.full(len(x), np.nan)
    out[seed_at] = x[seed_at - n + 1: seed_at + 1].mean()
    for i in range(seed_at + 1, len(x)):
        out[i] = k * x[i] + (1.0 - k) * out[i - 1]
    return out


def _rsi_ref(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder RSI: averages of gains/losses seeded with the mean of the first n changes, first value at n."""
    d = np.diff(x)
    g, l_ = d[:n].clip(min=0).mean(), (-d[:n]).clip(min=0).mean()
    out = np.full(len(x), np.nan)
    out[n] = 100.0 * g / (g + l_)
    for i in range(n, len(d)):
        g = (g * (n - 1) + max(d[i], 0.0)) / n
        l_ = (l_ * (n - 1) + max(-d[i], 0.0)) / n
        out[i + 1] = 100.0 * g / (g + l_)
    return out


def _macd_hist_ref(x: np.ndarray, fast: int, slow: int, signal: int) -> np.ndarray:
    """MACD histogram with both EMAs seeded at slow-1 and the signal EMA at slow+signal-2."""
    line = _ema_ref(x, fast, slow - 1) - _ema_ref(x, slow, slow - 1)
    sig = np.full(len(x), np.nan)
    sig[slow - 1:] = _ema_ref(line[slow - 1:], signal)
    return line - sig


@pytest.mark.parametrize("transform", ["price", "log"])
def test_module_and_talib_equal_independent_reference(btc, transform):
    c = btc["close"].to_numpy(float)
    c = np.log(c) if transform == "log" else c
    for n in (12, 26):
        ref = _ema_ref(c, n)
        assert _max_diff_after_warmup(fe.ema(c, n), ref) <= TOL
        assert _max_diff_after_warmup(talib.EMA(c, n), ref) <= TOL
    for n in (7, 14):
        ref = _rsi_ref(c, n)
        assert _max_diff_after_warmup(fe.rsi(c, n), ref) <= TOL
        assert _max_diff_after_warmup(talib.RSI(c, n), ref) <= TOL
    ref = _macd_hist_ref(c, 12, 26, 9)
    assert _max_diff_after_warmup(fe.macd_histogram(c, 12, 26, 9), ref) <= TOL
    assert _max_diff_after_warmup(talib.MACD(c, 12, 26, 9)[2], ref) <= TOL
    # leading NaN are skipped: the values are the reference on the finite tail, shifted
    cn = np.r_[np.full(37, np.nan), c[:1500]]
    tail = _rsi_ref(c[:1500], 14)
    assert _max_diff_after_warmup(fe.rsi(cn, 14), np.r_[np.full(37, np.nan), tail]) <= TOL


def test_windowed_indicators_nan_only_in_windows_holding_a_gap(btc):
    c = btc["close"].to_numpy(float)[:1500].copy()
    c[:5] = np.nan
    c[700] = np.nan
    m = np.array([np.nan if i < 24 or 700 <= i < 720 else c[i - 19: i + 1].mean() for i in range(len(c))])
    assert _max_diff_after_warmup(fe.sma(c, 20), m) <= TOL
    up, mid, lo = fe.bollinger_bands(c, 20, 2.0)
    np.testing.assert_array_equal(np.isnan(mid), np.isnan(m))
    sd = np.array([np.nan if np.isnan(v) else c[i - 19: i + 1].std() for i, v in enumerate(m)])
    np.testing.assert_allclose(up - mid, 2 * sd, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(fe.rsi(c, 14)[700:]), True)   # a recursion: poisoned


def test_rsi_flat_series_is_zero_like_talib():
    c = np.r_[np.full(30, 0.5), np.linspace(0.5, 0.6, 30)]
    np.testing.assert_allclose(fe.rsi(c, 14), talib.RSI(c, 14), atol=TOL, equal_nan=True)
    assert fe.rsi(c, 14)[20] == 0.0


def _yang_zhang_loop(o, h, lo, c, n):
    """TTR volatility(calc="yang.zhang", N=1) written out bar by bar, straight from its formula."""
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    out = np.full(len(c), np.nan)
    for i in range(n, len(c)):
        w = range(i - n + 1, i + 1)
        ov = [np.log(o[j] / c[j - 1]) for j in w]
        oc = [np.log(c[j] / o[j]) for j in w]
        rs = [np.log(h[j] / c[j]) * np.log(h[j] / o[j]) + np.log(lo[j] / c[j]) * np.log(lo[j] / o[j])
              for j in w]
        s2o = sum((v - sum(ov) / n) ** 2 for v in ov) / (n - 1)
        s2c = sum((v - sum(oc) / n) ** 2 for v in oc) / (n - 1)
        out[i] = np.sqrt(s2o + k * s2c + (1 - k) * sum(rs) / n)
    return out


def test_yang_zhang_matches_ttr_formula_on_real_and_gappy_bars(btc):
    b = btc.iloc[:600]
    o, h, lo, c = (b[k].to_numpy(float) for k in ("open", "high", "low", "close"))
    ours, ref = fe.yang_zhang(o, h, lo, c, 20), _yang_zhang_loop(o, h, lo, c, 20)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours, ref, rtol=1e-9, equal_nan=True)
    # synthetic bars with overnight gaps (open != previous close)
    rng = np.random.default_rng(3)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    o = np.r_[100.0, c[:-1]] * np.exp(rng.normal(0, 0.004, 300))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.003, 300)))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.003, 300)))
    np.testing.assert_allclose(fe.yang_zhang(o, h, lo, c, 10), _yang_zhang_loop(o, h, lo, c, 10),
                               rtol=1e-9, equal_nan=True)


@pytest.mark.parametrize("d", [0.0, 0.05, 0.35, 0.5, 0.85, 1.0])
def test_ffd_weights_closed_form(d):
    w = fe.ffd_weights(d, 1e-4)
    k = np.arange(len(w))
    np.testing.assert_allclose(w, (-1.0) ** k * binom(d, k), rtol=1e-10, atol=1e-15)
    assert np.all(np.abs(w) >= 1e-4)
    assert abs((-1.0) ** len(w) * binom(d, len(w))) < 1e-4   # the first dropped weight


def test_frac_diff_ffd_equals_direct_sum():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=3000))
    for d in (0.1, 0.4, 1.0):      # long kernels (FFT path) and the two-tap d = 1
        w = fe.ffd_weights(d, 1e-4)
        ours = fe.frac_diff_ffd(x, d, 1e-4)
        ref = np.full(len(x), np.nan)
        for i in range(len(w) - 1, len(x)):
            ref[i] = np.dot(w, x[i - np.arange(len(w))])
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
        np.testing.assert_allclose(ours, ref, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(fe.frac_diff_ffd(x, 1.0)[1:], np.diff(x), atol=1e-12)


def test_choose_d_random_walk_positive_white_noise_zero():
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=4000))
    d, stat, p = fe.choose_d(walk)
    assert 0.0 < d <= 1.0 and p < 0.05 and np.isfinite(stat)
    # the grid value just below d does not pass (d is the smallest)
    y = fe.frac_diff_ffd(walk, round(d - 0.05, 10))
    from statsmodels.tsa.stattools import adfuller
    assert adfuller(y[np.isfinite(y)], maxlag=1, regression="c", autolag=None)[1] >= 0.05
    d0, _, p0 = fe.choose_d(rng.normal(size=4000))
    assert d0 == 0.0 and p0 < 0.05


# ----------------------------------------------------------------------------- run() and causality

def _bars(n: int, seed: int, addresses=("0xa",)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for a in addresses:
        c = 50_000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
        o = np.r_[c[0], c[:-1]]
        has = rng.random(n) > 0.1
        frames.append(pd.DataFrame({
            "address": a,
            "bar_start": pd.date_range("2026-01-05", periods=n, freq="15min", tz="UTC"),
            "u_open": o, "u_high": np.maximum(o, c) * 1.001, "u_low": np.minimum(o, c) * 0.999,
            "u_close": c, "u_volume": rng.lognormal(3, 1, n), "has_underlying": has,
            "open": 0.5, "high": 0.52, "low": 0.48, "close": 0.5, "volume": 1.0, "has_data": True}))
    bars = pd.concat(frames, ignore_index=True)
    bars.loc[~bars["has_underlying"], ["u_open", "u_high", "u_low", "u_close", "u_volume"]] = np.nan
    return bars


def test_run_columns_source_and_fitted():
    bars = _bars(400, 0, ("0xa", "0xb"))
    train = (bars["bar_start"] < bars["bar_start"].quantile(0.7)).to_numpy()
    feats, fitted = fe.run(bars, train, fe.FeatureConfig())
    assert list(feats.columns) == fe.FEATURE_COLUMNS and feats.index.equals(bars.index)
    assert fitted["price_source"] == "underlying"
    assert set(fitted) >= {"price_source", "d", "adf_stat", "adf_pvalue", "ffd_thresh", "ffd_width"}
    assert fitted["ffd_width"] == len(fe.ffd_weights(fitted["d"], 1e-4))
    # each address computed on its own series: equal to the function on that address alone
    g = bars["address"] == "0xb"
    alone = fe.filled_ohlcv(bars[g].reset_index(drop=True), "underlying")
    np.testing.assert_allclose(feats.loc[g, "rsi"].to_numpy(), fe.rsi(alone["close"]), equal_nan=True)
    # late rows have every feature
    assert feats.iloc[-50:].notna().all().all()
    with pytest.raises(ValueError, match="price_source"):
        fe.run(bars, train, fe.FeatureConfig(price_source="bogus"))


@settings(max_examples=20, deadline=None)
@given(t=st.integers(min_value=40, max_value=298), seed=st.integers(0, 10_000))
def test_every_feature_at_t_ignores_later_bars(t, seed):
    bars = _bars(300, 7)
    train = np.zeros(len(bars), bool)
    train[:150] = True
    changed = bars.copy()
    rng = np.random.default_rng(seed)
    tail = changed.index > t
    for col in ("u_open", "u_high", "u_low", "u_close", "u_volume"):
        changed.loc[tail, col] = changed.loc[tail, col] * rng.uniform(0.9, 1.1, tail.sum())
    changed.loc[tail, "has_underlying"] = rng.random(tail.sum()) > 0.5
    cfg = fe.FeatureConfig(price_source="underlying")
    a, fa = fe.run(bars, train, cfg)
    b, fb = fe.run(changed, train if t >= 150 else train & ~tail, cfg)
    head = slice(0, t + 1)
    cols = ["yz_vol", "volume_z", "rsi", "macd_hist", "bb_width"]
    if fa["d"] == fb["d"]:
        cols.append("ffd_price")
    pd.testing.assert_frame_equal(a.iloc[head][cols], b.iloc[head][cols], rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_d_is_fitted_on_train_rows_only(seed):
    bars = _bars(500, 11)
    train = np.zeros(len(bars), bool)
    train[:300] = True
    changed = bars.copy()
    rng = np.random.default_rng(seed)
    changed.loc[~train, "u_close"] = rng.uniform(1, 1e5, (~train).sum())
    _, fa = fe.run(bars, train, fe.FeatureConfig())
    _, fb = fe.run(changed, train, fe.FeatureConfig())
    assert (fa["d"], fa["adf_stat"], fa["adf_pvalue"]) == (fb["d"], fb["adf_stat"], fb["adf_pvalue"])


def test_token_source_and_flat_fill_of_missing_bars():
    bars = _bars(200, 2)
    bars[["has_underlying"]] = False
    rng = np.random.default_rng(0)
    bars["close"] = np.clip(0.5 + np.cumsum(rng.normal(0, 0.01, 200)), 0.05, 0.95)
    bars["has_data"] = rng.random(200) > 0.2
    feats, fitted = fe.run(bars, np.ones(200, bool), fe.FeatureConfig())
    assert fitted["price_source"] == "token"
    px = fe.filled_ohlcv(bars, "token")
    miss = ~bars["has_data"].to_numpy()
    prev_close = px["close"].shift(1).to_numpy()
    np.testing.assert_array_equal(px["close"].to_numpy()[miss][1:], prev_close[miss][1:])
    assert (px["volume"].to_numpy()[miss] == 0).all()
    assert np.isfinite(feats["rsi"].to_numpy()[20:]).all()
