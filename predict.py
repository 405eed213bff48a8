"""Live: what would this trader do in the next bar, aiming at a target return?

Promise: `python predict.py --model models/best_model.pt --trader downloads/merged_trades/ADDRESS
--target_rtg 0.02` ingests that one trader's folder, builds the states of its last K bars (K =
the model's window) plus the next bar's, and prints the twin's action for the next bar (the bar
after the last observed one) with the five probabilities, and the Polymarket taker fee the
suggested trade would pay at the current quote (the latest price_change in the trader's files).
`run(cfg) -> dict` returns the same.

No-leakage rule (and no refit): every statistic comes from the checkpoint's `pipeline_meta`,
fitted on the training data's train split: the FFD order d and price source, the state scales
and capital, the action thresholds. Nothing is fitted on the new data. The next bar's state uses
only events before its start (the one-bar shift of state_features), so it is known now.

Run alone: the command above (`--device cpu|cuda|auto`, `--json` for machine-readable output).

Decisions where the issue is silent:
- States: feature_engineering.transform (the stored price source, d and indicator periods),
  state_features.raw_state + transform (the stored scales, clip and state set) and
  action_discretization.discretize (the stored thresholds), the same transforms pipeline.py
  applies after fitting; tests/test_predict.py checks these states equal the pipeline's parquet.
- RTG convention: the target is the return-to-go from the next bar on, so earlier positions get
  target + the returns observed from them up to now (RTG_k = target + sum_{k<=j<next} r_j): the
  same "target minus observed returns" conditioning as evaluate.py, anchored at the next bar.
- Previous actions are the trader's observed ones; the first bar of the history sees START.
- The suggested trade is the action class's train-split median size (pipeline_meta
  actions.class_sizes), taken from flat as the backtest's bot does: a BUY-side class buys Up at
  the ask, a SELL-side class buys Down at 1 - the Up bid. Its fee is _evaluate_backtest's
  taker_fee (--fee_rate, --fee_exponent; Polymarket's 15-minute crypto schedule by default),
  taken in tokens and shown also in USDC at that price. No quote in the files: no fee shown.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

import feature_engineering as fe
import state_features as sf
from _evaluate_backtest import FEE_EXPONENT, FEE_RATE, fee_usdc_at_fill, taker_fee
from action_discretization import ACTIONS, START_ACTION, discretize
from common import UserError, add_config_args
from data_ingestion import IngestionConfig
from evaluate import _device
from sequence_preparation import RTG_SCALE, honest_rtg, returns

log = logging.getLogger("predict")


@dataclass(frozen=True)
class PredictConfig:
    model: str = "models/best_model.pt"
    """Checkpoint written by train_model.py (its pipeline_meta carries the fitted statistics)."""
    trader: str = ""
    """One trader's folder of price files, e.g. downloads/merged_trades/0xabc..."""
    target_rtg: float = 0.02
    """Target return-to-go from the next bar on, as a fraction of capital (0.02 = +2 %)."""
    device: str = "cpu"
    """cpu, cuda or auto."""
    workers: int = 1
    """Ingestion worker processes (0 = all cores)."""
    json: bool = False
    """Print one JSON object instead of the table."""
    fee_rate: float = FEE_RATE
    """Taker fee rate: fee = shares x rate x (p (1 - p))^exponent (Polymarket, 15-min crypto, 2026-01)."""
    fee_exponent: float = FEE_EXPONENT
    """Exponent of the taker fee formula."""


class PredictError(UserError):
    """A user-fixable problem; main() prints it as one line and exits 2."""


def add_next_bar(bars: pd.DataFrame, bar_interval: str) -> pd.DataFrame:
    """The bar table plus one row for the bar after the last one (its own data unknown: NaN).

    Only its bar_start and address matter: its state comes from the last real bar (the shift)."""
    last = bars.iloc[[-1]].copy()
    for c in last.columns:
        if c not in ("address", "bar_start"):
            last[c] = np.nan if pd.api.types.is_float_dtype(last[c]) else last[c]
    last["bar_start"] = last["bar_start"] + pd.Timedelta(bar_interval)
    for c in ("n_trades", "net_shares", "pnl"):
        if c in last:
            last[c] = 0
    return pd.concat([bars, last], ignore_index=True)


def build_states(bars: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Standardised states (columns meta["state_features"]) of the bar table: the stages'
    transforms with the checkpoint's fitted parameters (feature_engineering.transform,
    state_features.raw_state + transform); nothing is fitted here."""
    cols = list(meta["state_features"])
    missing = [c for c in cols if c not in meta["scales"]]
    if missing:
        raise PredictError(f"the checkpoint's pipeline_meta has no scales for {missing[:3]} (built by "
                           "an older pipeline): rerun `python pipeline.py --force` and train_model.py")
    raw = sf.raw_state(bars, fe.transform(bars, meta["features"]), meta.get("feature_set", "seed"),
                       meta["bar_interval"], "market_clock_sin" in cols)
    return sf.transform(raw, {"state_features": cols, "scales": meta["scales"],
                              "clip": float(meta.get("clip", sf.StateConfig.clip))})


def found_traders(trader: str, limit: int = 8) -> str:
    """'trader folders under D: a, b, ... (N)' for the folder --trader sits in (its parent; the
    default data_dir when that does not exist): sub-folders holding *_prices.json files."""
    parent = Path(trader).parent if trader else Path(".")
    if parent == Path(".") or not parent.is_dir():  # a bare name or a typo in the folder above
        parent = Path(IngestionConfig.data_dir)
    try:
        names = sorted(d.name for d in parent.iterdir()
                       if d.is_dir() and next(d.glob("*_prices.json"), None) is not None)
    except OSError:
        names = []
    if not names:
        return f"no trader folders (with *_prices.json) under {parent}: run download_bucket.py"
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return f"trader folders under {parent}: " + ", ".join(names[:limit]) + more


def _one_address(trader: str, bars: pd.DataFrame) -> pd.DataFrame:
    """bars sorted by bar_start; PredictError unless they hold exactly one address."""
    if bars.empty:
        raise PredictError(f"{trader}: no usable bars; {found_traders(trader)}")
    if bars["address"].nunique() != 1:
        raise PredictError(f"{trader} holds {bars['address'].nunique()} addresses: point --trader at "
                           f"one; {found_traders(str(Path(trader) / 'x'))}")
    return bars.sort_values("bar_start", kind="stable").reset_index(drop=True)


def load_trader(trader: str, bar_interval: str, workers: int) -> tuple[pd.DataFrame, dict | None]:
    """(the trader's bar table, its latest quote {slug, t, best_bid, best_ask} or None), from one
    pass of data_ingestion.load_events over the folder (no report is written)."""
    import data_ingestion

    if not trader or not Path(trader).is_dir():
        raise PredictError(f"--trader {trader!r} is not a folder; {found_traders(trader)}")
    try:
        events, markets, _ = data_ingestion.load_events(data_ingestion.IngestionConfig(
            data_dir=trader, bar_interval=bar_interval, workers=workers))
        bars = data_ingestion.build_bars(events, markets, bar_interval)
    except data_ingestion.IngestionError as e:
        raise PredictError(f"{trader}: {e}") from None
    quotes = data_ingestion.quotes_and_fills(events)[0]
    quote = None
    if len(quotes):
        last = quotes.iloc[int(np.argmax(quotes["t"].to_numpy()))]
        quote = {"slug": str(last["slug"]), "t": str(pd.Timestamp(int(last["t"]), unit="ms", tz="UTC")),
                 "best_bid": float(last["best_bid"]), "best_ask": float(last["best_ask"])}
    return _one_address(trader, bars), quote


def load_bars(trader: str, bar_interval: str, workers: int) -> pd.DataFrame:
    """The trader's bar table (load_trader without the quote)."""
    return load_trader(trader, bar_interval, workers)[0]


def suggested_fee(action: str, class_sizes: dict, quote: dict | None, rate: float = FEE_RATE,
                  exponent: float = FEE_EXPONENT) -> dict | None:
    """The taker fee of the class's median size bought from flat at `quote`: BUY-side classes buy
    Up at the ask, SELL-side ones Down at 1 - bid; None without a quote. Fee in tokens (bought)
    and its USDC value at the fill price."""
    if quote is None:
        return None
    size = float(class_sizes.get(action) or 0.0)
    token, px = ("Up", quote["best_ask"]) if size >= 0 else ("Down", 1.0 - quote["best_bid"])
    shares = abs(size)
    return {"shares": shares, "token": token, "price": px, "quote": quote,
            "fee_tokens": float(taker_fee(shares, px, rate, exponent)),
            "fee_usdc": float(fee_usdc_at_fill(shares, px, True, rate, exponent)),
            "rate": rate, "exponent": exponent}


def run(cfg: PredictConfig) -> dict:
    """The twin's next-bar action: {"address", "last_bar", "next_bar", "target_rtg", "action",
    "probabilities": {name: p}, "history_bars", "fee": suggested_fee(...) or None}."""

    if not cfg.trader or not Path(cfg.trader).is_dir():  # user errors first, before torch loads
        raise PredictError(f"--trader {cfg.trader!r} is not a folder; {found_traders(cfg.trader)}")
    if not Path(cfg.model).exists():
        raise PredictError(f"model file {cfg.model} not found: run `python train_model.py` first")
    device = _device(cfg.device)
    import torch

    from training import TraderInference

    inf = TraderInference.from_checkpoint(cfg.model, device)
    meta = inf.pipeline_meta or {}
    need = ["state_features", "bar_interval", "window", "capital", "scales", "features", "actions"]
    missing = [k for k in need if k not in meta]
    if missing:
        raise PredictError(f"{cfg.model}: pipeline_meta lacks {missing}; retrain with train_model.py")
    history, quote = load_trader(cfg.trader, meta["bar_interval"], cfg.workers)
    bars = add_next_bar(history, meta["bar_interval"])
    states = build_states(bars, meta)
    acts = discretize(bars["net_shares"].to_numpy(float), meta["actions"]["thresholds"])
    prev = np.r_[START_ACTION, acts[:-1]].astype(np.int64)  # a_{t-1}; the next bar's = last action
    r = returns(bars["pnl"].to_numpy(float), float(meta["capital"]))
    r[-1] = 0.0  # the next bar's return is unknown (and never used: RTG_t sees r_k, k < t only)
    K = min(int(meta["window"]), inf.model.config.context, len(bars))
    rk = r[-K:]
    rtg = honest_rtg(rk[None], cfg.target_rtg + float(rk[:-1].sum()))  # RTG at the next bar = target
    with torch.inference_mode():
        logits, _ = inf.model(
            torch.tensor(rtg * RTG_SCALE, dtype=torch.float32, device=device),
            torch.tensor(states.to_numpy()[-K:][None], device=device),
            torch.tensor(prev[-K:][None], device=device))
    p = torch.softmax(logits[0, -1].float(), -1).cpu().numpy()
    action = ACTIONS[int(p.argmax())]
    return {
        "address": str(bars["address"].iloc[-1]), "last_bar": str(bars["bar_start"].iloc[-2]),
        "next_bar": str(bars["bar_start"].iloc[-1]), "target_rtg": cfg.target_rtg,
        "action": action, "history_bars": int(K - 1),
        "probabilities": {a: float(v) for a, v in zip(ACTIONS, p, strict=True)},
        "fee": suggested_fee(action, meta["actions"].get("class_sizes") or {}, quote,
                             cfg.fee_rate, cfg.fee_exponent),
    }


def main() -> None:
    """CLI: flags 1:1 with PredictConfig; prints the next bar's action and probabilities."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(p, PredictConfig, " (default: %(default)s)", trader={"required": True})
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    try:
        out = run(PredictConfig(**vars(args)))
    except (UserError, FileNotFoundError) as e:  # PredictError, EvaluationError (bad --device), ...
        print(f"predict: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(orjson.dumps(out).decode())
        return
    print(f"trader {out['address']}, last bar {out['last_bar']}, target RTG {out['target_rtg']:+.2%}")
    print(f"next bar {out['next_bar']}: {out['action']}")
    for name, v in out["probabilities"].items():
        print(f"  {name:<12} {v:.3f}")
    f = out["fee"]
    if f is None:
        print("taker fee: no quote (price_change) in the trader's files")
    elif f["shares"] == 0:
        print("taker fee: 0 (HOLD trades nothing)")
    else:
        q = f["quote"]
        print(f"taker fee at the current quote: {f['fee_usdc']:.4f} USDC ({f['fee_tokens']:.4f} "
              f"tokens) to buy {f['shares']:g} {f['token']} shares at {f['price']:.3f} (quote of "
              f"{q['slug']} at {q['t']}; fee = shares x {f['rate']:g} x (p (1 - p))^{f['exponent']:g})")


if __name__ == "__main__":
    main()
