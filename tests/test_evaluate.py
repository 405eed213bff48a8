"""Tests of evaluate.py: honest conditioning, the report's contents and consistency, the CLI.

Fast tests run on a synthetic processed parquet and a small random-init checkpoint built here;
the end-to-end test runs demo_data -> pipeline -> a tiny training run -> evaluate. The issue's
acceptance (30-day momentum demo at the default settings; minutes of training) is
bench/bench_twin_acceptance.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import torch

import evaluate
import sequence_preparation
from action_discretization import START_ACTION
from model_architecture import TraderDecisionTransformer
from state_features import FEATURE_UNITS, STATE_FEATURES

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIZES = {"STRONG_BUY": 40.0, "BUY": 10.0, "HOLD": 0.0, "SELL": -10.0, "STRONG_SELL": -40.0}


def write_synthetic(root: Path, n: int = 420, window: int = 32, seed: int = 0) -> dict:
    """A processed parquet + meta + a small random-init checkpoint + demo-style truth in root."""
    rng = np.random.default_rng(seed)
    t = pd.date_range("2026-01-05", periods=n, freq="15min", tz="UTC")
    x = rng.normal(size=(n, len(STATE_FEATURES))).astype(np.float32)
    act = 4 - np.digitize(x[:, 0], [-1.0, -0.3, 0.3, 1.0])  # STRONG_BUY when ffd_price > 1
    net = np.array([SIZES[a] for a in SIZES])[act]
    pnl = net * rng.normal(0, 0.3, n)
    df = pd.DataFrame(x, columns=STATE_FEATURES)
    df.insert(0, "address", "0xabc")
    df.insert(1, "bar_start", t)
    n_tr, n_va = int(n * 0.5), 60
    split = ["train"] * n_tr + ["embargo"] * window + ["val"] * n_va + ["embargo"] * window
    df.insert(2, "split", split + ["test"] * (n - len(split)))
    df["action"] = act.astype(np.int8)
    df["prev_action"] = np.r_[START_ACTION, act[:-1]].astype(np.int8)
    df["net_shares"], df["pnl"], df["return"], df["inventory"] = net, pnl, pnl / 1000, 0.0
    root.mkdir(parents=True, exist_ok=True)
    df.to_parquet(root / "processed.parquet")
    meta = {"state_features": STATE_FEATURES, "window": window, "stride": 8,
            "bar_interval": "15min", "actions": {"class_sizes": SIZES}}
    sequence_preparation.meta_path_for(root / "processed.parquet").write_bytes(orjson.dumps(meta))
    cfg = {"state_dim": 17, "action_dim": 5, "d_model": 32, "n_layers": 2, "n_heads": 4,
           "context": window, "dropout": 0.1}
    torch.manual_seed(seed)
    model = TraderDecisionTransformer(**cfg)
    torch.save({"model_state_dict": model.state_dict(), "model_config": cfg,
                "pipeline_meta": meta, "epoch": 0}, root / "model.pt")
    pi = np.full((n, 5), 0.05)
    pi[np.arange(n), act] = 0.8
    truth = pd.DataFrame({"address": "0xabc", "decision_time": t, "strategy": "synthetic",
                          **{f"prob_{k}": pi[:, k] for k in range(5)}, "action": act,
                          "net_shares": net})
    (root / "truth").mkdir(exist_ok=True)
    truth.to_parquet(root / "truth" / "0xabc.parquet")
    return {"df": df, "model": model.eval(), "root": root, "window": window}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    return write_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def report(synthetic) -> dict:
    root = synthetic["root"]
    cfg = evaluate.EvalConfig(model=str(root / "model.pt"), processed=str(root / "processed.parquet"),
                              out=str(root / "reports"), truth_dir=str(root / "truth"), sweep_steps=5)
    headline = evaluate.run(cfg)
    metrics = orjson.loads((root / "reports" / "metrics.json").read_bytes())
    return {"headline": headline, "metrics": metrics, "out": root / "reports", "df": synthetic["df"]}


def test_honest_rtg_starts_at_the_target_and_uses_only_past_returns():
    r = np.random.default_rng(0).normal(size=(2, 10))
    rtg = sequence_preparation.honest_rtg(r, 0.03)
    np.testing.assert_allclose(rtg[:, 0], 0.03)
    np.testing.assert_allclose(rtg[:, 4], 0.03 - r[:, :4].sum(1))
    r2 = r.copy()
    r2[:, 4:] += 7.0  # changing r_k for k >= 4 leaves RTG_t for t <= 4 unchanged
    np.testing.assert_array_equal(sequence_preparation.honest_rtg(r2, 0.03)[:, :5], rtg[:, :5])


def test_honest_conditioning_equals_predict_with_target_rtg(synthetic):
    from training import TraderInference

    df, model, w = synthetic["df"], synthetic["model"], synthetic["window"]
    head = df.iloc[:w].assign(split="train")  # one window at the trader's start: prev_0 = START
    out = evaluate.predict_split(model, head, "train", w, STATE_FEATURES, [0.02], "cpu", 8)
    states = torch.tensor(head[STATE_FEATURES].to_numpy(np.float32))[None]
    actions = torch.tensor(head["action"].to_numpy(np.int64))[None]
    returns = torch.tensor(head["return"].to_numpy(np.float32))[None]
    logits, rtg = TraderInference(model).predict_with_target_rtg(states, 0.02, actions, returns)
    np.testing.assert_allclose(out["proba"][0], torch.softmax(logits[0], -1).numpy(), atol=1e-5)
    np.testing.assert_allclose(out["rtg_pred"][0], rtg[0].numpy(), atol=1e-6)


def test_twin_predictions_never_see_the_future(synthetic):
    df, model, w = synthetic["df"], synthetic["model"], synthetic["window"]
    base = evaluate.predict_split(model, df, "test", w, STATE_FEATURES, [0.01], "cpu", 8)
    cut = int(base["rows"][w + 5])  # a row inside the second test window
    future = df.copy()
    later = future.index >= cut
    future.loc[later, "return"] += 0.5  # the future's returns, states and actions change
    future.loc[later, STATE_FEATURES] = 3.0
    future.loc[later, "action"] = 0
    future.loc[future.index > cut, "prev_action"] = 0
    moved = evaluate.predict_split(model, future, "test", w, STATE_FEATURES, [0.01], "cpu", 8)
    before = base["rows"] < cut
    np.testing.assert_array_equal(moved["proba"][0][before], base["proba"][0][before])
    assert not np.allclose(moved["proba"][0][~before], base["proba"][0][~before])


def test_report_files_exist_and_are_valid(report):
    out = report["out"]
    for name in ("metrics.json", "predictions.parquet", "report.md", *report["metrics"]["plots"]):
        assert (out / name).stat().st_size > 0, name
    for name in report["metrics"]["plots"]:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers


def test_metrics_are_consistent_with_the_predictions(report):
    m, preds = report["metrics"], pd.read_parquet(report["out"] / "predictions.parquet")
    df = report["df"]
    n_test = int((df["split"] == "test").sum())
    assert m["rows"] == len(preds) == n_test == m["twin"]["n"]
    assert np.array(m["twin"]["confusion"]).sum() == n_test
    assert set(preds["split"]) == {"test"}
    probs = preds[[c for c in preds if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(preds["pred"], probs.argmax(1))
    assert m["twin"]["accuracy"] == pytest.approx((preds["pred"] == preds["action"]).mean())
    # the confusion matrix's row sums are the trader's class counts on the test rows
    counts = np.bincount(preds["action"], minlength=5)
    np.testing.assert_array_equal(np.array(m["twin"]["confusion"]).sum(1), counts)


def test_metrics_json_has_every_section(report):
    m = report["metrics"]
    for key in ("twin", "leaky_reference_realised_rtg", "baselines", "twin_beats", "oracle",
                "rtg_sweep", "backtest", "distilled_rules", "target_rtg", "conditioning"):
        assert key in m, key
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "rtg_mae", "per_class"):
        assert key in m["twin"], key
    assert set(m["baselines"]) == {"majority", "previous_action", "logistic_regression",
                                   "hist_gradient_boosting"}
    assert m["twin_beats"]["majority"] == (m["twin"]["macro_f1"] > m["baselines"]["majority"]["macro_f1"])
    # default target: the train split's mean return x window
    df = report["df"]
    expected = df.loc[df["split"] == "train", "return"].mean() * 32
    assert m["target_rtg"] == pytest.approx(expected)
    o = m["oracle"]
    assert o["available"] and o["coverage"] == 1.0
    assert o["expected_accuracy"] == pytest.approx(0.8)
    assert o["argmax_macro_f1"] == 1.0  # argmax pi is the recorded action in this fixture
    assert len(m["rtg_sweep"]["targets"]) == 5
    assert m["distilled_rules"]["max_depth"] <= 4 and "class:" in m["distilled_rules"]["rules"]
    h = report["headline"]
    assert h["twin"]["macro_f1"] == m["twin"]["macro_f1"] and h["oracle_macro_f1"] == 1.0


def test_report_md_has_the_sections_and_says_whether_the_twin_beats_each_baseline(report):
    text = (report["out"] / "report.md").read_text()
    for heading in ("## Twin metrics", "## Baselines", "## Oracle", "## RTG sweep", "## Backtest",
                    "## Distilled rules"):
        assert heading in text, heading
    table = text.split("## Baselines")[1].split("## Oracle")[0]
    diffs = report["metrics"]["intervals"]["differences"]
    words = {"ahead": "twin ahead", "behind": "**twin behind**", "tie": "tie"}
    for key, name in (("majority", "majority class"), ("previous_action", "previous action"),
                      ("logistic_regression", "logistic regression"),
                      ("hist_gradient_boosting", "HistGradientBoosting")):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
        d = diffs[key]
        lo, hi = d["macro_f1"][1:]
        assert d["verdict"] == ("ahead" if lo > 0 else "behind" if hi < 0 else "tie")
        assert row.rstrip(" |").endswith(words[d["verdict"]]), row
        assert f"[{lo:+.3f}, {hi:+.3f}]" in row  # the paired interval is in the table
    assert "leaky reference" in text
    # the synthetic parquet has no raw price files: the backtest says so and fills nothing
    section = text.split("## Backtest")[1].split("## Distilled")[0]
    assert "Not available" in section and "--data_dir" in section
    assert not report["metrics"]["backtest"]["available"]
    assert "equity_curves.png" not in report["metrics"]["plots"]


def test_backtest_flags_are_checked(synthetic):
    root = synthetic["root"]
    for bad in ({"latency_s": -1.0}, {"fee_rate": -0.1}, {"inventory_cap": 0.0}, {"bootstrap": 0}):
        with pytest.raises(evaluate.EvaluationError, match="--latency_s"):
            evaluate.run(evaluate.EvalConfig(model=str(root / "model.pt"), **bad,
                                             processed=str(root / "processed.parquet")))


def test_cli_reports_a_missing_model_in_one_line(tmp_path, synthetic):
    proc = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), "--model", str(tmp_path / "nope.pt"),
         "--processed", str(synthetic["root"] / "processed.parquet"), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope.pt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_split_is_a_user_error(synthetic):
    root = synthetic["root"]
    with pytest.raises(evaluate.EvaluationError, match="--split"):
        evaluate.run(evaluate.EvalConfig(model=str(root / "model.pt"), split="holdout",
                                         processed=str(root / "processed.parquet")))


# ---------------------------------------------------------------- end to end on demo data
def demo_model(data_dir: Path, root: Path, epochs: int = 2) -> dict:
    """pipeline (window 16, so a 6-day demo has val/test windows) -> a tiny train_model run."""
    import pipeline
    import train_model

    processed = root / "data" / "processed.parquet"
    pipeline.run(pipeline.PipelineConfig(data_dir=str(data_dir), output=str(processed), window=16,
                                         stride=4, workers=1))
    train_model.run(train_model.TrainConfig(
        processed=str(processed), output_dir=str(root / "models"),
        epochs=epochs, batch_size=16, device="cpu", d_model=32, n_layers=2, n_heads=4))
    return {"processed": processed, "model": root / "models" / "best_model.pt"}


def test_end_to_end_on_demo_data(demo_tree, tmp_path):
    built = demo_model(demo_tree["data_dir"], tmp_path)
    out = tmp_path / "reports"
    h = evaluate.run(evaluate.EvalConfig(model=str(built["model"]), processed=str(built["processed"]),
                                         out=str(out), truth_dir=str(demo_tree["truth_dir"])))
    m = orjson.loads((out / "metrics.json").read_bytes())
    preds = pd.read_parquet(out / "predictions.parquet")
    df = pd.read_parquet(built["processed"])
    n_test = int((df["split"] == "test").sum())
    assert n_test > 0 and m["rows"] == len(preds) == n_test
    assert np.array(m["twin"]["confusion"]).sum() == n_test
    o = m["oracle"]
    assert o["available"] and o["coverage"] == 1.0 and o["n_matched"] == n_test
    assert o["expected_accuracy"] >= m["twin"]["accuracy"]
    assert 0.0 < o["expected_accuracy"] <= 1.0
    # the pipeline's discretised action mostly equals the demo trader's drawn action
    assert o["drawn_vs_discretised_agreement"] > 0.8
    assert h["oracle_macro_f1"] == o["argmax_macro_f1"] and h["report"] == str(out / "report.md")
    for name in m["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    b = m["backtest"]  # quotes from the pipeline's data_dir (pipeline_meta config)
    test = df[df["split"] == "test"]
    assert b["available"] and m["config"]["data_dir"] == str(demo_tree["data_dir"])
    assert b["trader_total_pnl_usdc"] == pytest.approx(test["pnl"].sum())
    assert b["trader"]["before_fees"]["total_usdc"] == pytest.approx(test["pnl"].sum())
    assert b["markets"] == test["slug"].nunique()
    assert b["replay"]["within_tolerance"] is True
    bot = b["bot"]
    assert bot["after_fees"]["total_usdc"] == pytest.approx(
        bot["before_fees"]["total_usdc"] - bot["fees_usdc"])
    assert bot["fills"] == 0 or bot["fees_usdc"] > 0
    r = b["rtg_table"]
    assert r["targets"] == m["rtg_sweep"]["targets"] and len(r["mean_per_market_usdc"]) == 11
    assert h["bot_pnl_after_fees"] == bot["after_fees"] and "equity_curves.png" in m["plots"]
    text = (out / "report.md").read_text()
    assert "### Bot P&L after fees by target RTG" in text and "Replay check" in text
    assert "the trader's fees are unknown" in text.lower() and r["verdict"] in text
    # issue 23: period, size, epochs, intervals, learning curve with every baseline, units
    per, tr = m["period"], m["training"]
    assert per["first_bar"] == str(test["bar_start"].min()) and per["markets"] == b["markets"]
    assert f"{m['rows']} bars in {per['markets']} 15-minute markets" in text
    assert tr["epochs_configured"] == 2 and tr["epochs_run"] == 2 and len(tr["history"]) == 2
    assert f"of {tr['epochs_run']} epochs run (2 planned" in text
    assert set(tr["val_baselines_macro_f1"]) == set(m["baselines"])
    assert "learning_curve.png" in m["plots"] and "## Learning curve (val split)" in text
    curve = text.split("## Learning curve")[1].split("##")[0]
    for name in ("majority class", "previous action", "logistic regression", "HistGradientBoosting"):
        assert name in curve
    ci = m["intervals"]["scores"]["twin"]["macro_f1"]
    assert ci[0] == pytest.approx(m["twin"]["macro_f1"]) and ci[1] <= ci[0] <= ci[2]
    assert ("Too small to trust" in text) == bool(m["too_small_to_trust"])
    assert m["too_small_to_trust"]  # a 6-day demo's test split is too small to rank models
    assert "[scaled]" not in text and "(nats per bar)" in text
    units = {*FEATURE_UNITS.values(), "USD of BTC", "Up-token price"}
    rules = m["distilled_rules"]["rules"]
    assert all(line.split("[")[1].rstrip("]") in units for line in rules.splitlines() if "<=" in line)
    assert "## Data size" in text


def test_a_corrupt_checkpoint_is_a_user_error(synthetic, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(evaluate.EvaluationError, match="bad.pt"):
        evaluate.run(evaluate.EvalConfig(model=str(bad), out=str(tmp_path),
                                         processed=str(synthetic["root"] / "processed.parquet")))
