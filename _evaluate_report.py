"""The twin report's outputs: atomic writes, the three PNG plots and the markdown report.

Promise: `atomic_write(path, obj)` writes a DataFrame (parquet), a dict (JSON via orjson), a str
(text) or bytes to a temp file in the target directory and renames it over `path`, so a partial
file never appears. `write_plots(out, twin, sweep, curve, backtest, split)` writes
confusion_matrix.png, rtg_sweep.png and, where the backtest ran, equity_curves.png (the equity
after fees with its 95 % band, and the P&L per market by target RTG) with matplotlib Agg and
labelled axes, and returns the names written.
`write_report(metrics) -> str` renders report.md from evaluate.py's metrics dict.

No-leakage rule: none of its own; it only renders numbers evaluate.py computed on the evaluated
split (with train-fitted baselines and tree).

Run alone: no CLI; `python evaluate.py` calls it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from action_discretization import ACTIONS
from common import atomic_write as _atomic_write
from sequence_preparation import MIN_TRAIN_TRADES

CONFUSION_PNG, SWEEP_PNG, EQUITY_PNG = "confusion_matrix.png", "rtg_sweep.png", "equity_curves.png"
CURVE_PNG = "learning_curve.png"
BASELINE_NAMES = {
    "majority": "majority class", "previous_action": "previous action",
    "logistic_regression": "logistic regression", "hist_gradient_boosting": "HistGradientBoosting",
}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def atomic_write(path: str | Path, obj) -> Path:
    """data_ingestion.atomic_write that also takes a DataFrame (parquet) or a dict (JSON)."""
    if isinstance(obj, pd.DataFrame):
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(obj, preserve_index=False)
        return _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    if isinstance(obj, dict):
        obj = orjson.dumps(obj, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    return _atomic_write(path, obj)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def plot_learning_curve(out: Path, training: dict) -> list[str]:
    """learning_curve.png: the twin's val macro-F1 per epoch against every baseline's val
    macro-F1 (fitted on train; flat lines) and the best epoch; [] without a history."""
    import matplotlib.pyplot as plt

    h = training.get("history") or []
    if not h:
        return []
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot([r["epoch"] for r in h], [r["val_macro_f1"] for r in h], marker="o", label="twin")
    for k, (name, v) in enumerate(training.get("val_baselines_macro_f1", {}).items()):
        ax.axhline(v, ls="--", lw=1.2, color=f"C{k + 1}", label=BASELINE_NAMES.get(name, name))
    if training.get("best_epoch") is not None:
        ax.axvline(training["best_epoch"], color="grey", lw=0.8, ls=":", label="best epoch (saved)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val macro-F1 (5 classes)")
    ax.set_title("Learning curve on the val split (baselines fitted on train)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    _save(fig, out / CURVE_PNG)
    return [CURVE_PNG]


def write_plots(out: Path, twin: dict, sweep: dict, curve: pd.DataFrame | None, backtest: dict,
                split: str, training: dict | None = None) -> list[str]:
    """Write the confusion matrix, RTG sweep, learning curve (with a history) and (curve not
    None) equity PNGs; return the names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = plot_learning_curve(out, training or {})

    # Confusion matrix: counts, coloured by row share (recall) so rare classes stay visible.
    cm = np.asarray(twin["confusion"], dtype=float)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1.0)
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(ACTIONS)):
        for j in range(len(ACTIONS)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(ACTIONS)), ACTIONS, rotation=30, ha="right")
    ax.set_yticks(range(len(ACTIONS)), ACTIONS)
    ax.set_xlabel("twin's predicted action")
    ax.set_ylabel("trader's action")
    ax.set_title(f"Confusion matrix, {split} split (n={int(cm.sum())}, macro-F1 {twin['macro_f1']:.3f})")
    fig.colorbar(im, ax=ax, label="share of the trader's action (row)")
    _save(fig, out / CONFUSION_PNG)

    # RTG sweep: predicted-class shares and mean direction against the target.
    x = 100 * np.asarray(sweep["targets"])
    shares = np.asarray(sweep["pred_share"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, name in enumerate(ACTIONS):
        a1.plot(x, shares[:, k], marker="o", label=name)
    a1.set_xlabel("target RTG (% of capital)")
    a1.set_ylabel("share of predicted actions")
    a1.set_title("Action distribution vs target RTG")
    a1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.subplots_adjust(wspace=0.75)  # room for the legend and the right panel's two y labels
    a2.plot(x, sweep["mean_direction"], marker="o", color="tab:blue")
    a2.set_xlabel("target RTG (% of capital)")
    a2.set_ylabel("mean direction P(buy) - P(sell)", color="tab:blue")
    a3 = a2.twinx()  # the trade rate has its own scale
    a3.plot(x, sweep["trade_rate"], marker="s", linestyle="--", color="tab:orange")
    a3.set_ylabel("trade rate 1 - P(HOLD)", color="tab:orange")
    rho = sweep["spearman_direction"]
    a2.set_title(f"Steering (Spearman target vs direction: {'n/a' if rho is None else f'{rho:.2f}'})")
    _save(fig, out / SWEEP_PNG)

    if curve is None:
        return [CONFUSION_PNG, SWEEP_PNG, *written]
    # Equity per market (time order) with the band of resampled markets; P&L by target RTG.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1.6, 1]})
    x = curve["market_start"]
    a1.fill_between(x, curve["bot_band_low"], curve["bot_band_high"], color="tab:blue", alpha=0.18,
                    label="bot after fees: 95 % band (resampled markets)")
    a1.plot(x, curve["bot_after_fees"], color="tab:blue", label="twin bot after fees")
    a1.plot(x, curve["bot_before_fees"], color="tab:blue", ls="--", lw=1, label="twin bot before fees")
    a1.plot(x, curve["trader"], color="tab:orange", label="trader before fees")
    if "trader_after_fees" in curve:
        a1.plot(x, curve["trader_after_fees"], color="tab:orange", ls="--", label="trader after fees")
    a1.set_xlabel("market start (UTC)")
    a1.set_ylabel("cumulative P&L (USDC)")
    a1.set_title(f"Backtest on the {split} split (taker at quotes, settled)")
    a1.legend(fontsize=8)
    a1.tick_params(axis="x", labelrotation=30)
    r = backtest["rtg_table"]
    t, mean = 100 * np.asarray(r["targets"]), np.asarray(r["mean_per_market_usdc"], float)
    err = np.abs(np.vstack([r["ci95_low_usdc"], r["ci95_high_usdc"]]).astype(float) - mean)
    a2.errorbar(t, mean, yerr=err, marker="o", capsize=3)
    a2.axhline(0.0, color="grey", lw=0.8)
    a2.set_xlabel("target RTG (% of capital)")
    a2.set_ylabel("bot P&L after fees per market (USDC)")
    a2.set_title("Does the target steer return? (95 % intervals)")
    _save(fig, out / EQUITY_PNG)
    return [CONFUSION_PNG, SWEEP_PNG, EQUITY_PNG, *written]


def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def write_report(m: dict) -> str:
    """report.md from evaluate.py's metrics dict: every section, tables in markdown."""
    t, lines = m["twin"], []
    add = lines.append
    add(f"# Twin report: {m['split']} split\n")
    per, tr = m.get("period") or {}, m.get("training") or {}
    add(f"Model `{m['config']['model']}`, data `{m['config']['processed']}`.")
    if per:
        add(f"Scored: the {m['split']} split, {per['first_bar']} .. {per['last_bar']} (UTC; "
            f"{per['days']:.1f} days), {m['rows']} bars in {per['markets']} 15-minute markets of "
            f"{per['addresses']} trader(s).")
    if tr:
        add(f"Training: best epoch {_f(tr.get('best_epoch'), 'd')} (the checkpoint scored) of "
            f"{_f(tr.get('epochs_run'), 'd')} epochs run ({_f(tr.get('epochs_configured'), 'd')} planned, "
            f"{_f(tr.get('optimizer_steps'), 'd')} optimizer steps).")
    add(f"Honest conditioning: target RTG {m['target_rtg']:.4%} of capital at each window start, "
        "decremented by the returns observed before each bar; previous actions are the trader's "
        "own (the past is observable). No future information enters the twin's inputs.\n")
    if m.get("too_small_to_trust"):
        why = "; ".join(m["too_small_to_trust"])
        add("> **Too small to trust.** " + why[:1].upper() + why[1:] + ". Read every "
            "number below with its interval; a ranking inside the intervals is a tie.\n")
    ci = m.get("intervals")
    add("## Twin metrics\n")
    add("| metric (unit) | twin (honest) | leaky reference (realised RTG) |\n|---|---|---|")
    leaky = m.get("leaky_reference_realised_rtg") or {}
    for k, label in _METRICS:
        add(f"| {label} | {_f(t.get(k), '.4f')} | {_f(leaky.get(k), '.4f')} |")
    add("\nThe leaky reference conditions on the realised return-to-go, which uses the future; it "
        "is shown only to measure how much the twin leans on RTG, never as the twin's score.\n")
    add("| class | precision | recall | support (bars) |\n|---|---|---|---|")
    for name, v in t["per_class"].items():
        add(f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |")
    add(f"\n![confusion matrix]({CONFUSION_PNG})\n")
    add("## Baselines (fitted on train, same rows; inputs: state + previous action)\n")
    if ci:
        add(f"Intervals: 95 % bootstrap over the {ci['blocks']} scored 15-minute markets "
            f"({ci['n_boot']} resamples of whole markets); twin minus a model is paired (the same "
            "resamples). A difference whose interval holds 0 is a tie.\n")
    add("| model | accuracy [95 %] | balanced acc. | macro-F1 [95 %] | log-loss (nats) "
        "| twin - model, macro-F1 [95 %] | verdict |")
    add("|---|---|---|---|---|---|---|")
    add(f"| **twin** | {_acc(t, ci, 'twin', 'accuracy')} | {t['balanced_accuracy']:.3f} "
        f"| {_acc(t, ci, 'twin', 'macro_f1')} | {_f(t.get('log_loss'))} | | |")
    if (to := m.get("twin_val_offsets")) and ci and "twin_val_offsets" in ci["scores"]:
        d = ci["differences"]["twin_val_offsets"]
        add(f"| twin, val-fitted class offsets | {_acc(to, ci, 'twin_val_offsets', 'accuracy')} | "
            f"{to['balanced_accuracy']:.3f} | {_acc(to, ci, 'twin_val_offsets', 'macro_f1')} | | "
            f"{_iv(d['macro_f1'], '+.3f')} | (the twin's own decision rule) |")
    for k, v in m["baselines"].items():
        d = (ci or {}).get("differences", {}).get(k)
        diff = _iv(d["macro_f1"], "+.3f") if d else "n/a"
        verdict = {"ahead": "twin ahead", "behind": "**twin behind**", "tie": "tie"}[d["verdict"]] \
            if d else ("yes" if m["twin_beats"][k] else "**no**")
        add(f"| {BASELINE_NAMES.get(k, k)} | {_acc(v, ci, k, 'accuracy')} | {v['balanced_accuracy']:.3f} "
            f"| {_acc(v, ci, k, 'macro_f1')} | {_f(v.get('log_loss'))} | {diff} | {verdict} |")
    lines += learning_section(tr)
    if m.get("data_size_warnings") is not None:
        add("\n## Data size\n")
        add("\n".join(f"- {w}" for w in m["data_size_warnings"]) if m["data_size_warnings"] else
            f"Enough data by the checks (>= {MIN_TRAIN_TRADES} non-HOLD train actions; val and test hold more than "
            "one class).")
    o = m["oracle"]
    add("\n## Oracle (the simulated trader's true policy)\n")
    if o.get("available"):
        add(f"Matched {o['n_matched']} rows ({o['coverage']:.0%} of the scored rows).\n")
        add("| quantity | value |\n|---|---|")
        for k, label in [
            ("expected_accuracy", "Bayes expected accuracy (mean max pi)"),
            ("argmax_accuracy", "argmax pi accuracy vs recorded actions"),
            ("argmax_macro_f1", "argmax pi macro-F1 vs recorded actions"),
            ("log_loss", "true-policy log-loss"),
            ("drawn_vs_discretised_agreement", "agreement: truth's drawn action vs pipeline's class"),
            ("twin_macro_f1_matched", "twin macro-F1 on matched rows"),
            ("twin_fraction_macro_f1", "twin macro-F1 / oracle macro-F1"),
            ("twin_fraction_accuracy", "twin accuracy / argmax pi accuracy"),
        ]:
            add(f"| {label} | {_f(o.get(k))} |")
    else:
        add(f"Not available: {o.get('reason')}.")
    s = m["rtg_sweep"]
    add("\n## RTG sweep\n")
    add("Share of each predicted action as the target RTG moves (honest conditioning). The "
        "default grid spans the realised RTG_t the model saw on the train split, "
        f"{_f(s.get('train_rtg_p05'), '+.2%')} .. {_f(s.get('train_rtg_p95'), '+.2%')} (5th..95th "
        "percentile).\n")
    add("| target | " + " | ".join(ACTIONS) + " | mean direction | trade rate |")
    add("|---" * (len(ACTIONS) + 3) + "|")
    for i, x in enumerate(s["targets"]):
        cells = " | ".join(f"{v:.2f}" for v in s["pred_share"][i])
        add(f"| {x:+.2%} | {cells} | {s['mean_direction'][i]:+.3f} | {s['trade_rate'][i]:.3f} |")
    add(f"\nMonotonicity: Spearman(target, mean Up-equivalent direction) = "
        f"{_f(s['spearman_direction'], '.2f')}; Spearman(target, trade rate) = "
        f"{_f(s['spearman_trade_rate'], '.2f')}.")
    if e := s.get("effect"):
        add(f"Effect size: across the grid the mean direction (scale -1..+1) moves by "
            f"{e['direction_range']:.3f}, the trade rate by {100 * e['trade_rate_range']:.1f} "
            f"percentage points and the largest class share ({e['largest_share_class']}) by "
            f"{100 * e['largest_share_change']:.1f} points: **{e['size']}**. A Spearman of +-1 "
            "says only that a change is monotone, not that it is large.")
    add(f"\n![RTG sweep]({SWEEP_PNG})\n")
    lines += backtest_section(m["backtest"], m["split"])
    r = m["distilled_rules"]
    add(f"## Distilled rules (decision tree, depth {r['max_depth']}, {r['n_leaves']} leaves)\n")
    add(f"Fitted to the twin's predictions on the train split. Fidelity to the twin: "
        f"{_f(r['fidelity_train'])} (train), {_f(r['fidelity_eval'])} ({m['split']}); accuracy "
        f"against the trader on {m['split']}: {_f(r['accuracy_vs_trader'])}, macro-F1 "
        f"{_f(r['macro_f1_vs_trader'])}. Thresholds are in each feature's own units (in "
        "brackets); a split whose two sides predict the same class is shown as one leaf.\n")
    add("```\n" + r["rules"].rstrip() + "\n```\n")
    return "\n".join(lines) + "\n"


_METRICS = [("accuracy", "accuracy (fraction of bars)"), ("balanced_accuracy", "balanced accuracy"),
            ("macro_f1", "macro-F1 (mean over classes)"), ("log_loss", "log-loss (nats per bar)"),
            ("rtg_mae", "RTG MAE (fraction of capital)")]


def _iv(v, fmt: str = ".3f") -> str:
    return f"{format(v[0], fmt)} [{format(v[1], fmt)}, {format(v[2], fmt)}]"


def _acc(v: dict, ci: dict | None, name: str, key: str) -> str:
    """A metric with its 95 % interval from the bootstrap, or the point value alone."""
    if ci and name in ci["scores"]:
        return _iv(ci["scores"][name][key])
    return f"{v[key]:.3f}"


def learning_section(tr: dict) -> list[str]:
    """The learning-curve section: the plot and the baselines' val macro-F1 in words."""
    if not tr.get("history"):
        return []
    base = ", ".join(f"{BASELINE_NAMES.get(k, k)} {v:.3f}"
                     for k, v in (tr.get("val_baselines_macro_f1") or {}).items())
    best = max(tr["history"], key=lambda h: h["val_macro_f1"])
    return ["\n## Learning curve (val split)\n",
            f"The twin's best val macro-F1 is {best['val_macro_f1']:.3f} (epoch {best['epoch']}); "
            f"the baselines on the same val rows: {base or 'n/a'}.\n",
            f"![learning curve]({CURVE_PNG})\n"]


def _ci(v: dict) -> str:
    lo, hi = v["mean_ci95_usdc"]
    return f"{_f(v['mean_per_market_usdc'], '+.3f')} [{_f(lo, '+.3f')}, {_f(hi, '+.3f')}]"


_ROWS = [("total P&L (USDC)", lambda v: _f(v["total_usdc"], "+.2f")),
         ("mean per market (USDC) [95 % interval]", _ci),
         ("hit rate (markets traded with P&L > 0)", lambda v: _f(v["hit_rate"])),
         ("markets traded / markets", lambda v: f"{v['markets_traded']} / {v['markets']}"),
         ("daily Sharpe (annualised x sqrt 365; UTC days)", lambda v: f"{_f(v['sharpe_daily'])} "
          f"({_f(v['sharpe_annualised'], '.2f')}; {v['days']} days)"),
         ("max drawdown (USDC)", lambda v: _f(v["max_drawdown_usdc"], ".2f"))]


def backtest_section(b: dict, split: str) -> list[str]:
    """The report's backtest section (markdown lines) from run_backtest's summary."""
    fm = b["fee_model"]
    out = ["## Backtest: the twin as a taker at Polymarket's quotes, after fees\n"]
    if not b.get("available"):
        return out + [f"Not available: {b.get('reason')}. Without quotes nothing is filled (no "
                      f"prices are guessed). The trader's P&L on these rows before fees: "
                      f"{b['trader_total_pnl_usdc']:+.2f} USDC.\n"]
    sizes = ", ".join(f"{k} {v:+g}" for k, v in b["class_sizes"].items())
    cap = b["inventory_cap_shares"]
    out.append(f"The bot decides at each bar's start from the twin's class (honest target) and "
               f"trades that class's train-split median size (Up-equivalent shares: {sizes}) as "
               f"a taker at the first quote at or after the decision + {b['latency_s']:g} s: buy "
               "at the ask, sell at the bid, Down at 1 - Up; held tokens are sold first; "
               "|Up - Down| held per market stays <= "
               f"{'no cap' if cap is None else f'{cap:g} shares'}; positions settle at 1 or 0. "
               f"Taker fee = shares x {fm['rate']:g} x (p (1 - p))^{fm['exponent']:g} "
               f"({fm['source']}), taken in tokens on a buy and in USDC on a sell; makers pay 0 "
               "(their rebates are not modelled). Intervals: 95 % bootstrap over the "
               f"{b['markets']} markets ({b['bootstrap_resamples']} resamples).\n")
    bot, tr = b["bot"], b["trader"]
    cols = [bot["before_fees"], bot["after_fees"], tr["before_fees"], tr["after_fees"]]
    out += ["| quantity | bot before fees | bot after fees | trader before fees | "
            "trader after fees |", "|---|---|---|---|---|"]
    for label, fn in _ROWS:
        out.append(f"| {label} | " + " | ".join("unknown" if v is None else fn(v) for v in cols) + " |")
    out.append(f"\nThe bot paid {bot['fees_usdc']:.2f} USDC of fees on {bot['fills']} fills "
               f"({bot['shares_traded']:.0f} shares, {bot['notional_usdc']:.0f} USDC notional); "
               f"{bot['unfilled_orders']} orders met no quote before the bar's or market's end "
               f"(not filled), {bot['capped_orders']} were cut to the cap. Per-market correlation "
               f"of bot and trader P&L: {_f(b['pnl_correlation_per_market'], '.2f')}.")
    if tr["fees_known"]:
        out.append(f"The trader's fills carry their maker/taker role: its fees were "
                   f"{tr['fees_usdc']:.2f} USDC on {tr['fills']} fills.")
    else:
        out.append(f"The trader's fees are unknown: {1 - (tr['role_known_share'] or 0):.0%} of its "
                   f"{tr['fills']} fills carry no maker/taker role. Were every fill a taker's, "
                   f"they would be {tr['fees_if_all_taker_usdc']:.2f} USDC.")
    rp = b["replay"]
    verdict = {True: "within", False: "**outside**", None: "n/a:"}[rp["within_tolerance"]]
    out.append(f"\nReplay check: the trader's own net shares per bar through the same engine make "
               f"{rp['pnl_before_fees_usdc']:+.2f} USDC before fees against the trader's "
               f"{rp['trader_pnl_usdc']:+.2f} (difference {rp['difference_usdc']:+.2f} USDC, "
               f"{_f(rp['relative_difference'], '.2%')} of the replay's "
               f"{rp['notional_usdc']:.0f} USDC notional: {verdict} the {rp['tolerance']:.0%} "
               "tolerance; it fills at the first quote after the latency, the trader at its own "
               "prices). As a taker at these quotes the trader would have made "
               f"{rp['pnl_after_fees_usdc']:+.2f} USDC after fees.\n")
    out.append(f"![equity curves]({EQUITY_PNG})\n")
    r = b["rtg_table"]
    out += ["### Bot P&L after fees by target RTG\n",
            "| target RTG | mean per market (USDC) | 95 % interval (USDC) | total (USDC) |",
            "|---|---|---|---|"]
    for i, x in enumerate(r["targets"]):
        out.append(f"| {x:+.2%} | {_f(r['mean_per_market_usdc'][i], '+.3f')} | "
                   f"{_f(r['ci95_low_usdc'][i], '+.3f')} .. {_f(r['ci95_high_usdc'][i], '+.3f')} | "
                   f"{r['total_usdc'][i]:+.2f} |")
    out.append(f"\nOn the {split} split, {r['verdict']}.\n")
    return out
