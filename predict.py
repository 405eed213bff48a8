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

Run alone: the command above (`--device cpu|cuda|auto`, `--json` for machine-readable output);
`--follow [--poll_s 5] [--max_decisions N]` keeps deciding as new price files arrive.

Decisions where the issue is silent:
- States: feature_engineering.transform (the stored price source, d and indicator periods),
  state_features.raw_state + transform (the stored scales, clip and state set) and
  action_discretization.discretize (the stored thresholds), the same transforms pipeline.py
  applies after fitting; tests/test_predict.py checks these states equal the pipeline's parquet.
- RTG convention: the target is the return-to-go from the next bar on, so earlier positions get
  target + the returns observed from them up to now (RTG_k = target + sum_{k<=j<next} r_j): the
  same "target minus observed returns" conditioning as evaluate.py, anchored at the next bar.
- Previous actions are the trader's observed ones; the first bar of the history sees START.
- `--follow` (a live bot): the folder is polled every --poll_s seconds; when its price files
  change it is ingested again (whole, with the stored transforms: simple, and seconds per
  look), and the model takes one KV-cached `model.step` per bar it has not seen (then one for
  the next bar, whose token is dropped until that bar is observed). Bars whose inputs changed
  (late fills) are re-stepped from the first change (cache.truncate). The target is what is
  left to make since following began: target_rtg minus the returns of the bars observed since
  (the Decision Transformer's rollout rule), so the cached RTG inputs stay valid. One decision
  per change (JSON lines with --json); Ctrl-C or --max_decisions ends it.
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
import time
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
    follow: bool = False
    """Keep running: decide again whenever the trader's folder changes (new or grown price files)."""
    poll_s: float = 5.0
    """--follow: seconds between looks at the folder."""
    max_decisions: int | None = None
    """--follow: stop after this many decisions (None = until Ctrl-C)."""


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


def load_model(cfg: PredictConfig):
    """(TraderInference on cfg.device, its pipeline_meta, the torch device); PredictError (one
    line) when the folder, the file or a fitted statistic is missing."""
    if not cfg.trader or not Path(cfg.trader).is_dir():  # user errors first, before torch loads
        raise PredictError(f"--trader {cfg.trader!r} is not a folder; {found_traders(cfg.trader)}")
    if not Path(cfg.model).exists():
        raise PredictError(f"model file {cfg.model} not found: run `python train_model.py` first")
    device = _device(cfg.device)
    from training import TraderInference

    inf = TraderInference.from_checkpoint(cfg.model, device)
    meta = inf.pipeline_meta or {}
    need = ["state_features", "bar_interval", "window", "capital", "scales", "features", "actions"]
    missing = [k for k in need if k not in meta]
    if missing:
        raise PredictError(f"{cfg.model}: pipeline_meta lacks {missing}; retrain with train_model.py")
    return inf, meta, device


def model_inputs(history: pd.DataFrame, meta: dict) -> dict:
    """The model's per-bar inputs for the history plus the next bar (N + 1 rows): bar_start,
    states (N+1, S) float32, prev (a_{t-1}, int64), r (returns; the next bar's is 0: unknown)."""
    bars = add_next_bar(history, meta["bar_interval"])
    acts = discretize(bars["net_shares"].to_numpy(float), meta["actions"]["thresholds"])
    r = returns(bars["pnl"].to_numpy(float), float(meta["capital"]))
    r[-1] = 0.0  # never used: RTG_t sees r_k, k < t only
    return {"bars": bars, "bar_start": bars["bar_start"].to_numpy(),
            "states": build_states(bars, meta).to_numpy(np.float32),
            "prev": np.r_[START_ACTION, acts[:-1]].astype(np.int64), "r": r}


def decision(bars: pd.DataFrame, p: np.ndarray, cfg: PredictConfig, meta: dict, quote, history_bars: int) -> dict:
    """run()'s answer for next-bar probabilities p (A,)."""
    action = ACTIONS[int(p.argmax())]
    return {
        "address": str(bars["address"].iloc[-1]), "last_bar": str(bars["bar_start"].iloc[-2]),
        "next_bar": str(bars["bar_start"].iloc[-1]), "target_rtg": cfg.target_rtg,
        "action": action, "history_bars": int(history_bars),
        "probabilities": {a: float(v) for a, v in zip(ACTIONS, p, strict=True)},
        "fee": suggested_fee(action, meta["actions"].get("class_sizes") or {}, quote,
                             cfg.fee_rate, cfg.fee_exponent),
    }


def run(cfg: PredictConfig) -> dict:
    """The twin's next-bar action: {"address", "last_bar", "next_bar", "target_rtg", "action",
    "probabilities": {name: p}, "history_bars", "fee": suggested_fee(...) or None}."""
    import torch

    inf, meta, device = load_model(cfg)
    history, quote = load_trader(cfg.trader, meta["bar_interval"], cfg.workers)
    x = model_inputs(history, meta)
    K = min(int(meta["window"]), inf.model.config.context, len(x["r"]))
    rk = x["r"][-K:]
    rtg = honest_rtg(rk[None], cfg.target_rtg + float(rk[:-1].sum()))  # RTG at the next bar = target
    with torch.inference_mode():
        logits, _ = inf.model(
            torch.tensor(rtg * RTG_SCALE, dtype=torch.float32, device=device),
            torch.tensor(x["states"][-K:][None], device=device),
            torch.tensor(x["prev"][-K:][None], device=device))
    p = torch.softmax(logits[0, -1].float(), -1).cpu().numpy()
    return decision(x["bars"], p, cfg, meta, quote, K - 1)


def folder_signature(trader: str) -> tuple:
    """(name, size, mtime_ns) of every *_prices.json under the folder: changes when a price file
    arrives, grows or is rewritten."""
    out = []
    for f in sorted(Path(trader).rglob("*_prices.json")):
        try:
            st = f.stat()
        except OSError:  # vanished between the listing and the stat (a sync in progress)
            continue
        out.append((str(f.relative_to(trader)), st.st_size, st.st_mtime_ns))
    return tuple(out)


class Follower:
    """Decisions bar after bar with one KV-cached model step per new bar (module doc, --follow).

    The cache holds the observed bars from `start` (a bar_start) on: at first the last K - 1
    (K = the model's window, so the first decision is run()'s), after a full cache the last
    K/2 - 1, so a decision sees K/2 - 1 .. K - 1 bars of history. Each update steps the bars
    it has not seen (or that changed), then the next bar, whose token it drops again
    (cache.truncate) so that the bar is stepped with its real data once it is observed. The
    remaining target at the next bar is target_rtg minus the returns of the bars observed since
    following began (the Decision Transformer's rollout rule), so cached RTG inputs never move.
    """

    def __init__(self, inf, meta: dict, cfg: PredictConfig, device):
        self.inf, self.meta, self.cfg, self.device = inf, meta, cfg, device
        self.K = min(int(meta["window"]), inf.model.config.context)
        self.begin = None  # bar_start of the first next bar: returns from it on count against the target
        self.start = None  # bar_start of the cache's first bar
        self.cache, self.seen = None, None  # KVCache; inputs of its tokens (rtg, states, prev)
        self.last_next = None  # bar_start of the last decision's next bar

    def update(self, history: pd.DataFrame, quote) -> dict | None:
        """The decision for the next bar after `history`, or None when no input changed."""
        import torch

        from model_architecture import KVCache

        x = model_inputs(history, self.meta)
        t, r, n_obs = x["bar_start"], x["r"], len(x["r"]) - 1
        self.begin = t[-1] if self.begin is None else self.begin
        ib = int(np.searchsorted(t, self.begin))  # the first bar followed
        remaining = self.cfg.target_rtg - float(r[ib:n_obs].sum())
        w = -1 if self.start is None else int(np.searchsorted(t, self.start))
        if w < 0 or w >= len(t) or t[w] != self.start or n_obs + 1 - w > self.K:
            # start: the last K - 1 observed bars + the next (run()'s window); a full cache
            # restarts with the last K/2 tokens, so the next K/2 bars are one step each
            keep = self.K if self.start is None else max(1, self.K // 2)
            w = max(0, n_obs + 1 - keep)
            self.start, self.cache, self.seen = t[w], KVCache(), None
        # RTG at the cache's first bar: the target plus (minus) the returns between it and the
        # first followed bar. Summed over those bars only, so it is bit-identical from look to
        # look (remaining + the window's returns would round differently as bars arrive)
        anchor = (self.cfg.target_rtg + float(r[w:ib].sum()) if w <= ib
                  else self.cfg.target_rtg - float(r[ib:w].sum()))
        rtg = honest_rtg(r[w:], anchor) * RTG_SCALE  # (n_obs + 1 - w,); RTG at the next bar = remaining
        new = (rtg.astype(np.float32), x["states"][w:], x["prev"][w:])
        n = n_obs - w  # observed tokens wanted in the cache
        d = 0 if self.seen is None else min(len(self.seen[0]), n)
        if self.seen is not None:  # first token whose inputs changed (late fills, revised bars)
            same = np.ones(d, bool)
            for old, cur in zip(self.seen, new, strict=True):
                same &= (old[:d] == cur[:d]).reshape(d, -1).all(axis=1)
            d = int(np.argmin(same)) if not same.all() else d
            if d == n == len(self.seen[0]) and t[-1] == self.last_next:
                return None  # nothing new: the same decision as before
        self.cache.truncate(min(d, self.cache.length))
        dev, model = self.device, self.inf.model
        for i in range(d, n + 1):  # one cached step per bar not yet seen, then the next bar
            logits, _, self.cache = model.step(
                torch.tensor(new[0][i:i + 1], device=dev), torch.tensor(new[1][i:i + 1], device=dev),
                torch.tensor(new[2][i:i + 1], device=dev), self.cache)
        self.cache.truncate(n)  # the next bar's token goes: it is stepped again once observed
        self.seen, self.last_next = tuple(a[:n] for a in new), t[-1]
        p = torch.softmax(logits[0].float(), -1).cpu().numpy()
        out = decision(x["bars"], p, self.cfg, self.meta, quote, n)
        return {**out, "remaining_target_rtg": remaining, "steps": n + 1 - d}


def follow(cfg: PredictConfig, wait=time.sleep):
    """Yield a decision (run()'s dict + remaining_target_rtg and steps) now and after every
    change of the trader's folder, looking every cfg.poll_s seconds (`wait(poll_s)` between
    looks), until cfg.max_decisions decisions."""
    inf, meta, device = load_model(cfg)
    bot, sig, made = Follower(inf, meta, cfg, device), None, 0
    while True:
        now = folder_signature(cfg.trader)
        if now != sig:
            sig = now
            out = bot.update(*load_trader(cfg.trader, meta["bar_interval"], cfg.workers))
            if out is not None:
                made += 1
                yield out
                if cfg.max_decisions is not None and made >= cfg.max_decisions:
                    return
        wait(cfg.poll_s)


def show(out: dict, as_json: bool) -> None:
    """Print one decision: a JSON line, or the table."""
    if as_json:
        print(orjson.dumps(out).decode(), flush=True)
        return
    print(f"trader {out['address']}, last bar {out['last_bar']}, target RTG {out['target_rtg']:+.2%}")
    if "remaining_target_rtg" in out:
        print(f"following: target left {out['remaining_target_rtg']:+.2%} after the bars since it "
              f"began; {out['steps']} cached model step(s) for this decision")
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
    sys.stdout.flush()


def main() -> None:
    """CLI: flags 1:1 with PredictConfig; prints the next bar's action and probabilities (with
    --follow, one decision per change of the folder until Ctrl-C or --max_decisions)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(p, PredictConfig, " (default: %(default)s)", trader={"required": True})
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    cfg = PredictConfig(**vars(args))
    try:
        if cfg.max_decisions is not None and cfg.max_decisions < 1:
            raise PredictError(f"--max_decisions must be >= 1, got {cfg.max_decisions}")
        if not cfg.poll_s > 0:
            raise PredictError(f"--poll_s must be > 0, got {cfg.poll_s}")
        for out in follow(cfg) if cfg.follow else [run(cfg)]:
            show(out, cfg.json)
    except (UserError, FileNotFoundError) as e:  # PredictError, EvaluationError (bad --device), ...
        print(f"predict: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C ends --follow; every decision so far is printed
        raise SystemExit(0) from None


if __name__ == "__main__":
    main()
