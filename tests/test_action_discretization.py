"""action_discretization: ids, thresholds on train only, the HOLD epsilon, the class-median inverse."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import action_discretization as ad


def test_names_and_ids():
    assert ad.ACTIONS == ("STRONG_BUY", "BUY", "HOLD", "SELL", "STRONG_SELL")
    assert [ad.STRONG_BUY, ad.BUY, ad.HOLD, ad.SELL, ad.STRONG_SELL] == [0, 1, 2, 3, 4]
    assert ad.N_ACTIONS == 5 and ad.START_ACTION == 5


def test_demo_policy_actions_match():
    demo = pytest.importorskip("demo_data")
    assert tuple(demo.POLICY_ACTIONS) == ad.ACTIONS


def test_thresholds_are_quantiles_of_each_side():
    net = np.array([0, 10, 20, 30, 40, -1, -2, -3, -4, -5, 0], float)
    th = ad.fit_thresholds(net, 0.75)
    assert th["strong_buy"] == pytest.approx(np.quantile([10, 20, 30, 40], 0.75))
    assert th["strong_sell"] == pytest.approx(np.quantile([1, 2, 3, 4, 5], 0.75))
    assert ad.fit_thresholds(np.array([0.0, 5.0]), 0.75)["strong_sell"] == math.inf


def test_discretize_rule_and_hold_epsilon():
    th = {"strong_buy": 100.0, "strong_sell": 50.0}
    net = np.array([0.0, 5e-10, -5e-10, np.nan, 1.0, 100.0, 100.5, -1.0, -50.0, -50.5])
    got = ad.discretize(net, th)
    assert got.dtype == np.int8
    assert got.tolist() == [2, 2, 2, 2, 1, 1, 0, 3, 3, 4]
    # a null (infinite) threshold never makes a bar strong
    assert ad.discretize(np.array([1e9, -1e9]), {"strong_buy": None, "strong_sell": None}).tolist() == [1, 3]


def test_class_sizes_and_inverse():
    net = np.array([0, 10, 20, 300, -5, -500, -700], float)
    acts = np.array([2, 1, 1, 0, 3, 4, 4])
    sizes = ad.class_sizes(net, acts)
    assert sizes == {"STRONG_BUY": 300.0, "BUY": 15.0, "HOLD": 0.0, "SELL": -5.0, "STRONG_SELL": -600.0}
    assert ad.inverse(np.array([0, 2, 4]), sizes).tolist() == [300.0, 0.0, -600.0]
    assert ad.class_sizes(net[:3], acts[:3])["STRONG_SELL"] is None


def test_run_fits_on_train_only():
    rng = np.random.default_rng(0)
    net = rng.choice([0.0, 10.0, 25.0, 200.0, -15.0, -300.0], size=400) * rng.uniform(0.5, 1.5, 400)
    bars = pd.DataFrame({"net_shares": net})
    train = np.arange(400) < 280
    acts, fitted = ad.run(bars, train, ad.ActionConfig())
    assert fitted["thresholds"] == ad.fit_thresholds(net[train], 0.75)
    bars2 = bars.copy()
    bars2.loc[~train, "net_shares"] = rng.normal(0, 1e4, (~train).sum())  # wild val/test data
    acts2, fitted2 = ad.run(bars2, train, ad.ActionConfig())
    assert fitted2["thresholds"] == fitted["thresholds"]
    assert fitted2["class_sizes"] == fitted["class_sizes"]
    assert (acts2[train] == acts[train]).all()
    # about a quarter of the positive train nets are strong
    pos = net[train] > 0
    share = (acts[train][pos] == ad.STRONG_BUY).mean()
    assert 0.15 < share < 0.35


def test_missing_train_class_gets_a_fallback_size():
    bars = pd.DataFrame({"net_shares": [0.0, 10.0, 20.0, 30.0, 40.0]})
    acts, fitted = ad.run(bars, np.ones(5, bool), ad.ActionConfig())
    assert set(fitted["missing_train_classes"]) == {"SELL", "STRONG_SELL"}
    assert fitted["thresholds"]["strong_sell"] is None
    assert all(isinstance(v, float) for v in fitted["class_sizes"].values())
    assert fitted["class_sizes"]["STRONG_BUY"] == 40.0


def test_bad_quantile_raises():
    with pytest.raises(ValueError, match="strong_quantile"):
        ad.run(pd.DataFrame({"net_shares": [1.0]}), np.ones(1, bool), ad.ActionConfig(1.5))


def test_gap_rule_finds_the_split_between_two_size_modes():
    """Issue 21: a trader with a regular and a strong size (15 % strong) - the seed's 75th
    percentile falls inside the regular mode and mislabels ~10 % of trades; the gap rule does not."""
    from action_discretization import ActionConfig, gap_threshold, run

    rng = np.random.default_rng(0)
    n = 4000
    strong = rng.random(n) < 0.15
    size = np.where(strong, rng.lognormal(np.log(200), 0.15, n), rng.lognormal(np.log(20), 0.3, n))
    net = np.where(rng.random(n) < 0.5, size, -size) * (rng.random(n) < 0.6)
    truth = np.where(net == 0, 2, np.where(net > 0, np.where(strong, 0, 1), np.where(strong, 4, 3)))
    bars = pd.DataFrame({"net_shares": net})
    train = np.arange(n) < 3000
    acts_q, fit_q = run(bars, train, ActionConfig())
    acts_g, fit_g = run(bars, train, ActionConfig(strong_rule="gap"))
    assert 40 < fit_g["thresholds"]["strong_buy"] < 150 and 40 < fit_g["thresholds"]["strong_sell"] < 150
    assert (acts_g == truth).mean() > 0.995
    assert (acts_q == truth).mean() < 0.95  # the quantile rule cuts through the regular mode
    assert fit_q["rule_agreement_train"] == fit_g["rule_agreement_train"] < 0.95
    assert fit_g["thresholds_by_rule"]["quantile"] == fit_q["thresholds"]
    # one size mode: no gap, the side keeps the quantile
    assert gap_threshold(rng.lognormal(np.log(20), 0.3, 500)) is None
    one = pd.DataFrame({"net_shares": rng.lognormal(np.log(20), 0.3, 500)})
    assert run(one, np.ones(500, bool), ActionConfig(strong_rule="gap"))[1]["thresholds"] == \
        run(one, np.ones(500, bool), ActionConfig())[1]["thresholds"]
