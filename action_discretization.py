"""Action discretisation: the five action classes, their train-split thresholds and inverse.

Promise: `run(bars, train_mask, cfg)` maps every bar's Up-equivalent net shares traded
(`net_shares`) to one of ACTIONS (ids 0..4) and returns the fitted thresholds and the inverse
map class -> typical size (the class median of net shares) used by the backtest.

  net > strong_buy           -> STRONG_BUY (0)
  eps <= net <= strong_buy   -> BUY (1)
  |net| < eps                -> HOLD (2)       (eps = 1e-9 shares; NaN counts as HOLD)
  -strong_sell <= net <= -eps -> SELL (3)
  net < -strong_sell         -> STRONG_SELL (4)

No-leakage rule: strong_buy is the `strong_quantile` quantile of the positive nets on train rows
only, strong_sell the same quantile of |negative nets| on train rows; the class medians are
train-split medians too. Val/test data never move them.

Run alone: no CLI of its own; `python pipeline.py` runs it after the bar table is built.

Decisions where the issue is silent: a side with no train trades gets an infinite threshold
(nothing is strong on that side; stored as null in JSON). The inverse of a class absent from the
train split falls back to its threshold for the strong classes (+-threshold, 0 if infinite) and
to 0 for BUY/SELL; such classes are listed in fitted["missing_train_classes"].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

ACTIONS = ("STRONG_BUY", "BUY", "HOLD", "SELL", "STRONG_SELL")
"""Action class names, index = class id."""
STRONG_BUY, BUY, HOLD, SELL, STRONG_SELL = 0, 1, 2, 3, 4
N_ACTIONS = 5
"""Number of action classes (the action head's width)."""
START_ACTION = 5
"""The a_{-1} token index (the model's action embedding has N_ACTIONS + 1 rows)."""
HOLD_EPS = 1e-9
"""|net shares| below this is HOLD."""


@dataclass(frozen=True)
class ActionConfig:
    strong_quantile: float = 0.75
    """Quantile of train-split positive (|negative|) nets above which a bar is STRONG_BUY (SELL)."""


def fit_thresholds(net_train: np.ndarray, q: float) -> dict[str, float]:
    """{"strong_buy", "strong_sell"}: q-quantiles of positive nets and of |negative nets|.

    Both thresholds are positive share counts; a side with no trades gets +inf.
    """
    net = np.asarray(net_train, float)
    net = net[np.isfinite(net)]
    pos = net[net >= HOLD_EPS]
    neg = -net[net <= -HOLD_EPS]
    return {
        "strong_buy": float(np.quantile(pos, q)) if pos.size else math.inf,
        "strong_sell": float(np.quantile(neg, q)) if neg.size else math.inf,
    }


def _threshold(value) -> float:
    """A stored threshold (None/null = infinite) as a float."""
    return math.inf if value is None else float(value)


def discretize(net: np.ndarray, thresholds: dict) -> np.ndarray:
    """Action id per element of `net` (np.int8), by the rule in the module docstring."""
    net = np.nan_to_num(np.asarray(net, float), nan=0.0)
    sb, ss = _threshold(thresholds["strong_buy"]), _threshold(thresholds["strong_sell"])
    out = np.full(net.shape, HOLD, dtype=np.int8)
    out[net >= HOLD_EPS] = BUY
    out[net > sb] = STRONG_BUY
    out[net <= -HOLD_EPS] = SELL
    out[net < -ss] = STRONG_SELL
    return out


def class_sizes(net: np.ndarray, actions: np.ndarray) -> dict[str, float | None]:
    """{class name: median net shares of the rows in that class}; None for an absent class."""
    net = np.nan_to_num(np.asarray(net, float), nan=0.0)
    actions = np.asarray(actions)
    sizes: dict[str, float | None] = {}
    for k, name in enumerate(ACTIONS):
        sel = net[actions == k]
        sizes[name] = float(np.median(sel)) if sel.size else None
    sizes["HOLD"] = 0.0
    return sizes


def class_counts(actions: np.ndarray) -> dict[str, int]:
    """{class name: number of rows} for all five classes (zeros included)."""
    counts = np.bincount(np.asarray(actions, np.int64), minlength=N_ACTIONS)
    return {name: int(counts[k]) for k, name in enumerate(ACTIONS)}


def inverse(actions: np.ndarray, sizes: dict) -> np.ndarray:
    """Typical net shares for each action id (the class medians); the backtest's inverse map."""
    table = np.array([float(sizes[name] or 0.0) for name in ACTIONS], dtype=float)
    return table[np.asarray(actions, np.int64)]


def run(bars: pd.DataFrame, train_mask: np.ndarray, cfg: ActionConfig) -> tuple[np.ndarray, dict]:
    """Discretise bars["net_shares"]; fit thresholds and class medians on train rows.

    Returns (actions (N,) int8, fitted) with fitted = {"strong_quantile", "eps", "thresholds",
    "class_sizes", "missing_train_classes"}.
    """
    if not 0.0 < cfg.strong_quantile < 1.0:
        raise ValueError(f"strong_quantile must be in (0, 1), got {cfg.strong_quantile}")
    train = np.asarray(train_mask, bool)
    net = bars["net_shares"].to_numpy(float)
    thresholds = fit_thresholds(net[train], cfg.strong_quantile)
    actions = discretize(net, thresholds)
    sizes = class_sizes(net[train], actions[train])
    missing = [name for name, v in sizes.items() if v is None]
    for name in missing:
        if name in ("STRONG_BUY", "STRONG_SELL"):
            thr = thresholds["strong_buy" if name == "STRONG_BUY" else "strong_sell"]
            sign = 1.0 if name == "STRONG_BUY" else -1.0
            sizes[name] = sign * thr if math.isfinite(thr) else 0.0
        else:
            sizes[name] = 0.0
    fitted = {
        "strong_quantile": cfg.strong_quantile,
        "eps": HOLD_EPS,
        "thresholds": {k: (v if math.isfinite(v) else None) for k, v in thresholds.items()},
        "class_sizes": sizes,
        "missing_train_classes": missing,
    }
    return actions, fitted
