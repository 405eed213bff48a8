"""The twin report: how well the Decision Transformer matches the trader on held-out time.

Promise: `python evaluate.py --model models/best_model.pt` scores the checkpoint on one split of
`data/processed_trader_data.parquet` (default test) and writes, each atomically, to `--out`:
`metrics.json`, `predictions.parquet` (address, bar_start, split, action, pred,
prob_STRONG_BUY .. prob_STRONG_SELL, rtg_input, rtg_pred, pred_<baseline> per baseline), `confusion_matrix.png`,
`rtg_sweep.png`, `learning_curve.png`, `equity_curves.png` (where quotes exist) and `report.md`:
the scored period, its size and the epochs trained; the twin's metrics and four baselines with
95 % intervals (and paired twin-minus-baseline intervals: ahead, behind or tie); the learning
curve against every baseline; a data-size check and a "too small to trust" banner; the oracle
ceiling where the demo truth exists; the RTG sweep with its effect size in words; a backtest at
Polymarket's quotes after taker fees (with the trader's replay and P&L per target RTG); and
distilled rules in the features' own units.

No-leakage rule (honest conditioning): at evaluation time the future is unknown, so the twin is
conditioned on a target that uses no future information: RTG_0 = the target (default: the train
split's mean per-window return sum = mean train `return` x window), decremented by the returns
observed before t (RTG_t = target - sum_{k<t} r_k), exactly as
`TraderInference.predict_with_target_rtg(states, target, actions, returns)`. Previous actions
are the trader's actual ones (the past is observable). Conditioning on the realised RTG uses the
future and is reported only as a labelled "leaky reference". Baselines, the distilled tree and
every statistic are fitted on the train split only.

Run alone: `python evaluate.py --model models/best_model.pt [--processed PATH] [--split test]
[--out reports] [--truth_dir data/demo_truth] [--target_rtg 0.01] [--device cpu]
[--data_dir DIR] [--latency_s 2] [--inventory_cap SHARES] [--fee_rate 0.25] [--fee_exponent 2]`.

Decisions where the issue is silent: --processed defaults to the parquet the checkpoint was
trained on (its train_config), and the parquet's state columns must be the model's; pipeline metadata (state columns, window, bar interval,
class sizes) is the checkpoint's `pipeline_meta` (what the model was trained with), falling back
to `pipeline_meta.json` next to the parquet. Windows tile the split (stride = window, as the
Dataset does for val/test), so every row is scored once; the distilled tree is fitted to the
twin's predictions on train rows scored the same way. The RTG sweep spans, by default, the
realised RTG_t of the train split (5th..95th percentile): returns are fractions of the train
peak exposure, so window sums reach hundreds of percent and a fixed +-5 % grid would probe only
a sliver of what the model saw (--sweep_min -0.05 --sweep_max 0.05 gives the seed's grid).
Probabilities are columns
`prob_<ACTION>`. The analyses live in `_evaluate_analysis.py`, the backtest (fee model, fills at
quotes, settlement, replay check) in `_evaluate_backtest.py`, the plots and markdown in
`_evaluate_report.py`.
Intervals: a percentile bootstrap over whole 15-minute markets (at 1-minute bars a market's 15
decisions move together), all models on the same resamples; the banner shows when the twin's
macro-F1 interval is wider than 0.10 (`_evaluate_analysis.WIDE_INTERVAL`) or a data-size check
fails. The learning curve reads `metrics.jsonl` beside the checkpoint (the whole run), else the
checkpoint's own history (to the saved epoch); baselines are fitted on train, scored on val.
The parquet has no quotes: the backtest reads the book top and the trader's fills (and roles)
from the raw price files (`--data_dir`, default pipeline_meta config.data_dir; without them the
section says why and nothing fills). Bot sizes: actions.class_sizes (train medians); default
--inventory_cap: the trader's largest Up-equivalent shares held in one market on train.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import _evaluate_analysis as ea
import _evaluate_backtest as eb
from _evaluate_inputs import (  # noqa: F401 (re-exported: evaluate.predict_split & co.)
    EvaluationError,
    _device,
    load_checkpoint,
    load_market_data,
    load_rows,
    load_truth,
    predict_split,
    resolve_meta,
    trained_on,
)
from _evaluate_report import atomic_write, write_plots, write_report
from action_discretization import ACTIONS, N_ACTIONS
from common import UserError, add_config_args
from sequence_preparation import SPLITS, data_size_warnings, honest_target, split_class_counts
from state_features import FEATURE_UNITS, raw_units

log = logging.getLogger("evaluate")


@dataclass(frozen=True)
class EvalConfig:
    model: str = "models/best_model.pt"
    """Checkpoint written by train_model.py (carries model_config and pipeline_meta)."""
    processed: str | None = None
    """Processed parquet (None = the one the checkpoint was trained on, from its train_config)."""
    split: str = "test"
    """Split to evaluate: train, val or test."""
    out: str = "reports"
    """Directory for metrics.json, predictions.parquet, the PNGs and report.md."""
    truth_dir: str = "data/demo_truth"
    """Demo truth ({address}.parquet); the oracle section is skipped where files are missing."""
    target_rtg: float | None = None
    """Target RTG (fraction of capital) at each window start; None = train mean per-window return sum."""
    sweep_min: float | None = None
    """Lowest target of the RTG sweep (fraction of capital); None = train RTG_t 5th percentile."""
    sweep_max: float | None = None
    """Highest target of the RTG sweep; None = the train RTG_t 95th percentile."""
    sweep_steps: int = 11
    """Number of targets in the sweep grid."""
    tree_depth: int = 4
    """Depth of the distilled decision tree (<= 4 keeps the rules readable)."""
    leaky_reference: bool = True
    """Also score the twin conditioned on the realised RTG (uses the future; labelled leaky)."""
    batch_size: int = 64
    """Windows per forward pass."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    seed: int = 0
    """Seed for torch, the scikit-learn baselines / tree and the bootstrap."""
    data_dir: str | None = None
    """Raw price files for the backtest's quotes and fills (None = pipeline_meta config.data_dir)."""
    latency_s: float = eb.LATENCY_S
    """Seconds from the bar's start (the bot's decision) to its order reaching the book."""
    inventory_cap: float | None = None
    """Largest |Up - Down| shares the bot holds per market (None = the trader's train-split max)."""
    fee_rate: float = eb.FEE_RATE
    """Taker fee rate: fee = shares x rate x (p (1 - p))^exponent (Polymarket, 15-min crypto, 2026-01)."""
    fee_exponent: float = eb.FEE_EXPONENT
    """Exponent of the taker fee formula."""
    bootstrap: int = 2000
    """Bootstrap resamples (of whole 15-minute markets) for every 95 % interval in the report."""


# ---------------------------------------------------------------- the stage
def raw_unit_map(meta: dict):
    """(to_raw(feature, value), units) that undo the state's standardisation with the fitted
    scales in `meta`; identity and "scaled" units when the meta has no scales."""
    scales = meta.get("scales")
    if not scales:
        return None, {c: "scaled" for c in meta["state_features"]}
    units = {c: FEATURE_UNITS.get(c, "") for c in meta["state_features"]}
    source = (meta.get("features") or {}).get("price_source")
    if "macd_hist" in units and source in ("underlying", "token"):  # the series MACD was taken on
        units["macd_hist"] = "USD of BTC" if source == "underlying" else "Up-token price"
    return (lambda name, v: float(raw_units(name, v, scales))), units


def training_summary(ckpt: dict, model_path: str | Path) -> dict:
    """Epochs and the per-epoch validation curve: metrics.jsonl beside the checkpoint (the whole
    run) when present, else the checkpoint's own history (up to the epoch it was saved at)."""
    tc = ckpt.get("train_config") or {}
    history = ckpt.get("history") or []
    log_file = Path(model_path).parent / "metrics.jsonl"
    if log_file.exists():
        import orjson

        try:
            history = [{"epoch": h["epoch"], "val_macro_f1": h["val"]["macro_f1"],
                        "val_majority_macro_f1": h["val"].get("baseline_macro_f1")}
                       for h in map(orjson.loads, filter(None, log_file.read_bytes().splitlines()))]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("%s is not train_model's log: using the checkpoint's history", log_file)
    return {"best_epoch": ckpt.get("epoch"), "epochs_configured": tc.get("epochs"),
            "epochs_run": max((h["epoch"] for h in history), default=ckpt.get("epoch")),
            "optimizer_steps": tc.get("total_steps"), "history": history}


def scored_period(rows: pd.DataFrame) -> dict:
    """First and last bar start, days covered, markets and addresses of the scored rows."""
    t = rows["bar_start"]
    return {"first_bar": str(t.min()), "last_bar": str(t.max()),
            "days": float((t.max() - t.min()) / pd.Timedelta("1D")) if len(t) else 0.0,
            "markets": int(t.dt.floor("15min").nunique()), "addresses": int(rows["address"].nunique())}


def run(cfg: EvalConfig) -> dict:
    """Evaluate the checkpoint on cfg.split and write the report; returns the headline numbers.

    Headline: {"report", "split", "rows", "target_rtg", "twin": {accuracy, macro_f1},
    "baselines": {name: macro_f1}, "beats": {name: bool}, "oracle_macro_f1",
    "twin_fraction_of_oracle"} (oracle entries None without truth)."""
    import torch

    if cfg.split not in SPLITS:
        raise EvaluationError(f"--split must be one of {SPLITS}, got {cfg.split!r}")
    if not 1 <= cfg.tree_depth <= 4 or cfg.sweep_steps < 2:
        raise EvaluationError("--tree_depth must be in 1..4 and --sweep_steps >= 2")
    if min(cfg.latency_s, cfg.fee_rate, cfg.fee_exponent) < 0 or cfg.bootstrap < 1 or (
            cfg.inventory_cap is not None and cfg.inventory_cap <= 0):
        raise EvaluationError("--latency_s, --fee_rate and --fee_exponent must be >= 0, "
                              "--inventory_cap > 0, --bootstrap >= 1")
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device)
    model, ckpt = load_checkpoint(cfg.model, device)
    processed = cfg.processed or trained_on(ckpt)
    meta = resolve_meta(ckpt, processed)
    cols, window = list(meta["state_features"]), int(meta["window"])
    df = load_rows(processed, meta)
    missing = [c for c in ["pnl", "net_shares"] if c not in df]
    if missing:
        raise EvaluationError(f"{processed} lacks columns {missing}: rerun `python pipeline.py --force`")
    if not (df["split"] == cfg.split).any():
        raise EvaluationError(f"{processed} has no {cfg.split} rows: nothing to evaluate")
    window = min(window, model.config.context)
    target = honest_target(df, window) if cfg.target_rtg is None else float(cfg.target_rtg)
    tr = predict_split(model, df, "train", window, cols, [target], device, cfg.batch_size)
    p05, p95 = np.quantile(tr["rtg_realised"], [0.05, 0.95]).tolist()
    lo = p05 if cfg.sweep_min is None else cfg.sweep_min
    hi = p95 if cfg.sweep_max is None else cfg.sweep_max
    grid = np.linspace(lo, hi, cfg.sweep_steps)
    conds = [target] + ([None] if cfg.leaky_reference else []) + grid.tolist()
    log.info("scoring split=%s target_rtg=%.5f (%d conditionings)", cfg.split, target, len(conds))
    ev = predict_split(model, df, cfg.split, window, cols, conds, device, cfg.batch_size)

    rows = df.iloc[ev["rows"]].reset_index(drop=True)
    y = rows["action"].to_numpy(dtype=np.int64)
    proba = ev["proba"][0]
    pred = proba.argmax(1)
    twin = ea.classification_metrics(y, pred, proba)
    twin["rtg_mae"] = float(np.abs(ev["rtg_pred"][0] - ev["rtg_next"]).mean())
    leaky = None
    if cfg.leaky_reference:
        leaky = ea.classification_metrics(y, ev["proba"][1].argmax(1), ev["proba"][1])
        leaky["rtg_mae"] = float(np.abs(ev["rtg_pred"][1] - ev["rtg_next"]).mean())
    train_rows = df[df["split"] == "train"]
    fitted_baselines = ea.fit_baseline_models(train_rows, cols, cfg.seed)  # once: test and val
    base = ea.score_baselines(fitted_baselines, rows, cols)
    baselines = {k: ea.classification_metrics(y, v["pred"], v["proba"]) for k, v in base.items()}
    truth = load_truth(cfg.truth_dir, rows["address"])
    oracle = ea.oracle_report(rows, pred, truth, str(meta.get("bar_interval", "15min")))
    sweep = ea.sweep_statistics(grid, ev["proba"][-len(grid):])
    sweep["train_rtg_p05"], sweep["train_rtg_p95"] = p05, p95
    data_dir = cfg.data_dir or (meta.get("config") or {}).get("data_dir")
    quotes, fills, why = load_market_data(data_dir, rows["address"].unique())
    cap = eb.default_cap(df) if cfg.inventory_cap is None else float(cfg.inventory_cap)
    bt, curve = eb.run_backtest(
        rows, pred, grid, ev["proba"][-len(grid):].argmax(-1),
        (meta.get("actions") or {}).get("class_sizes") or {}, quotes, fills,
        bar_ms=int(pd.Timedelta(str(meta.get("bar_interval", "15min"))).value // 1_000_000),
        latency_s=cfg.latency_s, cap=cap, rate=cfg.fee_rate, exponent=cfg.fee_exponent,
        n_boot=cfg.bootstrap, seed=cfg.seed, reason=why)
    X_tr = df.iloc[tr["rows"]][cols].to_numpy(dtype=np.float64)
    to_raw, units = raw_unit_map(meta)
    rules = ea.distill_rules(X_tr, tr["proba"][0].argmax(1), rows[cols].to_numpy(dtype=np.float64),
                             pred, y, cols, cfg.tree_depth, cfg.seed, to_raw, units)
    # the decision rule a user would tune: class offsets fitted on val, scored on this split
    val_rows = df[df["split"] == "val"]
    offsets, pred_off = np.zeros(N_ACTIONS), pred
    if len(val_rows) and cfg.split != "val":
        va = predict_split(model, df, "val", window, cols, [target], device, cfg.batch_size)
        offsets = ea.fit_class_offsets(va["proba"][0], df["action"].to_numpy()[va["rows"]])
        pred_off = (np.log(np.clip(proba, ea.PROBA_EPS, 1.0)) + offsets).argmax(1)
    twin_off = ea.classification_metrics(y, pred_off) | {"offsets": offsets.tolist()}
    # 95 % intervals over resampled test markets, every model on the same resamples (paired)
    blocks = rows["address"].astype(str) + "|" + rows["bar_start"].dt.floor("15min").astype(str)
    boot = ea.block_bootstrap(y, {"twin": pred, "twin_val_offsets": pred_off}
                              | {k: v["pred"] for k, v in base.items()},
                              blocks.to_numpy(), n_boot=cfg.bootstrap, seed=cfg.seed)
    val_base = ea.score_baselines(fitted_baselines, val_rows, cols) if len(val_rows) else {}
    yv = val_rows["action"].to_numpy(dtype=np.int64)
    training = {
        **training_summary(ckpt, cfg.model),
        "val_baselines_macro_f1": {k: ea.classification_metrics(yv, v["pred"])["macro_f1"]
                                   for k, v in val_base.items()},
    }
    size = data_size_warnings({s: split_class_counts(df, s) for s in SPLITS})
    trust = ea.trust_banner(boot, size)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    preds = rows[["address", "bar_start", "split", "action"]].copy()
    preds["pred"] = pred.astype(np.int8)
    for k, name in enumerate(ACTIONS):
        preds[f"prob_{name}"] = proba[:, k].astype(np.float32)
    preds["rtg_input"], preds["rtg_pred"] = ev["rtg_input"][0], ev["rtg_pred"][0]
    preds["pred_val_offsets"] = pred_off.astype(np.int8)
    for name, b in base.items():  # per-row baseline classes: paired comparisons downstream
        preds[f"pred_{name}"] = np.asarray(b["pred"]).astype(np.int8)
    atomic_write(out / "predictions.parquet", preds)
    metrics = {
        "config": asdict(cfg) | {"processed": str(processed), "data_dir": data_dir}, "split": cfg.split, "rows": int(len(rows)), "target_rtg": target,
        "conditioning": "honest: target - observed past returns; previous actions = the trader's",
        "twin": twin, "twin_val_offsets": twin_off, "leaky_reference_realised_rtg": leaky,
        "baselines": baselines,
        "twin_beats": {k: twin["macro_f1"] > v["macro_f1"] for k, v in baselines.items()},
        "oracle": oracle, "rtg_sweep": sweep, "backtest": bt,
        "distilled_rules": rules, "checkpoint": {"epoch": ckpt.get("epoch"),
                                                 "metrics": ckpt.get("metrics")},
        "intervals": boot, "training": training, "period": scored_period(rows),
        "data_size_warnings": size, "too_small_to_trust": trust,
        "class_names": list(ACTIONS), "n_actions": N_ACTIONS,
    }
    metrics["plots"] = write_plots(out, twin, sweep, curve, bt, cfg.split, training)
    atomic_write(out / "metrics.json", metrics)
    atomic_write(out / "report.md", write_report(metrics))
    headline = {
        "report": str(out / "report.md"), "split": cfg.split, "rows": int(len(rows)),
        "target_rtg": target, "twin": {"accuracy": twin["accuracy"], "macro_f1": twin["macro_f1"]},
        "baselines": {k: v["macro_f1"] for k, v in baselines.items()},
        "beats": metrics["twin_beats"],
        "oracle_macro_f1": oracle.get("argmax_macro_f1"),
        "twin_fraction_of_oracle": oracle.get("twin_fraction_macro_f1"),
        "bot_pnl_after_fees": (bt.get("bot") or {}).get("after_fees"),
        "intervals": boot, "too_small_to_trust": trust,
    }
    return headline


def main() -> None:
    """CLI: flags 1:1 with EvalConfig; prints where the report is and the headline numbers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(p, EvalConfig, " (default: %(default)s)", argparse.BooleanOptionalAction)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        h = run(EvalConfig(**vars(args)))
    except (UserError, FileNotFoundError) as e:  # EvaluationError and the stages' user errors
        print(f"evaluate: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    base = ", ".join(f"{k} {v:.3f}" for k, v in h["baselines"].items())
    oracle = "n/a" if h["oracle_macro_f1"] is None else f"{h['oracle_macro_f1']:.3f}"
    frac = "" if h["twin_fraction_of_oracle"] is None else f" ({h['twin_fraction_of_oracle']:.0%} of oracle)"
    print(f"report: {h['report']}")
    _, lo, hi = h["intervals"]["scores"]["twin"]["macro_f1"]
    print(f"{h['split']} macro-F1: twin {h['twin']['macro_f1']:.3f} [95 % {lo:.3f}, {hi:.3f}]{frac} "
          f"| oracle {oracle} | {base}")
    if h["too_small_to_trust"]:
        print("too small to trust: " + "; ".join(h["too_small_to_trust"]))
    if b := h["bot_pnl_after_fees"]:
        lo, hi = b["mean_ci95_usdc"]
        print(f"bot P&L after fees: {b['total_usdc']:+.2f} USDC over {b['markets']} markets "
              f"({b['mean_per_market_usdc']:+.3f} per market, 95 % {lo:+.3f} .. {hi:+.3f})")


if __name__ == "__main__":
    main()
