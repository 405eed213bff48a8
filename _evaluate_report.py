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


def write_plots(out: Path, twin: dict, sweep: dict, curve: pd.DataFrame | None, backtest: dict,
                split: str) -> list[str]:
    """Write the confusion matrix, RTG sweep and (curve not None) equity PNGs; return names."""
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

    if curve is None:
        return [CONFUSION_PNG, SWEEP_PNG]
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
    lines += backtest_section(m["backtest"], m["split"])
    r = m["distilled_rules"]
    add(f"## Distilled rules (decision tree, depth {r['max_depth']}, {r['n_leaves']} leaves)\n")
    add(f"Fitted to the twin's predictions on the train split. Fidelity to the twin: "
        f"{_f(r['fidelity_train'])} (train), {_f(r['fidelity_eval'])} ({m['split']}); accuracy "
        f"against the trader on {m['split']}: {_f(r['accuracy_vs_trader'])}, macro-F1 "
        f"{_f(r['macro_f1_vs_trader'])}.\n")
    add("```\n" + r["rules"].rstrip() + "\n```\n")
    return "\n".join(lines) + "\n"


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
