"""The twin report's outputs: atomic writes, the three PNG plots and the markdown report.

Promise: `atomic_write(path, obj)` writes a DataFrame (parquet), a dict (JSON via orjson), a str
(text) or bytes to a temp file in the target directory and renames it over `path`, so a partial
file never appears. `write_plots(out, twin, sweep, curve, split)` writes confusion_matrix.png,
rtg_sweep.png and equity_curves.png (matplotlib Agg, labelled axes) and returns their names.
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
from data_ingestion import atomic_write as _atomic_write

CONFUSION_PNG, SWEEP_PNG, EQUITY_PNG = "confusion_matrix.png", "rtg_sweep.png", "equity_curves.png"
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


def write_plots(out: Path, twin: dict, sweep: dict, curve: pd.DataFrame, split: str) -> list[str]:
    """Write the confusion matrix, RTG sweep and equity curves PNGs into `out`; return names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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

    # Equity curves: cumulative P&L of the bot (twin's actions at class-median sizes) vs trader.
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.plot(curve["bar_start"], curve["trader_equity"], label="trader")
    ax.plot(curve["bar_start"], curve["bot_equity"], label="twin bot (class-median sizes)")
    ax.set_xlabel("bar start (UTC)")
    ax.set_ylabel("cumulative P&L (USDC)")
    ax.set_title(f"Backtest on the {split} split")
    ax.legend()
    fig.autofmt_xdate()
    _save(fig, out / EQUITY_PNG)
    return [CONFUSION_PNG, SWEEP_PNG, EQUITY_PNG]


def _f(v, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def write_report(m: dict) -> str:
    """report.md from evaluate.py's metrics dict: every section, tables in markdown."""
    t, lines = m["twin"], []
    add = lines.append
    add(f"# Twin report: {m['split']} split\n")
    add(f"Model `{m['config']['model']}`, data `{m['config']['processed']}`, {m['rows']} scored rows.")
    add(f"Honest conditioning: target RTG {m['target_rtg']:.4%} of capital at each window start, "
        "decremented by the returns observed before each bar; previous actions are the trader's "
        "own (the past is observable). No future information enters the twin's inputs.\n")
    add("## Twin metrics\n")
    add("| metric | twin (honest) | leaky reference (realised RTG) |\n|---|---|---|")
    leaky = m.get("leaky_reference_realised_rtg") or {}
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "rtg_mae"):
        add(f"| {k} | {_f(t.get(k), '.4f')} | {_f(leaky.get(k), '.4f')} |")
    add("\nThe leaky reference conditions on the realised return-to-go, which uses the future; it "
        "is shown only to measure how much the twin leans on RTG, never as the twin's score.\n")
    add("| class | precision | recall | support |\n|---|---|---|---|")
    for name, v in t["per_class"].items():
        add(f"| {name} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |")
    add(f"\n![confusion matrix]({CONFUSION_PNG})\n")
    add("## Baselines (fitted on train, same rows; inputs: state + previous action)\n")
    add("| model | accuracy | balanced acc. | macro-F1 | log-loss | twin beats it (macro-F1)? |")
    add("|---|---|---|---|---|---|")
    add(f"| **twin** | {t['accuracy']:.3f} | {t['balanced_accuracy']:.3f} | {t['macro_f1']:.3f} "
        f"| {_f(t.get('log_loss'))} | |")
    for k, v in m["baselines"].items():
        beats = "yes" if m["twin_beats"][k] else "**no**"
        add(f"| {BASELINE_NAMES.get(k, k)} | {v['accuracy']:.3f} | {v['balanced_accuracy']:.3f} "
            f"| {v['macro_f1']:.3f} | {_f(v.get('log_loss'))} | {beats} |")
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
        f"{_f(s['spearman_trade_rate'], '.2f')}.\n\n![RTG sweep]({SWEEP_PNG})\n")
    b = m["backtest"]
    add("## Backtest\n")
    add("The bot trades the class-median net shares (train split) of the twin's action in each "
        "bar and holds to the market's settlement. A trade is valued at the per-share P&L the "
        "market gave in that bar: where the trader traded from flat, pnl / net_shares (the "
        "trader's own fill prices, settled); elsewhere, when the parquet carries the bar's "
        "opening mid, settlement - open; bot trades with no observed price are counted, not "
        "valued (bot_trades_valued_share). Fees are ignored, as in the ingestion.\n")
    add("| quantity | value |\n|---|---|")
    for k in ("bot_total_pnl", "trader_total_pnl", "pnl_correlation", "bot_hit_rate",
              "trader_hit_rate", "bot_trading_bars", "trader_trading_bars", "bot_trades_valued_share",
              "bot_trades_valued_by_fills", "bot_trades_valued_by_mid"):
        v = b.get(k)
        add(f"| {k} | {v if isinstance(v, int) else _f(v)} |")
    add(f"\n![equity curves]({EQUITY_PNG})\n")
    r = m["distilled_rules"]
    add(f"## Distilled rules (decision tree, depth {r['max_depth']}, {r['n_leaves']} leaves)\n")
    add(f"Fitted to the twin's predictions on the train split. Fidelity to the twin: "
        f"{_f(r['fidelity_train'])} (train), {_f(r['fidelity_eval'])} ({m['split']}); accuracy "
        f"against the trader on {m['split']}: {_f(r['accuracy_vs_trader'])}, macro-F1 "
        f"{_f(r['macro_f1_vs_trader'])}.\n")
    add("```\n" + r["rules"].rstrip() + "\n```\n")
    return "\n".join(lines) + "\n"
