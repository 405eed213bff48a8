"""The twin report's analyses: metrics, baselines, oracle, RTG-sweep statistics, distilled rules.

Promise: pure functions over the processed parquet's rows (a pandas DataFrame) and arrays of
predicted classes / probabilities; nothing here reads files, imports torch or knows the model.
`evaluate.py` produces the twin's predictions and calls these, so each analysis is testable on
synthetic rows whose answer is known.

No-leakage rule: every fitted object (majority class, transition matrix, logistic regression,
gradient boosting, distilled tree) is fitted on train-split rows only and scored on the evaluated
split; the features are the bar's state columns and its previous action, which the parquet
already builds from events before bar_start.

Run alone: no CLI; `python evaluate.py` runs every analysis.

Decisions where the issue is silent:
- Baselines see the same per-bar inputs as one twin token, minus RTG and history: the state
  columns plus a one-hot of the previous action. LR and HGB are class-weighted ("balanced"),
  like the twin's class-weighted loss, because the headline metric is macro-F1.
- The previous-action baseline predicts a_{t-1} (START maps to HOLD); its probabilities (for
  log-loss) are the train split's transition matrix P(a_t | a_{t-1}), Laplace-smoothed.
- Direction of a class is Up-equivalent sign: STRONG_BUY/BUY +1, HOLD 0, SELL/STRONG_SELL -1.
- The backtest (fills at quotes, fees, settlement) is `_evaluate_backtest.py`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from action_discretization import ACTIONS, HOLD, N_ACTIONS, START_ACTION

LABELS = list(range(N_ACTIONS))
DIRECTION = np.array([1.0, 1.0, 0.0, -1.0, -1.0])
"""Up-equivalent sign of each action class, indexed like ACTIONS."""
PROBA_EPS = 1e-7
SWEEP_NEGLIGIBLE, SWEEP_SMALL = 0.05, 0.15
"""RTG-sweep effect words: largest change of direction, trade rate or a class share below these."""
WIDE_INTERVAL = 0.10
"""A macro-F1 95 % interval wider than this (0.10) makes the report's "too small to trust" banner."""


# ---------------------------------------------------------------- metrics
def classification_metrics(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1 (over the 5 classes), per-class precision/recall,
    the 5x5 confusion matrix (rows = trader, columns = prediction) and, with `proba` (N, 5),
    the log-loss. Classes absent from both y and pred score 0 in macro-F1 only if predicted."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
    )

    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    out: dict = {"n": int(len(y))}
    if len(y) == 0:
        return out
    present = sorted(set(y.tolist()) | set(pred.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes missing from y_true: sklearn warns, we report 0
        out["accuracy"] = float(accuracy_score(y, pred))
        out["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
        out["macro_f1"] = float(f1_score(y, pred, labels=present, average="macro", zero_division=0))
        p, r, f, s = precision_recall_fscore_support(y, pred, labels=LABELS, zero_division=0)
        if proba is not None:
            q = np.clip(np.asarray(proba, dtype=np.float64), PROBA_EPS, 1.0)
            out["log_loss"] = float(log_loss(y, q / q.sum(1, keepdims=True), labels=LABELS))
    out["per_class"] = {
        ACTIONS[k]: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                     "support": int(s[k])}
        for k in LABELS
    }
    out["confusion"] = confusion_matrix(y, pred, labels=LABELS).tolist()
    return out


# ---------------------------------------------------------------- baselines
def baseline_features(rows: pd.DataFrame, state_columns: list[str]) -> np.ndarray:
    """(N, S + 6) float array: the state columns and a one-hot of prev_action (0..START_ACTION)."""
    prev = rows["prev_action"].to_numpy(dtype=np.int64)
    onehot = np.eye(START_ACTION + 1)[np.clip(prev, 0, START_ACTION)]
    return np.hstack([rows[state_columns].to_numpy(dtype=np.float64), onehot])


def _full_proba(model, X: np.ndarray) -> np.ndarray:
    """predict_proba of a fitted sklearn classifier spread onto all 5 classes, (N, 5)."""
    out = np.zeros((len(X), N_ACTIONS))
    out[:, model.classes_.astype(int)] = model.predict_proba(X)
    return out


def fit_baseline_models(train: pd.DataFrame, state_columns: list[str], seed: int = 0) -> dict:
    """Fit every baseline once on `train` rows: {"freq" (5,), "majority", "transition" (5, 5),
    "logistic_regression", "hist_gradient_boosting"} (a learned model is None with one train
    class: sklearn cannot fit it, and score_baselines falls back to the majority)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y_tr = train["action"].to_numpy(dtype=np.int64)
    freq = np.bincount(y_tr, minlength=N_ACTIONS) + 1.0  # Laplace: log-loss stays finite
    prev_tr = np.where(train["prev_action"].to_numpy() == START_ACTION, HOLD, train["prev_action"])
    trans = np.ones((N_ACTIONS, N_ACTIONS))
    np.add.at(trans, (prev_tr.astype(np.int64), y_tr), 1.0)
    models = {"freq": freq / freq.sum(), "majority": int(np.bincount(y_tr, minlength=N_ACTIONS).argmax()),
              "transition": trans / trans.sum(1, keepdims=True)}
    learned = {
        "logistic_regression": make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")),
        "hist_gradient_boosting": HistGradientBoostingClassifier(
            random_state=seed, class_weight="balanced"),
    }
    X_tr = baseline_features(train, state_columns)
    for name, model in learned.items():
        models[name] = None
        if len(np.unique(y_tr)) >= 2:
            with threadpool_limits(1):  # tiny fits: OpenMP threads only oversubscribe the cores
                models[name] = model.fit(X_tr, y_tr)
    return models


def score_baselines(models: dict, rows: pd.DataFrame, state_columns: list[str]) -> dict[str, dict]:
    """{name: {"pred": (N,) int, "proba": (N, 5)}} of fit_baseline_models' baselines on `rows`."""
    from threadpoolctl import threadpool_limits

    n = len(rows)
    out = {"majority": {"pred": np.full(n, models["majority"]), "proba": np.tile(models["freq"], (n, 1))}}
    prev = rows["prev_action"].to_numpy(dtype=np.int64)
    prev = np.where(prev == START_ACTION, HOLD, prev)
    out["previous_action"] = {"pred": prev, "proba": models["transition"][prev]}
    X = baseline_features(rows, state_columns)
    for name in ("logistic_regression", "hist_gradient_boosting"):
        if models[name] is None:
            out[name] = out["majority"]
            continue
        with threadpool_limits(1):
            proba = _full_proba(models[name], X)
        out[name] = {"pred": proba.argmax(1), "proba": proba}
    return out


def fit_baselines(train: pd.DataFrame, rows: pd.DataFrame, state_columns: list[str],
                  seed: int = 0) -> dict[str, dict]:
    """Fit each baseline on `train` rows and score it on `rows`.

    Returns {name: {"pred": (N,) int, "proba": (N, 5)}} for majority, previous_action,
    logistic_regression and hist_gradient_boosting. With one class in train, the two learned
    baselines fall back to that constant (sklearn cannot fit them)."""
    return score_baselines(fit_baseline_models(train, state_columns, seed), rows, state_columns)


# ---------------------------------------------------------------- decision rule
OFFSET_GRID = np.linspace(-3.0, 3.0, 25)
"""Candidate log-probability offsets per class for fit_class_offsets."""


def fit_class_offsets(proba: np.ndarray, y: np.ndarray, rounds: int = 2) -> np.ndarray:
    """(5,) offsets b (b[HOLD] = 0) maximising the macro-F1 of argmax(log p + b) on (proba, y):
    coordinate ascent over OFFSET_GRID, `rounds` sweeps over the other four classes. Macro-F1
    rewards predicting rare classes; fitted on val, this is the decision rule a user would tune
    before trading, and the report scores it on test beside the plain argmax."""
    logp = np.log(np.clip(np.asarray(proba, np.float64), PROBA_EPS, 1.0))
    y = np.asarray(y, np.int64)
    b = np.zeros(N_ACTIONS)
    if len(y) == 0:
        return b

    def f1(pred: np.ndarray) -> np.ndarray:  # (G, N) -> (G,) macro-F1
        conf = np.zeros((len(pred), N_ACTIONS * N_ACTIONS))
        for g in range(len(pred)):  # G = 25 candidates, vectorised over rows
            conf[g] = np.bincount(y * N_ACTIONS + pred[g], minlength=N_ACTIONS * N_ACTIONS)
        return _scores(conf.reshape(-1, N_ACTIONS, N_ACTIONS))[1]

    best = f1((logp + b).argmax(1)[None])[0]
    for _ in range(rounds):
        for k in (c for c in LABELS if c != HOLD):
            trial = np.repeat(b[None], len(OFFSET_GRID), 0)
            trial[:, k] = OFFSET_GRID
            scores = f1((logp[None] + trial[:, None, :]).argmax(-1))
            if scores.max() > best + 1e-12:
                best, b = float(scores.max()), trial[int(scores.argmax())]
    return b


# ---------------------------------------------------------------- oracle
def decision_interval(truth: pd.DataFrame) -> pd.Timedelta | None:
    """The median spacing of a truth table's decision_time within an address (None if < 2 rows)."""
    t = truth.sort_values(["address", "decision_time"])
    d = t.groupby("address")["decision_time"].diff().dropna()
    return None if d.empty else pd.Timedelta(d.median())


def oracle_report(rows: pd.DataFrame, pred: np.ndarray, truth: pd.DataFrame | None,
                  bar_interval: str) -> dict:
    """The Bayes ceiling of the true policy pi on the evaluated rows, and the twin's fraction.

    `rows` has address, bar_start, action; `pred` is the twin's class per row; `truth` the
    concatenated demo truth (address, decision_time, prob_0..prob_4, action). Joined on
    (address, bar_start == decision_time) only when the decision interval equals the bar
    interval; otherwise {"available": False, "reason": ...}. expected_accuracy = mean max pi (the
    Bayes accuracy against the drawn action); argmax metrics are scored against the pipeline's
    recorded actions, the ones the twin is scored against."""
    if truth is None or truth.empty:
        return {"available": False, "reason": "no truth files for these addresses"}
    interval, bar = decision_interval(truth), pd.Timedelta(bar_interval)
    if interval != bar:
        return {"available": False, "reason": f"truth decision interval {interval} differs from "
                f"the bar interval {bar}: decisions and bars do not map one to one"}
    prob_cols = [f"prob_{k}" for k in LABELS]
    key = rows[["address", "bar_start"]].assign(_row=np.arange(len(rows)))
    t = truth.rename(columns={"decision_time": "bar_start", "action": "truth_action"})
    t["bar_start"] = pd.to_datetime(t["bar_start"], utc=True).astype(key["bar_start"].dtype)
    m = key.merge(t[["address", "bar_start", "truth_action", *prob_cols]], on=["address", "bar_start"])
    if m.empty:
        return {"available": False, "reason": "no evaluated bar matches a truth decision_time"}
    idx = m["_row"].to_numpy()
    pi = m[prob_cols].to_numpy(dtype=np.float64)
    y = rows["action"].to_numpy(dtype=np.int64)[idx]
    drawn = m["truth_action"].to_numpy(dtype=np.int64)
    ceiling = classification_metrics(y, pi.argmax(1), pi)
    twin = classification_metrics(y, np.asarray(pred)[idx])
    return {
        "available": True, "n_matched": int(len(m)), "coverage": float(len(m) / len(rows)),
        "expected_accuracy": float(pi.max(1).mean()),
        "argmax_accuracy": ceiling["accuracy"], "argmax_macro_f1": ceiling["macro_f1"],
        "argmax_balanced_accuracy": ceiling["balanced_accuracy"],
        "log_loss": ceiling["log_loss"],
        "argmax_accuracy_vs_drawn": float((pi.argmax(1) == drawn).mean()),
        "drawn_vs_discretised_agreement": float((drawn == y).mean()),
        "twin_accuracy_matched": twin["accuracy"], "twin_macro_f1_matched": twin["macro_f1"],
        "twin_fraction_macro_f1": _ratio(twin["macro_f1"], ceiling["macro_f1"]),
        "twin_fraction_accuracy": _ratio(twin["accuracy"], ceiling["accuracy"]),
    }


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


# ---------------------------------------------------------------- RTG sweep
def sweep_statistics(targets: np.ndarray, proba: np.ndarray) -> dict:
    """Action distribution over target RTGs. `proba` is (G, N, 5) for G targets and N rows.

    Returns per-target shares of the predicted (argmax) classes, mean probabilities, the mean
    Up-equivalent direction (sum_c p_c x DIRECTION_c) and trade rate (1 - P(HOLD)), and the
    Spearman correlation of each with the target (None when either side is constant): the
    monotonicity statistic of how the target steers the twin."""
    from scipy.stats import spearmanr

    targets = np.asarray(targets, dtype=np.float64)
    pred = proba.argmax(-1)  # (G, N)
    shares = np.stack([(pred == k).mean(1) for k in LABELS], 1)  # (G, 5)
    direction = (proba @ DIRECTION).mean(1)
    trade_rate = 1.0 - proba[..., HOLD].mean(1)

    def rho(v: np.ndarray) -> float | None:
        if np.ptp(v) < 1e-12 or len(v) < 3:
            return None
        return float(spearmanr(targets, v).statistic)

    return {
        "targets": targets.tolist(), "pred_share": shares.tolist(),
        "mean_proba": proba.mean(1).tolist(), "mean_direction": direction.tolist(),
        "trade_rate": trade_rate.tolist(),
        "spearman_direction": rho(direction), "spearman_trade_rate": rho(trade_rate),
        "effect": sweep_effect(direction, trade_rate, shares),
    }


def sweep_effect(direction: np.ndarray, trade_rate: np.ndarray, shares: np.ndarray) -> dict:
    """How far the target moves the twin across the sweep, with a word for it.

    Ranges (max - min over the grid) of the mean direction (scale -1..+1), the trade rate and
    each class's share of predicted actions (percentage points). The word is "negligible" when
    all three stay under SWEEP_NEGLIGIBLE (0.05: 5 points), "small" under SWEEP_SMALL, else
    "large": a Spearman of +-1 only says a change is monotone, not that it matters."""
    share_range = np.ptp(shares, axis=0) if len(shares) else np.zeros(N_ACTIONS)
    k = int(share_range.argmax())
    size = max(float(np.ptp(direction)), float(np.ptp(trade_rate)), float(share_range[k]))
    word = "negligible" if size < SWEEP_NEGLIGIBLE else "small" if size < SWEEP_SMALL else "large"
    return {"direction_range": float(np.ptp(direction)), "trade_rate_range": float(np.ptp(trade_rate)),
            "largest_share_change": float(share_range[k]), "largest_share_class": ACTIONS[k],
            "size": word}


# ---------------------------------------------------------------- distilled rules
def distill_rules(X_train: np.ndarray, twin_train: np.ndarray, X_eval: np.ndarray,
                  twin_eval: np.ndarray, y_eval: np.ndarray, feature_names: list[str],
                  max_depth: int = 4, seed: int = 0, to_raw=None, units: dict | None = None) -> dict:
    """A DecisionTreeClassifier(max_depth) fitted to the twin's predictions on train rows.

    Returns the rules as text (see tree_rules: thresholds in the features' own units through
    `to_raw(name, value)`, no split whose two sides predict the same class), fidelity to the twin
    on train and on the evaluated rows, and the tree's accuracy and macro-F1 against the trader."""
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(X_train, twin_train)
    rules, n_leaves = tree_rules(tree, list(feature_names), to_raw, units)
    tree_eval = tree.predict(X_eval)
    vs_trader = classification_metrics(y_eval, tree_eval)
    return {
        "rules": rules, "max_depth": max_depth, "n_leaves": n_leaves,
        "fidelity_train": float((tree.predict(X_train) == twin_train).mean()),
        "fidelity_eval": float((tree_eval == twin_eval).mean()) if len(twin_eval) else None,
        "accuracy_vs_trader": vs_trader.get("accuracy"), "macro_f1_vs_trader": vs_trader.get("macro_f1"),
    }


def tree_rules(tree, names: list[str], to_raw=None, units: dict | None = None) -> tuple[str, int]:
    """(rules text, leaves shown) of a fitted sklearn tree, export_text style.

    A subtree whose leaves all predict one class is shown as that one leaf (its split changes
    nothing), so no rule has the same class on both sides. Thresholds go through
    `to_raw(feature, threshold)` (an increasing map, so <= stays <=) and carry `units[feature]`;
    each leaf gives its class and the train rows it holds. The tree has <= 31 nodes (depth 4)."""
    t, units = tree.tree_, units or {}
    to_raw = to_raw or (lambda _name, v: v)
    classes = [ACTIONS[int(c)] for c in tree.classes_]
    leaf_class: dict[int, set] = {}

    def below(node: int) -> set:  # the classes predicted by the leaves under node
        if node not in leaf_class:
            left, right = t.children_left[node], t.children_right[node]
            leaf_class[node] = ({int(t.value[node][0].argmax())} if left < 0
                                else below(left) | below(right))
        return leaf_class[node]

    lines: list[str] = []

    def walk(node: int, depth: int) -> int:
        pad = "|   " * depth + "|--- "
        if len(below(node)) == 1:
            lines.append(f"{pad}class: {classes[next(iter(below(node)))]} "
                         f"({int(t.n_node_samples[node])} train rows)")
            return 1
        name = names[t.feature[node]]
        thr = float(to_raw(name, float(t.threshold[node])))
        unit = f" [{units[name]}]" if units.get(name) else ""
        lines.append(f"{pad}{name} <= {thr:.4g}{unit}")
        n = walk(t.children_left[node], depth + 1)
        lines.append(f"{pad}{name} >  {thr:.4g}{unit}")
        return n + walk(t.children_right[node], depth + 1)

    n_leaves = walk(0, 0)
    return "\n".join(lines) + "\n", n_leaves


# ---------------------------------------------------------------- intervals
def _confusions(y: np.ndarray, pred: np.ndarray, codes: np.ndarray, n_blocks: int) -> np.ndarray:
    """(n_blocks, K*K) confusion counts per block, cell = y * K + pred."""
    per = np.zeros((n_blocks, N_ACTIONS * N_ACTIONS))
    np.add.at(per, (codes, np.asarray(y, np.int64) * N_ACTIONS + np.asarray(pred, np.int64)), 1.0)
    return per


def _scores(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, macro-F1) of confusions (..., K, K) [true, pred]; macro-F1 averages the classes
    present in y or in the predictions, like sklearn's f1_score(average="macro")."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    true, pred = conf.sum(-1), conf.sum(-2)
    present = (true + pred) > 0
    f1 = np.where(present, 2 * tp / np.maximum(true + pred, 1e-12), 0.0)
    acc = tp.sum(-1) / np.maximum(conf.sum((-2, -1)), 1e-12)
    return acc, f1.sum(-1) / np.maximum(present.sum(-1), 1)


def bootstrap_samples(y: np.ndarray, preds: dict[str, np.ndarray], blocks, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (accuracy, macro-F1)}, each (1 + n_boot,): row 0 the observed sample, then one value
    per resample of whole blocks (markets) drawn with replacement, the same resamples for every
    model (multinomial weights on per-block confusions: a resample is one matrix product)."""
    codes, uniq = pd.factorize(pd.Series(np.asarray(blocks)))
    nb = len(uniq)
    rng = np.random.default_rng(seed)
    w = np.vstack([np.ones(nb), rng.multinomial(nb, np.full(nb, 1 / nb), size=n_boot)])  # (1+B, nb)
    return {k: _scores((w @ _confusions(y, p, codes, nb)).reshape(-1, N_ACTIONS, N_ACTIONS))
            for k, p in preds.items()}


def interval(v: np.ndarray) -> list[float]:
    """[observed, 2.5 %, 97.5 %] from (1 + B,) values whose row 0 is the observed sample."""
    return [float(v[0]), *np.percentile(v[1:], [2.5, 97.5]).tolist()]


def block_bootstrap(y: np.ndarray, preds: dict[str, np.ndarray], blocks, reference: str = "twin",
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """95 % percentile intervals of accuracy and macro-F1 over resampled blocks (markets).

    Every model is scored on the same resamples (bootstrap_samples), so `differences`
    (reference minus each other model) are paired. Returns {"blocks", "n_boot", "scores": {name:
    {"accuracy": [v, lo, hi], "macro_f1": [...]}}, "differences": {name: {"accuracy",
    "macro_f1", "verdict"}}}; verdict "ahead" / "behind" when the macro-F1 difference's interval
    excludes 0, else "tie" (inside the noise)."""
    raw = bootstrap_samples(y, preds, blocks, n_boot, seed)
    scores = {k: {"accuracy": interval(a), "macro_f1": interval(f)} for k, (a, f) in raw.items()}
    diffs = {}
    for k, (a, f) in raw.items():
        if k == reference:
            continue
        d = {"accuracy": interval(raw[reference][0] - a), "macro_f1": interval(raw[reference][1] - f)}
        lo, hi = d["macro_f1"][1:]
        d["verdict"] = "ahead" if lo > 0 else "behind" if hi < 0 else "tie"
        diffs[k] = d
    return {"blocks": int(pd.Series(np.asarray(blocks)).nunique()), "n_boot": int(n_boot),
            "scores": scores, "differences": diffs}


def trust_banner(boot: dict, size_warnings: list[str]) -> list[str]:
    """Why the report is too small to trust (empty when it is not): the twin's macro-F1 interval
    wider than WIDE_INTERVAL, and every data-size warning."""
    lo, hi = boot["scores"]["twin"]["macro_f1"][1:]
    out = []
    if hi - lo > WIDE_INTERVAL:
        out.append(f"the twin's macro-F1 95 % interval is {lo:.3f} .. {hi:.3f}, {hi - lo:.3f} wide "
                   f"(> {WIDE_INTERVAL:.2f}) over {boot['blocks']} markets: model differences "
                   "smaller than that are noise")
    return out + list(size_warnings)
