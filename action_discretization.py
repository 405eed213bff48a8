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
only, strong_sell the same quantile of |negative nets| on train rows (or, with strong_rule gap,
the split between the two size modes of each side's train nets); the class medians are
train-split medians too. Val/test data never move them.

Run alone: no CLI of its own; `python pipeline.py` runs it after the bar table is built.

Decisions where the issue is silent: a side with no train trades gets an infinite threshold
(nothing is strong on that side; stored as null in JSON). The inverse of a class absent from the
train split falls back to its threshold for the strong classes (+-threshold, 0 if infinite) and
to 0 for BUY/SELL; such classes are listed in fitted["missing_train_classes"].
The gap rule (`--strong_rule gap`) is Otsu's split of log(size) per side, kept only when the two
modes' geometric means are >= 2x apart and each holds >= 5 % of the side's trades (else that side
keeps the quantile); fitted["rule_agreement_train"] is the share of train trades both rules give
the same class, and both rules' thresholds are stored.
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


STRONG_RULES = ("quantile", "gap")
"""How the STRONG thresholds are fitted: the seed's train quantile, or the gap between size modes."""
MIN_GAP_RATIO = 2.0
"""The gap rule needs the two size modes' geometric means at least this far apart (x2)."""


@dataclass(frozen=True)
class ActionConfig:
    strong_quantile: float = 0.75
    """Quantile of train-split positive (|negative|) nets above which a bar is STRONG_BUY (SELL)."""
    strong_rule: str = "quantile"
    """quantile (the seed's rule) or gap (the widest split between two size modes, per side)."""


def gap_threshold(sizes: np.ndarray) -> float | None:
    """The threshold between two size modes of positive sizes, or None when there are not two.

    Otsu's split of log(size): the cut maximising the between-class variance of the two sides
    (one cumulative sum over the sorted values), placed at the geometric midpoint of the two
    sizes it falls between; None unless both sides hold >= 5 % of the sizes and their geometric
    means differ by >= MIN_GAP_RATIO (a single mode has no gap to find)."""
    x = np.sort(np.log(np.asarray(sizes, float)[np.asarray(sizes, float) > 0]))
    n = len(x)
    if n < 20 or x[-1] - x[0] < 1e-12:
        return None
    k = np.arange(1, n)  # cut after position k-1: lower = x[:k]
    c = np.cumsum(x)[:-1]
    m1, m2 = c / k, (x.sum() - c) / (n - k)
    between = k * (n - k) * (m1 - m2) ** 2
    ok = (k >= 0.05 * n) & (n - k >= 0.05 * n) & (x[k] > x[k - 1])
    if not ok.any():
        return None
    j = int(np.argmax(np.where(ok, between, -np.inf)))
    if m2[j] - m1[j] < math.log(MIN_GAP_RATIO):
        return None
    return float(np.exp(0.5 * (x[j] + x[j + 1])))


def fit_gap_thresholds(net_train: np.ndarray, q: float) -> dict[str, float]:
    """fit_thresholds by the gap rule per side; a side without two size modes keeps the
    q-quantile (the seed's rule)."""
    base = fit_thresholds(net_train, q)
    net = np.asarray(net_train, float)
    net = net[np.isfinite(net)]
    for key, side in (("strong_buy", net[net >= HOLD_EPS]), ("strong_sell", -net[net <= -HOLD_EPS])):
        gap = gap_threshold(side)
        if gap is not None:
            base[key] = gap
    return base


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


def _agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Share of the train trades (non-HOLD under either labelling) given the same class."""
    trade = (a != HOLD) | (b != HOLD)
    return float((a[trade] == b[trade]).mean()) if trade.any() else None


def run(bars: pd.DataFrame, train_mask: np.ndarray, cfg: ActionConfig) -> tuple[np.ndarray, dict]:
    """Discretise bars["net_shares"]; fit thresholds and class medians on train rows.

    Returns (actions (N,) int8, fitted) with fitted = {"strong_quantile", "eps", "thresholds",
    "class_sizes", "missing_train_classes"}.
    """
    if not 0.0 < cfg.strong_quantile < 1.0:
        raise ValueError(f"strong_quantile must be in (0, 1), got {cfg.strong_quantile}")
    if cfg.strong_rule not in STRONG_RULES:
        raise ValueError(f"strong_rule must be one of {STRONG_RULES}, got {cfg.strong_rule!r}")
    train = np.asarray(train_mask, bool)
    net = bars["net_shares"].to_numpy(float)
    quantile = fit_thresholds(net[train], cfg.strong_quantile)
    gap = fit_gap_thresholds(net[train], cfg.strong_quantile)
    thresholds = gap if cfg.strong_rule == "gap" else quantile
    # how often the two rules give a train trade the same class (1.0: the rules agree)
    other = discretize(net[train], quantile if cfg.strong_rule == "gap" else gap)
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
        "strong_rule": cfg.strong_rule,
        "rule_agreement_train": _agreement(actions[train], other),
        "thresholds_by_rule": {r: {k: (v if math.isfinite(v) else None) for k, v in t.items()}
                               for r, t in (("quantile", quantile), ("gap", gap))},
    }
    return actions, fitted
