"""The `extended` state columns (_state_extended via state_features): formulas on series whose
answer is known, and no look-ahead: perturbing every bar from T on moves no row at or before T."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

import state_features as sf
from _state_extended import extended_columns, extended_raw


def bars_for(n: int, interval: str, seed: int = 0, addresses=("0xa",)) -> pd.DataFrame:
    """A bar table with the columns the extended set reads: BTC random walk, Up mid, outcomes."""
    rng = np.random.default_rng(seed)
    frames = []
    for a in addresses:
        t = pd.date_range("2026-01-05", periods=n, freq=interval, tz="UTC")
        u = 97000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
        window = t.floor("15min")
        settle = pd.Series(rng.integers(0, 2, n).astype(float)).groupby(window).transform("first")
        net = rng.choice([0.0, 0.0, 0.0, 10.0, -10.0, 50.0], n)
        frames.append(pd.DataFrame({
            "address": a, "bar_start": t, "u_close": u, "close": rng.uniform(0.05, 0.95, n),
            "settle_up": settle.to_numpy(), "net_shares": net, "pnl": rng.normal(0, 3, n)}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("interval", ["15min", "1min"])
def test_no_row_at_or_before_t_moves_when_later_bars_change(interval):
    bars = bars_for(600, interval, addresses=("0xa", "0xb"))
    base = extended_raw(bars, interval)
    assert list(base.columns) == extended_columns(interval)
    for cut in (37, 250, 413):
        t = bars["bar_start"].iloc[cut]
        later = (bars["bar_start"] > t).to_numpy()
        moved = bars.copy()
        rng = np.random.default_rng(cut)
        for c in ("u_close", "close", "net_shares", "pnl"):
            moved.loc[later, c] = moved.loc[later, c] * rng.uniform(0.5, 1.5, later.sum()) + 1.0
        moved.loc[later, "settle_up"] = 1.0 - moved.loc[later, "settle_up"]
        # row t itself sees only rows before it: it must not move either
        keep = ~later
        pd.testing.assert_frame_equal(extended_raw(moved, interval)[keep], base[keep], check_exact=True)
        assert not extended_raw(moved, interval)[later].equals(base[later])


def test_btc_returns_are_in_volatility_units():
    bars = bars_for(400, "15min")
    out = extended_raw(bars, "15min")
    p = bars["u_close"].shift(1)  # BTC at bar_start = the previous bar's close
    lr = np.log(p / p.shift(1))
    sigma = lr.rolling(96, min_periods=10).std()
    k = 4  # 60 minutes of 15-minute bars
    expect = np.log(p / p.shift(k)) / (sigma * np.sqrt(k))
    np.testing.assert_allclose(out["btc_ret_60m"].iloc[120:], expect.iloc[120:], rtol=1e-9)
    assert "btc_ret_1m" not in out and "btc_ret_15m" in out  # below one bar: not observable
    np.testing.assert_allclose(out["rv_240m"].iloc[120:], np.log(lr.rolling(16, min_periods=2).std()).iloc[120:],
                               rtol=1e-9)


def test_resolutions_and_signed_streak():
    bars = bars_for(8, "15min")
    bars["settle_up"] = [1, 1, 0, 1, 1, 1, 0, 0]
    out = extended_raw(bars, "15min")
    assert out["res_1"].tolist()[1:] == [1, 1, -1, 1, 1, 1, -1]  # the previous market's outcome
    assert out["res_2"].tolist()[2:] == [1, 1, -1, 1, 1, 1]
    assert np.isnan(out["res_1"].iloc[0])
    assert out["res_streak"].tolist()[1:] == [1, 2, -1, 1, 2, 3, -1]
    # without a settle_up the market resolves by BTC at its end against its strike
    bars["settle_up"] = np.nan
    bars["u_close"] = [100.0, 101.0, 100.5, 100.5, 99.0, 99.5, 99.6, 99.0]
    out = extended_raw(bars, "15min")
    # market 1 [strike = 100 (bar 0 close), end 101] Up; 2: 101 -> 100.5 Down; 3: 100.5 -> 100.5 Up
    assert out["res_1"].tolist()[2:5] == [1, -1, 1]


def test_market_clock_strike_distance_and_fair_value_at_1min():
    bars = bars_for(120, "1min")
    out = extended_raw(bars, "1min")
    i = 37  # 00:37 -> the market that opened at 00:30, 8 minutes left
    assert out.loc[i, "market_time_left"] == pytest.approx(8 / 15)
    p = bars["u_close"].shift(1)
    strike = p.iloc[30]
    sigma = np.log(p / p.shift(1)).rolling(1440, min_periods=10).std().iloc[i]
    dist = np.log(p.iloc[i] / strike) / (sigma * np.sqrt(8))
    assert out.loc[i, "strike_dist"] == pytest.approx(dist)
    assert out.loc[i, "fair_value"] == pytest.approx(ndtr(dist))
    assert out.loc[i, "up_mid"] == pytest.approx(bars.loc[i - 1, "close"])  # same market
    assert out.loc[30, "up_mid"] == pytest.approx(out.loc[30, "fair_value"])  # market just opened
    assert out.loc[30, "strike_dist"] == 0.0


def test_own_activity():
    bars = bars_for(10, "15min")
    bars["net_shares"] = [0, 10, 0, 0, -5, 0, 0, 0, 0, 0]
    bars["pnl"] = [0, 1, 2, 0, 0, 0, 0, 0, 0, 0]
    out = extended_raw(bars, "15min")
    since = np.expm1(out["bars_since_trade"]).round().tolist()
    assert since[2:7] == [1, 2, 3, 1, 2]  # bar 1 traded: bar 2 sees 1 bar since
    assert out["net_60m"].tolist()[:7] == [0, 0, 10, 10, 10, 5, -5]  # 4 bars before each
    assert out["pnl_15m"].tolist()[:4] == [0, 0, 1, 2]


def test_extended_set_through_state_features():
    bars = bars_for(300, "1min")
    for c, v in (("has_data", True), ("exposure_usdc", 10.0), ("unrealized_pnl", 0.0),
                 ("cost_basis", 0.0), ("inventory", 0.0), ("bars_since_entry", -1)):
        bars[c] = v
    feats = pd.DataFrame(np.random.default_rng(1).normal(size=(300, 6)), columns=sf.MARKET_FEATURES)
    train = np.arange(300) < 200
    states, fitted = sf.run(bars, feats, train, sf.StateConfig(feature_set="extended", bar_interval="1min"))
    cols = sf.state_columns(False, "extended", "1min")
    assert list(states.columns) == cols == fitted["state_features"] and fitted["state_dim"] == len(cols)
    assert cols[:17] == sf.STATE_FEATURES and np.isfinite(states.to_numpy()).all()
    assert np.abs(states.to_numpy()).max() <= 5.0
    with pytest.raises(ValueError, match="feature set"):
        sf.state_columns(False, "everything")
