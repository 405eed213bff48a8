"""state_features: order, the one-bar shift, temporal encodings, train-only scales, finiteness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import state_features as sf


def make_bars(n: int = 120, addresses=("0xa", "0xb"), interval="15min", seed=0) -> pd.DataFrame:
    """A synthetic bar table with the INTERFACES columns (values random but well-formed)."""
    rng = np.random.default_rng(seed)
    frames = []
    for a in addresses:
        start = pd.date_range("2026-01-05", periods=n, freq=interval, tz="UTC")
        net = rng.choice([0.0, 0.0, 20.0, -20.0, 200.0, -200.0], size=n)
        inv = np.cumsum(net)
        flat = inv == 0
        cost = np.abs(inv) * 0.5
        since = np.where(flat, -1, rng.integers(0, 10, n))
        mid = np.clip(0.5 + rng.normal(0, 0.1, n), 0.01, 0.99)
        frames.append(pd.DataFrame({
            "address": a, "bar_start": start, "slug": None,
            "open": mid, "high": mid + 0.01, "low": mid - 0.01, "close": mid,
            "volume": rng.uniform(0, 100, n), "spread": 0.02, "has_data": True,
            "u_open": 97000.0, "u_high": 97010.0, "u_low": 96990.0, "u_close": 97000.0,
            "u_volume": 1.0, "has_underlying": True, "n_trades": (net != 0).astype(int),
            "net_shares": net, "buy_usdc": np.clip(net, 0, None) * 0.5,
            "sell_usdc": np.clip(-net, 0, None) * 0.5, "inv_up": np.clip(inv, 0, None),
            "inv_down": np.clip(-inv, 0, None), "inventory": inv,
            "avg_entry_up": np.where(inv > 0, 0.5, np.nan), "avg_entry_down": np.where(inv < 0, 0.5, np.nan),
            "cost_basis": cost, "exposure_usdc": cost + rng.uniform(0, 5, n),
            "realized_pnl": np.cumsum(rng.normal(0, 1, n)),
            "unrealized_pnl": np.where(flat, 0.0, rng.normal(0, 2, n)),
            "pnl": rng.normal(0, 1, n), "bars_since_entry": since, "settled": False,
        }))
    return pd.concat(frames, ignore_index=True)


def make_features(bars: pd.DataFrame, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(bars)
    f = pd.DataFrame({
        "ffd_price": rng.normal(3, 2, n), "yz_vol": rng.uniform(0.001, 0.01, n),
        "volume_z": rng.normal(0, 1, n), "rsi": rng.uniform(0, 100, n),
        "macd_hist": rng.normal(0, 0.01, n), "bb_width": rng.uniform(0, 0.1, n),
    }, index=bars.index)
    f.iloc[:5] = np.nan  # warm-up
    return f


@pytest.fixture()
def data():
    bars = make_bars()
    train = (bars["bar_start"] < bars["bar_start"].iloc[80]).to_numpy()
    return bars, make_features(bars), train


def test_columns_order_finite_and_clipped(data):
    bars, feats, train = data
    states, fitted = sf.run(bars, feats, train, sf.StateConfig())
    assert list(states.columns) == sf.STATE_FEATURES and len(sf.STATE_FEATURES) == 17
    assert fitted["state_dim"] == 17 and fitted["state_features"] == sf.STATE_FEATURES
    assert states.dtypes.eq(np.float32).all()
    v = states.to_numpy()
    assert np.isfinite(v).all() and np.abs(v).max() <= 5.0
    assert len(states) == len(bars)


def test_one_bar_shift_state_uses_previous_row_only(data):
    bars, feats, train = data
    base, _ = sf.run(bars, feats, train, sf.StateConfig())
    k = 100  # a non-train row of address 0xa (rows 0..119)
    assert not train[k]
    bars2, feats2 = bars.copy(), feats.copy()
    feats2.loc[k, ["ffd_price", "volume_z", "rsi"]] = [9.0, 3.0, 90.0]
    bars2.loc[k, ["unrealized_pnl", "cost_basis", "inventory"]] = [7.0, 30.0, 60.0]
    changed, _ = sf.run(bars2, feats2, train, sf.StateConfig())
    diff = (base != changed).any(axis=1).to_numpy()
    assert np.flatnonzero(diff).tolist() == [k + 1]  # only the next bar's state sees bar k


def test_first_bar_of_each_address_is_flat_and_blank(data):
    bars, feats, train = data
    feats = feats.fillna(1.0)
    raw = sf.raw_state(bars, feats)
    first = bars.groupby("address").head(1).index
    assert (raw.loc[first, sf.AGENT_FEATURES].to_numpy() == 0).all()  # a flat book
    assert raw.loc[first, sf.MARKET_FEATURES].isna().all().all()  # no market seen yet
    states, _ = sf.run(bars, feats, train, sf.StateConfig())
    assert (states.loc[first, sf.MARKET_FEATURES].to_numpy() == 0).all()  # -> the train mean
    assert (states.loc[first + 1, sf.MARKET_FEATURES].to_numpy() != 0).any()


def test_temporal_encoding_values():
    bars = make_bars(n=3, addresses=("0xa",))
    bars["bar_start"] = pd.to_datetime(
        ["2026-01-05 06:00", "2026-01-07 18:00", "2026-01-11 00:00"], utc=True)  # Mon, Wed, Sun
    t = sf.temporal_features(bars["bar_start"])
    # 06:00 -> quarter of the day: sin 1, cos 0; Monday -> dow 0.
    np.testing.assert_allclose(t.loc[0, ["tod_sin", "tod_cos", "hour_sin", "dow_sin", "dow_cos"]],
                               [1, 0, 1, 0, 1], atol=1e-12)
    # 18:00 -> three quarters: sin -1; Wednesday -> 2/7 of the week.
    np.testing.assert_allclose(t.loc[1, ["tod_sin", "dow_sin"]],
                               [-1, np.sin(2 * np.pi * 2 / 7)], atol=1e-12)
    np.testing.assert_allclose(t.loc[2, ["tod_cos", "dow_cos"]], [1, np.cos(2 * np.pi * 6 / 7)],
                               atol=1e-12)


def test_agent_features_formulas():
    bars = make_bars(n=4, addresses=("0xa",))
    bars["unrealized_pnl"] = [5.0, 0.0, 0.0, 0.0]
    bars["cost_basis"] = [20.0, 0.0, 0.0, 0.0]
    bars["inventory"] = [40.0, 0.0, 0.0, 0.0]
    bars["bars_since_entry"] = [0, -1, 3, -1]
    raw = sf.raw_state(bars, make_features(bars).fillna(0.0))
    row = raw.loc[1]  # sees bar 0, in the features' own units
    assert row["unrealized_pnl"] == pytest.approx(5.0)  # USDC
    assert row["pnl_pct_position"] == pytest.approx(25.0)  # % of cost
    assert row["position_size_ratio"] == pytest.approx(20.0)  # USDC of cost basis
    assert row["time_since_entry"] == pytest.approx(np.log(2.0))
    assert row["inventory"] == pytest.approx(40.0)  # shares
    assert raw.loc[2, ["pnl_pct_position", "time_since_entry"]].tolist() == [0.0, 0.0]  # flat
    assert raw.loc[3, "time_since_entry"] == pytest.approx(np.log1p(4.0))
    _, fitted = sf.run(bars, make_features(bars).fillna(0.0), np.ones(4, bool), sf.StateConfig(capital=100.0))
    assert fitted["capital"] == 100.0


def test_scales_and_capital_fitted_on_train_only(data):
    bars, feats, train = data
    _, base = sf.run(bars, feats, train, sf.StateConfig())
    assert base["capital"] == pytest.approx(bars.loc[train, "exposure_usdc"].max())
    bars2, feats2 = bars.copy(), feats.copy()
    feats2.loc[~train, sf.MARKET_FEATURES] = 1e6
    bars2.loc[~train, ["exposure_usdc", "inventory"]] = 1e6
    _, other = sf.run(bars2, feats2, train, sf.StateConfig())
    assert other["scales"] == base["scales"] and other["capital"] == base["capital"]
    feats3 = feats.copy()
    feats3.loc[np.flatnonzero(train)[10:20], "volume_z"] += 10.0
    _, moved = sf.run(bars, feats3, train, sf.StateConfig())
    assert moved["scales"]["volume_z"] != base["scales"]["volume_z"]


def test_every_feature_is_standardised_on_train_and_nan_is_the_mean(data):
    bars, feats, train = data
    feats = feats.copy()
    feats.loc[50, "ffd_price"] = np.nan
    states, fitted = sf.run(bars, feats, train, sf.StateConfig(clip=50.0))
    tr = states[train].astype(np.float64)
    varying = [c for c in tr.columns if fitted["scales"][c]["std"] != 1.0 or tr[c].std() > 0]
    assert {"rsi", "hour_sin", "unrealized_pnl", "inventory"} <= set(varying)
    raw = sf.raw_state(bars, feats)[train]
    for c in varying:  # mean 0 and std 1 over the train values that exist
        ok = raw[c].notna().to_numpy()
        assert tr.loc[ok, c].mean() == pytest.approx(0.0, abs=1e-5), c
        assert tr.loc[ok, c].std(ddof=0) == pytest.approx(1.0, rel=1e-4), c
    assert states.loc[51, "ffd_price"] == 0.0  # undefined -> the train mean
    assert fitted["scales"]["rsi"]["std"] == pytest.approx(float(np.nanstd(raw["rsi"])))


def test_extra_features_market_clock_with_1min_bars():
    bars = make_bars(n=40, addresses=("0xa",), interval="1min")
    feats = make_features(bars)
    states, fitted = sf.run(bars, feats, np.ones(40, bool), sf.StateConfig(extra_features=True))
    assert fitted["state_dim"] == 19
    assert list(states.columns) == sf.STATE_FEATURES + sf.EXTRA_FEATURES
    raw = sf.raw_state(bars, feats, extra_features=True)
    minute_in_window = bars["bar_start"].dt.minute.to_numpy() % 15
    np.testing.assert_allclose(raw["market_clock_sin"],
                               np.sin(2 * np.pi * minute_in_window / 15), atol=1e-6)
    np.testing.assert_allclose(raw["market_clock_cos"],
                               np.cos(2 * np.pi * minute_in_window / 15), atol=1e-6)


def test_zero_exposure_falls_back_with_warning(data):
    bars, feats, train = data
    bars = bars.copy()
    bars["exposure_usdc"] = 0.0
    states, fitted = sf.run(bars, feats, train, sf.StateConfig())
    assert fitted["capital"] == 1.0 and fitted["warnings"]
    assert np.isfinite(states.to_numpy()).all()


def test_raw_units_undo_the_normalisation():
    scales = {"rsi": {"mean": 50.0, "std": 50.0}, "yz_vol": {"mean": 0.002, "std": 0.001},
              "unrealized_pnl": {"mean": 0.0, "std": 200.0}}
    assert sf.raw_units("rsi", 0.09, scales) == pytest.approx(54.5)
    assert sf.raw_units("yz_vol", -1.0, scales) == pytest.approx(0.001)
    assert sf.raw_units("unrealized_pnl", 0.25, scales) == pytest.approx(50.0)  # USDC
    assert sf.raw_units("time_since_entry", np.log1p(3 + 1.0), scales) == pytest.approx(3.0)
    assert sf.raw_units("bars_since_trade", np.log1p(7.0), scales) == pytest.approx(7.0)
    assert sf.raw_units("hour_sin", 0.5, scales) == 0.5
    assert set(sf.FEATURE_UNITS) >= set(sf.STATE_FEATURES + sf.EXTRA_FEATURES)
    assert set(sf.FEATURE_UNITS) >= set(sf.state_columns(True, "extended", "1min"))
