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


# ---------------------------------------------------------------- intervals (issue 23)
def test_block_bootstrap_points_match_sklearn_and_pairs_the_differences():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 5, n)
    good = np.where(rng.random(n) < 0.7, y, rng.integers(0, 5, n))  # right 70 %+ of the time
    bad = rng.integers(0, 5, n)
    blocks = np.repeat(np.arange(n // 4), 4)  # 150 markets of 4 bars
    out = ea.block_bootstrap(y, {"twin": good, "noise": bad, "same": good.copy()}, blocks,
                             n_boot=500, seed=0)
    assert out["blocks"] == 150 and out["n_boot"] == 500
    v, lo, hi = out["scores"]["twin"]["macro_f1"]
    assert v == pytest.approx(f1_score(y, good, average="macro"))
    assert out["scores"]["noise"]["accuracy"][0] == pytest.approx(accuracy_score(y, bad))
    assert lo < v < hi and hi - lo < 0.2
    assert out["differences"]["noise"]["verdict"] == "ahead"
    assert out["differences"]["noise"]["macro_f1"][1] > 0
    # the same predictions: every paired resample differs by exactly 0 -> a tie of width 0
    assert out["differences"]["same"]["macro_f1"] == [0.0, 0.0, 0.0]
    assert out["differences"]["same"]["verdict"] == "tie"
    assert "twin" not in out["differences"]


def test_block_bootstrap_resamples_whole_blocks():
    # one block holding every row: each resample is the observed sample, the interval has width 0
    y = np.array([0, 1, 2, 3, 4] * 10)
    pred = np.roll(y, 1)
    out = ea.block_bootstrap(y, {"twin": pred, "b": y}, np.zeros(len(y)), n_boot=50, seed=1)
    v, lo, hi = out["scores"]["twin"]["accuracy"]
    assert v == lo == hi == 0.0
    assert out["differences"]["b"]["verdict"] == "behind"  # exact: the interval is one point


def test_trust_banner_flags_wide_intervals_and_data_size():
    narrow = {"blocks": 900, "scores": {"twin": {"macro_f1": [0.5, 0.47, 0.53]}}}
    wide = {"blocks": 60, "scores": {"twin": {"macro_f1": [0.5, 0.38, 0.61]}}}
    assert ea.trust_banner(narrow, []) == []
    (why,) = ea.trust_banner(wide, [])
    assert "0.380 .. 0.610" in why and "60 markets" in why
    assert ea.trust_banner(narrow, ["too small to learn from: 3 non-HOLD"]) == [
        "too small to learn from: 3 non-HOLD"]


# ---------------------------------------------------------------- sweep effect and rules
def test_sweep_effect_names_the_size_of_the_change():
    targets = np.linspace(-0.1, 0.1, 5)
    base = np.tile([0.1, 0.1, 0.6, 0.1, 0.1], (5, 200, 1))
    tiny = base.copy()
    tiny[:, :, 0] += np.linspace(0, 0.004, 5)[:, None]  # monotone but tiny
    tiny[:, :, 2] -= np.linspace(0, 0.004, 5)[:, None]
    s = ea.sweep_statistics(targets, tiny)
    assert s["spearman_direction"] == pytest.approx(1.0)
    assert s["effect"]["size"] == "negligible" and s["effect"]["direction_range"] == pytest.approx(0.004)
    big = base.copy()
    big[:, :, 0] += np.linspace(0, 0.3, 5)[:, None]
    big[:, :, 2] -= np.linspace(0, 0.3, 5)[:, None]
    e = ea.sweep_statistics(targets, big)["effect"]
    assert e["size"] == "large" and e["direction_range"] == pytest.approx(0.3)


def _split_pairs(text: str) -> list[tuple[str, str]]:
    """(left leaf class, right leaf class) for every split whose two children are leaves."""
    lines = text.splitlines()
    pairs = []
    for i, line in enumerate(lines):
        if "<=" in line and i + 1 < len(lines) and "class:" in lines[i + 1]:
            depth = line.index("|---")
            right = next(j for j in range(i + 2, len(lines))
                         if lines[j].index("|---") == depth and " >  " in lines[j])
            if right + 1 < len(lines) and "class:" in lines[right + 1]:
                pairs.append((lines[i + 1].split("class: ")[1].split()[0],
                              lines[right + 1].split("class: ")[1].split()[0]))
    return pairs


def test_distilled_rules_are_in_raw_units_and_never_split_into_one_class():
    from sklearn.tree import DecisionTreeClassifier, export_text

    rng = np.random.default_rng(0)
    rsi = rng.uniform(0, 100, 3000)
    x = np.c_[(rsi - 50) / 50, rng.normal(size=3000)]  # the state's rsi map, and noise
    y = np.where(rsi > 70, 0, np.where(rsi < 30, 4, 2))
    y = np.where(rng.random(3000) < 0.25, 1, y)  # noise that makes same-class splits
    names = ["rsi", "noise"]
    plain = export_text(DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y),
                        feature_names=names)
    plain_pairs = [p for p in _split_pairs(plain) if p[0] == p[1]]
    assert plain_pairs  # sklearn's own text has same-class splits here (the bug being fixed)
    r = ea.distill_rules(x, y, x, y, y, names, 4, 0, to_raw=lambda n, v: 50 + 50 * v if n == "rsi" else v,
                         units={"rsi": "RSI 0..100", "noise": ""})
    assert all(a != b for a, b in _split_pairs(r["rules"]))
    thresholds = [float(line.split("<= ")[1].split()[0]) for line in r["rules"].splitlines()
                  if line.strip("| -").startswith("rsi <=")]
    assert thresholds and any(abs(t - 70) < 2 for t in thresholds) and any(abs(t - 30) < 2 for t in thresholds)
    assert "[RSI 0..100]" in r["rules"]
    assert r["fidelity_train"] == pytest.approx(
        (DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y).predict(x) == y).mean())


def test_class_offsets_fitted_on_val_raise_macro_f1_where_a_rare_class_is_under_predicted():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(5)
    n = 3000
    y = rng.choice(5, n, p=[0.05, 0.2, 0.5, 0.2, 0.05])
    logits = rng.normal(0, 1, (n, 5))
    logits[np.arange(n), y] += 1.5
    logits[:, [0, 4]] -= 2.0  # a model that almost never says STRONG
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    b = ea.fit_class_offsets(proba[:1500], y[:1500])
    assert b[HOLD] == 0 and b[0] > 0.5 and b[4] > 0.5  # the rare classes get pushed up
    plain = f1_score(y[1500:], proba[1500:].argmax(1), average="macro")
    tuned = f1_score(y[1500:], (np.log(proba[1500:]) + b).argmax(1), average="macro")
    assert tuned > plain + 0.03  # and it carries over to rows it was not fitted on
    assert (ea.fit_class_offsets(np.eye(5)[y], y) == 0).all()  # already perfect: nothing moves
