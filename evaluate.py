"""The twin report: how well the Decision Transformer matches the trader on held-out time.

Promise: `python evaluate.py --model models/best_model.pt` scores the checkpoint on one split of
`data/processed_trader_data.parquet` (default test) and writes, each atomically, to `--out`:
`metrics.json`, `predictions.parquet` (address, bar_start, split, action, pred,
prob_STRONG_BUY .. prob_STRONG_SELL, rtg_input, rtg_pred, pred_<baseline> per baseline), `confusion_matrix.png`,
`rtg_sweep.png`, `equity_curves.png` (where quotes exist) and `report.md`: the twin's metrics,
four baselines, the oracle ceiling where the demo truth exists, the RTG sweep, a backtest at
Polymarket's quotes after taker fees (with the trader's replay and P&L per target RTG) and
distilled rules.

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
from _evaluate_report import atomic_write, write_plots, write_report
from action_discretization import ACTIONS, N_ACTIONS
from data_ingestion import add_config_args
from sequence_preparation import (
    PROCESSED_PATH,
    RTG_SCALE,
    SPLITS,
    ProcessedDataError,
    honest_rtg,
    honest_target,
    read_meta,
    read_processed,
)

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
    """Bootstrap resamples (of markets) for the backtest's 95 % intervals."""


class EvaluationError(ValueError):
    """A user-fixable problem (missing file, bad flag, empty split); main() prints it as one line."""


# ---------------------------------------------------------------- loading
def load_checkpoint(path: str | Path, device: str):
    """(model in eval mode on `device`, checkpoint dict) from a train_model.py checkpoint."""
    import torch

    from model_architecture import TraderDecisionTransformer

    if not Path(path).exists():
        raise EvaluationError(f"model file {path} not found: run `python train_model.py` first")
    try:
        ckpt = torch.load(path, map_location="cpu")  # weights_only default: plain types only
    except Exception as e:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise EvaluationError(f"{path} cannot be read as a checkpoint ({type(e).__name__}): "
                              "pass the best_model.pt train_model.py wrote") from None
    if not isinstance(ckpt, dict):
        raise EvaluationError(f"{path} is not a train_model.py checkpoint (not a dict)")
    for key in ("model_state_dict", "model_config"):
        if key not in ckpt:
            raise EvaluationError(f"{path} has no '{key}': not a train_model.py checkpoint")
    try:
        model = TraderDecisionTransformer.from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model_state_dict"])
    except (RuntimeError, ValueError, TypeError) as e:  # weights from another model version
        first = str(e).strip().splitlines()[-1].strip()
        raise EvaluationError(f"{path} does not match the current model ({first}): retrain with "
                              "`python train_model.py`") from None
    return model.to(device).eval(), ckpt


def trained_on(ckpt: dict) -> str:
    """The processed parquet a checkpoint was trained on (its train_config; else the default)."""
    return str((ckpt.get("train_config") or {}).get("processed") or PROCESSED_PATH)


def resolve_meta(ckpt: dict, processed: str | Path) -> dict:
    """The pipeline metadata the model was trained with (checkpoint first, then the parquet's
    own meta file)."""
    meta = ckpt.get("pipeline_meta") or {}
    if not meta.get("state_features"):
        try:
            meta = read_meta(processed)
        except ProcessedDataError as e:
            raise EvaluationError(f"no pipeline_meta in the checkpoint, and {e}") from None
    return meta


def load_rows(processed: str | Path, meta: dict) -> pd.DataFrame:
    """The processed frame, checked against its own meta and the checkpoint's: the state
    columns must be the model's (else one-line EvaluationError); another config hash with the
    same columns is logged (the model is scored on data built differently from its training)."""
    try:
        df, own = read_processed(processed)
    except ProcessedDataError as e:
        raise EvaluationError(str(e)) from None
    if list(own["state_features"]) != list(meta["state_features"]):
        raise EvaluationError(f"{processed} has state columns {own['state_features']} but the model was "
                              f"trained on {meta['state_features']}: pass --processed with the "
                              "parquet it was trained on")
    if meta.get("config_hash") and own.get("config_hash") != meta.get("config_hash"):
        log.warning("%s was built with config %s, the model's training data with %s", processed,
                    own.get("config_hash"), meta.get("config_hash"))
    return df


# ---------------------------------------------------------------- twin predictions
def predict_split(model, df: pd.DataFrame, split: str, window: int, state_columns: list[str],
                  targets: list[float | None], device: str, batch_size: int) -> dict:
    """Score every row of `split` once for each conditioning in `targets`.

    A float target means honest conditioning (`honest_rtg`); None means the realised RTG (the
    leaky reference). Returns {"rows": (N,) parquet row indices, "proba": (C, N, 5),
    "rtg_pred": (C, N) in fraction units, "rtg_input": (C, N), "rtg_next": (N,) the realised
    RTG_{t+1} inside the window (0 at its last bar), "rtg_realised": (N,) RTG_t} with C = len(targets)."""
    import torch
    from torch.utils.data import DataLoader

    from sequence_preparation import TraderSequenceDataset

    ds = TraderSequenceDataset(df, split, window, window, state_columns)
    if len(ds) == 0:
        raise EvaluationError(f"split '{split}' has no rows in the processed parquet")
    rows, rtg_next, rtg_real = [], [], []
    proba = [[] for _ in targets]
    rtg_pred = [[] for _ in targets]
    rtg_in = [[] for _ in targets]
    with torch.inference_mode():
        for b in DataLoader(ds, batch_size=batch_size, shuffle=False):
            mask = b["mask"].numpy()  # (B, T)
            rets = b["returns"].numpy().astype(np.float64)
            realised = b["rtg"].numpy().astype(np.float64) / RTG_SCALE
            rows.append(b["row_index"].numpy()[mask])
            rtg_next.append((realised - rets)[mask])
            rtg_real.append(realised[mask])
            states, prev = b["states"].to(device), b["prev_actions"].to(device)
            for c, target in enumerate(targets):
                rtg = realised if target is None else honest_rtg(rets, target)
                logits, pred = model(torch.as_tensor(rtg * RTG_SCALE, dtype=torch.float32,
                                                     device=device), states, prev)
                proba[c].append(torch.softmax(logits.float(), -1).cpu().numpy()[mask])
                rtg_pred[c].append(pred.float().cpu().numpy()[mask] / RTG_SCALE)
                rtg_in[c].append(rtg[mask])
    return {
        "rows": np.concatenate(rows), "rtg_next": np.concatenate(rtg_next),
        "rtg_realised": np.concatenate(rtg_real),
        "proba": np.stack([np.concatenate(p) for p in proba]),
        "rtg_pred": np.stack([np.concatenate(p) for p in rtg_pred]),
        "rtg_input": np.stack([np.concatenate(p) for p in rtg_in]),
    }


def load_truth(truth_dir: str | Path, addresses) -> pd.DataFrame | None:
    """Concatenated demo truth for the addresses that have `{truth_dir}/{address}.parquet`."""
    import pyarrow.parquet as pq

    files = [Path(truth_dir) / f"{a}.parquet" for a in sorted(set(addresses))]
    frames = [pq.read_table(f).to_pandas() for f in files if f.exists()]
    return pd.concat(frames, ignore_index=True) if frames else None


def load_market_data(data_dir: str | None, addresses) -> tuple[pd.DataFrame | None,
                                                              pd.DataFrame | None, str | None]:
    """(quotes, fills, None) of `addresses` from the raw price files under data_dir
    (data_ingestion.load_events + quotes_and_fills), or (None, fills or None, why not)."""
    import data_ingestion

    if not data_dir or not Path(data_dir).is_dir():
        why = f"data_dir {data_dir} not found" if data_dir else "no data_dir in pipeline_meta"
        return None, None, f"{why}: pass --data_dir with the raw price files"
    try:
        events = data_ingestion.load_events(data_ingestion.IngestionConfig(data_dir=data_dir))[0]
    except data_ingestion.IngestionError as e:
        return None, None, f"{data_dir}: {e}"
    mine = events["address"].astype(str).isin(set(map(str, addresses))).to_numpy()
    quotes, fills = data_ingestion.quotes_and_fills(events[mine])
    if quotes.empty:
        return None, fills, f"the price files under {data_dir} carry no price_change quotes"
    return quotes, fills, None


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise EvaluationError("--device cuda requested but no CUDA device is available: use --device cpu")
    if name not in ("cpu", "cuda"):
        raise EvaluationError(f"--device must be cpu, cuda or auto, got {name!r}")
    return name


# ---------------------------------------------------------------- the stage
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
    base = ea.fit_baselines(train_rows, rows, cols, cfg.seed)
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
    rules = ea.distill_rules(X_tr, tr["proba"][0].argmax(1), rows[cols].to_numpy(dtype=np.float64),
                             pred, y, cols, cfg.tree_depth, cfg.seed)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    preds = rows[["address", "bar_start", "split", "action"]].copy()
    preds["pred"] = pred.astype(np.int8)
    for k, name in enumerate(ACTIONS):
        preds[f"prob_{name}"] = proba[:, k].astype(np.float32)
    preds["rtg_input"], preds["rtg_pred"] = ev["rtg_input"][0], ev["rtg_pred"][0]
    for name, b in base.items():  # per-row baseline classes: paired comparisons downstream
        preds[f"pred_{name}"] = np.asarray(b["pred"]).astype(np.int8)
    atomic_write(out / "predictions.parquet", preds)
    metrics = {
        "config": asdict(cfg) | {"processed": str(processed), "data_dir": data_dir}, "split": cfg.split, "rows": int(len(rows)), "target_rtg": target,
        "conditioning": "honest: target - observed past returns; previous actions = the trader's",
        "twin": twin, "leaky_reference_realised_rtg": leaky, "baselines": baselines,
        "twin_beats": {k: twin["macro_f1"] > v["macro_f1"] for k, v in baselines.items()},
        "oracle": oracle, "rtg_sweep": sweep, "backtest": bt,
        "distilled_rules": rules, "checkpoint": {"epoch": ckpt.get("epoch"),
                                                 "metrics": ckpt.get("metrics")},
        "class_names": list(ACTIONS), "n_actions": N_ACTIONS,
    }
    metrics["plots"] = write_plots(out, twin, sweep, curve, bt, cfg.split)
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
    except (EvaluationError, FileNotFoundError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    base = ", ".join(f"{k} {v:.3f}" for k, v in h["baselines"].items())
    oracle = "n/a" if h["oracle_macro_f1"] is None else f"{h['oracle_macro_f1']:.3f}"
    frac = "" if h["twin_fraction_of_oracle"] is None else f" ({h['twin_fraction_of_oracle']:.0%} of oracle)"
    print(f"report: {h['report']}")
    print(f"{h['split']} macro-F1: twin {h['twin']['macro_f1']:.3f}{frac} | oracle {oracle} | {base}")
    if b := h["bot_pnl_after_fees"]:
        lo, hi = b["mean_ci95_usdc"]
        print(f"bot P&L after fees: {b['total_usdc']:+.2f} USDC over {b['markets']} markets "
              f"({b['mean_per_market_usdc']:+.3f} per market, 95 % {lo:+.3f} .. {hi:+.3f})")


if __name__ == "__main__":
    main()
