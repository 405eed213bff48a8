"""Tests of _evaluate_analysis: each analysis on synthetic rows whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import _evaluate_analysis as ea
from action_discretization import HOLD, START_ACTION

COLS = ["f0", "f1", "f2"]


def synthetic_rows(n: int, seed: int, split: str = "train") -> pd.DataFrame:
    """Rows whose action is a step function of f0 (five ordered bins); f1, f2 are noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 3))
    action = 4 - np.digitize(x[:, 0], [-0.6, -0.2, 0.2, 0.6])  # high f0 -> STRONG_BUY (0)
    df = pd.DataFrame(x, columns=COLS)
    df["address"] = "0xa"
    df["bar_start"] = pd.date_range("2026-01-05", periods=n, freq="15min", tz="UTC")
    df["split"] = split
    df["action"] = action.astype(np.int8)
    df["prev_action"] = np.r_[START_ACTION, action[:-1]].astype(np.int8)
    return df


def test_classification_metrics_match_a_hand_computed_example():
    y = np.array([0, 0, 1, 2])
    pred = np.array([0, 1, 1, 2])
    m = ea.classification_metrics(y, pred, np.eye(5)[pred])
    assert m["accuracy"] == pytest.approx(0.75)
    # class 0: P 1, R 1/2, F 2/3; class 1: P 1/2, R 1, F 2/3; class 2: F 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["per_class"]["BUY"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["STRONG_BUY"]["recall"] == pytest.approx(0.5)
    cm = np.array(m["confusion"])
    assert cm.shape == (5, 5) and cm.sum() == 4 and cm[0, 1] == 1
    # one-hot probabilities that are wrong on one row: log-loss = -log(eps) / 4, large but finite
    assert np.isfinite(m["log_loss"]) and m["log_loss"] > 1.0


def test_learned_baselines_recover_a_feature_that_determines_the_action():
    train, test = synthetic_rows(3000, 0), synthetic_rows(600, 1, "test")
    out = ea.fit_baselines(train, test, COLS, seed=0)
    y = test["action"].to_numpy()
    acc = {k: float((v["pred"] == y).mean()) for k, v in out.items()}
    assert acc["logistic_regression"] > 0.9
    assert acc["hist_gradient_boosting"] > 0.97
    majority = np.bincount(train["action"]).argmax()
    assert (out["majority"]["pred"] == majority).all()
    for v in out.values():
        assert v["proba"].shape == (len(test), 5)
        np.testing.assert_allclose(v["proba"].sum(1), 1.0, atol=1e-9)


def test_previous_action_baseline_predicts_the_previous_action_and_start_as_hold():
    train, test = synthetic_rows(200, 0), synthetic_rows(50, 1, "test")
    out = ea.fit_baselines(train, test, COLS)["previous_action"]
    expected = test["prev_action"].to_numpy().astype(int)
    expected[expected == START_ACTION] = HOLD
    np.testing.assert_array_equal(out["pred"], expected)


def test_baselines_with_one_train_class_fall_back_to_the_constant():
    train = synthetic_rows(100, 0).assign(action=np.int8(HOLD))
    out = ea.fit_baselines(train, synthetic_rows(20, 1, "test"), COLS)
    assert (out["logistic_regression"]["pred"] == HOLD).all()


def _truth_for(rows: pd.DataFrame, pi: np.ndarray) -> pd.DataFrame:
    t = pd.DataFrame({"address": rows["address"], "decision_time": rows["bar_start"],
                      "strategy": "x", "action": rows["action"].to_numpy(), "net_shares": 0.0})
    for k in range(5):
        t[f"prob_{k}"] = pi[:, k]
    return t


def test_oracle_reports_the_bayes_ceiling_and_the_twins_fraction():
    rows = synthetic_rows(400, 2, "test")
    y = rows["action"].to_numpy()
    pi = np.full((len(rows), 5), 0.1)
    pi[np.arange(len(rows)), y] = 0.6  # argmax pi = the recorded action, max pi = 0.6
    twin = y.copy()
    twin[:100] = (y[:100] + 1) % 5  # the twin is wrong on a quarter of the rows
    o = ea.oracle_report(rows, twin, _truth_for(rows, pi), "15min")
    assert o["available"] and o["n_matched"] == 400 and o["coverage"] == 1.0
    assert o["expected_accuracy"] == pytest.approx(0.6)
    assert o["argmax_accuracy"] == 1.0 and o["argmax_macro_f1"] == 1.0
    assert o["drawn_vs_discretised_agreement"] == 1.0
    assert o["twin_accuracy_matched"] == pytest.approx(0.75)
    assert o["twin_fraction_accuracy"] == pytest.approx(0.75 / o["argmax_accuracy"])
    assert o["twin_fraction_macro_f1"] == pytest.approx(o["twin_macro_f1_matched"])


def test_oracle_skips_when_the_decision_interval_is_not_the_bar_interval():
    rows = synthetic_rows(50, 2, "test")
    o = ea.oracle_report(rows, rows["action"].to_numpy(), _truth_for(rows, np.full((50, 5), 0.2)), "1min")
    assert not o["available"] and "differs from the bar interval" in o["reason"]
    assert not ea.oracle_report(rows, rows["action"].to_numpy(), None, "15min")["available"]


def test_sweep_statistics_detect_a_monotone_steering_and_a_flat_one():
    targets = np.linspace(-0.05, 0.05, 5)
    g = np.linspace(0, 1, 5)[:, None, None]
    buy, sell = np.array([0, 1, 0, 0, 0.0]), np.array([0, 0, 0, 1, 0.0])
    proba = np.broadcast_to(g * buy + (1 - g) * sell, (5, 7, 5))  # more BUY as the target rises
    s = ea.sweep_statistics(targets, proba)
    assert s["spearman_direction"] == pytest.approx(1.0)
    assert s["spearman_trade_rate"] is None  # never HOLD: the trade rate is constant
    assert np.asarray(s["pred_share"]).shape == (5, 5)
    flat = ea.sweep_statistics(targets, np.full((5, 7, 5), 0.2))
    assert flat["spearman_direction"] is None


def test_distilled_tree_recovers_a_threshold_rule_with_full_fidelity():
    train, test = synthetic_rows(500, 0), synthetic_rows(200, 1, "test")
    twin_train = np.where(train["f1"] > 0, 1, 3)  # the "twin" buys when f1 > 0
    twin_test = np.where(test["f1"] > 0, 1, 3)
    r = ea.distill_rules(train[COLS].to_numpy(), twin_train, test[COLS].to_numpy(), twin_test,
                         test["action"].to_numpy(), COLS, max_depth=2)
    assert r["fidelity_train"] == 1.0 and r["fidelity_eval"] >= 0.98  # a test point may fall in the split gap
    assert "f1 <=" in r["rules"] and "BUY" in r["rules"] and "SELL" in r["rules"]
    assert r["n_leaves"] <= 4
