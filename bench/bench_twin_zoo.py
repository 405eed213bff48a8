"""The twin zoo: does the twin copy traders it was not tuned to? Many simulated traders, each
end to end through the CLIs, scored against their own policy (the oracle) and the baselines.

For each of N traders (families of demo_data's zoo in turn, then their other decision interval,
trader seed = 1000 x --seed + index, its own market path): `demo_data.py --strategy zoo:FAMILY`
-> `pipeline.py --bar_interval <the decision interval>` -> `train_model.py` -> `evaluate.py`, in
a work folder. Per trader it tabulates the test split's macro-F1 of the oracle (argmax of the
true pi), the twin and its fraction of the oracle, the majority class, the previous action,
logistic regression and HistGradientBoosting (evaluate's per-row `pred_<baseline>` columns),
and the agreement of the pipeline's action with the simulator's drawn action, each with a 95 %
bootstrap interval over test markets (1,000 resamples of whole 15-minute markets); the
twin-minus-HistGradientBoosting difference gets a paired interval (same resamples). Then the
mean, the minimum and the count where the twin beats HistGradientBoosting beyond the noise.

Writes `{out}/twin_zoo.csv`, `{out}/twin_zoo.png` and, with --write_benchmarks, the "Twin zoo"
table in BENCHMARKS.md. Sizes (chosen so each test split holds >= 1,000 decisions and 20
traders fit in 2 hours on 2 cores): 84 days at 15min (1,081 test bars), 6 days at 1min (1,168).
Training: the zoo recipe RECIPE (train_model.py flags: a d 64 / 3-layer model with the
piecewise-linear state encoding, lr 1e-3, up to 1,000 optimizer steps at batch 32; the winner of
the ablations in BENCHMARKS.md) unless --train_args says otherwise; `--train_args ""` trains
train_model's own defaults (the seed's shape) for --epochs.

Run: `python bench/bench_twin_zoo.py --traders 20 --seed 0 --features extended` (the full run;
`--features seed` for the 17 features), `--traders 4` (iteration);
`[--families trend,streak] [--days D] [--epochs E] [--workdir /tmp/twin_zoo] [--out reports/zoo]`;
`--only 7,8` runs those indices of the draw only; `--reuse` scores the runs already finished in --workdir instead of rerunning them. Ablations:
`--features extended` (pipeline.py's state set), `--train_args "--steps 300 --rtg_input honest"`
(extra train_model.py flags) and `--data_from /tmp/twin_zoo` (reuse an earlier work folder's
simulated trades and truth, so every variant is scored on the very same traders).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import _evaluate_analysis as ea  # noqa: E402
from _demo_zoo import FAMILIES  # noqa: E402
from action_discretization import N_ACTIONS  # noqa: E402

DAYS = {"15min": 84, "1min": 6}
BASELINES = ("majority", "previous_action", "logistic_regression", "hist_gradient_boosting")
SCORES = ("oracle", "twin", *BASELINES)
RECIPE = "--steps 1000 --patience 40 --d_model 64 --n_layers 3 --n_heads 4 --state_bins 16 --lr 1e-3"
"""The zoo's train_model.py flags (BENCHMARKS.md "Twin zoo: ablations")."""


def draw_traders(n: int, seed: int, families: list[str]) -> list[dict]:
    """Trader j: family j mod F at its (j div F)-th interval, in turn; seed 1000 x seed + j."""
    out = []
    for j in range(n):
        fam = families[j % len(families)]
        ivs = FAMILIES[fam]
        out.append({"index": j, "family": fam, "interval": ivs[(j // len(families)) % len(ivs)],
                    "seed": 1000 * seed + j})
    return out


def _cli(args: list[str], log) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True)
    log.write(f"$ {' '.join(args)}\n{r.stdout}{r.stderr}\n")
    if r.returncode:
        raise RuntimeError(f"{args[0]} exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")


def trader_dir(t: dict, work: Path) -> Path:
    return work / f"{t['index']:02d}_{t['family']}_{t['interval']}"


def run_trader(t: dict, work: Path, days: int, epochs: int, pipeline_args: list[str] = (),
               train_args: list[str] = (), data_from: Path | None = None) -> Path:
    """The four CLIs for one trader; returns its folder (trades, truth, data, models, reports).
    With data_from, the trader's trades and truth are read from that earlier work folder (the
    same simulated trader: ablations of the state or the model skip demo_data)."""
    d = trader_dir(t, work)
    d.mkdir(parents=True, exist_ok=True)
    src = trader_dir(t, data_from) if data_from else d
    p = d / "data" / "processed.parquet"
    with open(d / "log.txt", "w") as log:
        if not data_from:
            _cli(["demo_data.py", "--out", str(d / "trades"), "--truth-dir", str(d / "truth"),
                  "--days", str(days), "--strategy", f"zoo:{t['family']}", "--seed", str(t["seed"]),
                  "--decision-interval", t["interval"]], log)
        _cli(["pipeline.py", "--data_dir", str(src / "trades"), "--output", str(p), "--bar_interval",
              t["interval"], "--force", *pipeline_args], log)
        _cli(["train_model.py", "--processed", str(p), "--output_dir", str(d / "models"),
              "--epochs", str(epochs), "--batch_size", "32", "--device", "cpu", *train_args], log)
        _cli(["evaluate.py", "--model", str(d / "models" / "best_model.pt"), "--out",
              str(d / "reports"), "--truth_dir", str(src / "truth"), "--no-leaky_reference",
              "--sweep_steps", "2"], log)
    return d


# ---------------------------------------------------------------- scoring
def scored_rows(d: Path, truth_dir: Path | None = None) -> pd.DataFrame:
    """Test rows of one trader: y (pipeline action), drawn, one column per SCORES entry, block."""
    pr = pd.read_parquet(d / "reports" / "predictions.parquet")
    truth_dir = truth_dir or d / "truth"
    truth = pd.concat([pd.read_parquet(f) for f in sorted(truth_dir.glob("*.parquet"))])
    truth["bar_start"] = pd.to_datetime(truth["decision_time"], utc=True).astype(pr["bar_start"].dtype)
    pi = truth[[f"prob_{k}" for k in range(N_ACTIONS)]].to_numpy()
    truth = truth.assign(oracle=pi.argmax(1), drawn=truth["action"])[["address", "bar_start", "oracle", "drawn"]]
    m = pr.merge(truth, on=["address", "bar_start"], how="inner")
    out = pd.DataFrame({"y": m["action"].astype(int), "drawn": m["drawn"].astype(int),
                        "twin": m["pred"].astype(int), "oracle": m["oracle"].astype(int)})
    for b in BASELINES:
        out[b] = m[f"pred_{b}"].astype(int)
    out["block"] = m["bar_start"].dt.floor("15min").factorize()[0]  # one 15-minute market
    return out


def bootstrap(rows: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Point values and 95 % percentile intervals over resampled markets (blocks; the report's
    _evaluate_analysis.bootstrap_samples): macro-F1 of every SCORES column against y, the twin /
    oracle fraction, twin - HistGradientBoosting (paired: the same resamples) and the
    drawn-vs-pipeline action agreement (the accuracy of the drawn action against y)."""
    y = rows["y"].to_numpy()
    preds = {c: rows[c].to_numpy() for c in (*SCORES, "drawn")}
    s = ea.bootstrap_samples(y, preds, rows["block"].to_numpy(), n_boot, seed)
    stats = {c: s[c][1] for c in SCORES}
    stats["twin_fraction"] = stats["twin"] / np.maximum(stats["oracle"], 1e-12)
    stats["twin_minus_hgb"] = stats["twin"] - stats["hist_gradient_boosting"]
    stats["agreement"] = s["drawn"][0]
    return {k: tuple(ea.interval(v)) for k, v in stats.items()}


def _fmt(v: tuple) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def table(results: list[dict]) -> tuple[pd.DataFrame, str]:
    """(flat frame for the CSV, markdown table with the summary lines)."""
    flat = []
    for r in results:
        row = {k: r[k] for k in ("index", "family", "interval", "seed", "test_rows", "seconds")}
        for k, v in r["stats"].items():
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = v
        flat.append(row)
    df = pd.DataFrame(flat)
    head = ("| # | family | interval | test rows | oracle | twin | twin / oracle | majority | previous "
            "| logistic | HistGB | twin - HistGB | action agreement |\n|---|---|---|---:|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in results:
        s = r["stats"]
        lines.append(f"| {r['index']} | {r['family']} | {r['interval']} | {r['test_rows']} | "
                     + " | ".join(_fmt(s[k]) for k in ("oracle", "twin", "twin_fraction", *BASELINES,
                                                       "twin_minus_hgb", "agreement")) + " |")
    frac = df["twin_fraction"]
    beats = int((df["twin_minus_hgb_lo"] > 0).sum())
    loses = int((df["twin_minus_hgb_hi"] < 0).sum())
    summary = (f"\nTwin / oracle macro-F1: mean {frac.mean():.3f}, minimum {frac.min():.3f} "
               f"({df.loc[frac.idxmin(), 'family']}); HistGradientBoosting / oracle: mean "
               f"{(df['hist_gradient_boosting'] / df['oracle']).mean():.3f}. Twin minus HistGradientBoosting "
               f"(paired 95 % interval): ahead in {beats}, behind in {loses}, a tie in "
               f"{len(df) - beats - loses} of {len(df)} traders; mean difference "
               f"{df['twin_minus_hgb'].mean():+.3f}.")
    return df, "\n".join(lines) + "\n" + summary


def plot(df: pd.DataFrame, path: Path) -> None:
    """Twin / oracle per trader with its interval, beside the two learned baselines' fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(df)), 4.5))
    frac = df["twin_fraction"]
    ax.errorbar(x, frac, yerr=[frac - df["twin_fraction_lo"], df["twin_fraction_hi"] - frac],
                fmt="o", capsize=3, label="twin / oracle (95 % CI)")
    for b, mk in (("hist_gradient_boosting", "s"), ("logistic_regression", "^"), ("previous_action", "x")):
        ax.plot(x, df[b] / df["oracle"], mk, alpha=0.7, label=f"{b} / oracle")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(x, [f"{f}\n{i}" for f, i in zip(df["family"], df["interval"], strict=True)],
                  rotation=60, fontsize=7)
    ax.set(ylabel="macro-F1 / oracle's macro-F1", title="Twin zoo: test split, per trader")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_benchmarks(md: str, command: str, features: str) -> None:
    """Replace the "Twin zoo" section's table of this state set in BENCHMARKS.md (between its
    markers; a new section at the end when they are missing)."""
    MARK_BEGIN, MARK_END = f"<!-- twin-zoo:{features}:begin -->", f"<!-- twin-zoo:{features}:end -->"
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    block = f"{MARK_BEGIN}\n`{command}` ({time.strftime('%Y-%m-%d')}):\n\n{md}\n{MARK_END}"
    if MARK_BEGIN in text:
        text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## Twin zoo ({features} state set)\n\n{block}\n"
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traders", type=int, default=4, help="number of traders (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="zoo seed (default: %(default)s)")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma list (default: all)")
    p.add_argument("--days", type=int, default=None, help="days per trader (default: 84 at 15min, 6 at 1min)")
    p.add_argument("--epochs", type=int, default=12, help="train_model epochs (default: %(default)s)")
    p.add_argument("--workdir", default="/tmp/twin_zoo", help="work folder (default: %(default)s)")
    p.add_argument("--out", default="reports/zoo", help="CSV and PNG folder (default: %(default)s)")
    p.add_argument("--write_benchmarks", action="store_true", help="update BENCHMARKS.md 'Twin zoo'")
    p.add_argument("--reuse", action="store_true",
                   help="score a trader's finished run in --workdir instead of rerunning it")
    p.add_argument("--features", default="seed", choices=("seed", "extended"),
                   help="pipeline.py --features: the state set (default: %(default)s)")
    p.add_argument("--train_args", default=RECIPE,
                   help="train_model.py flags (default: the zoo recipe, %(default)s)")
    p.add_argument("--data_from", default=None,
                   help="an earlier --workdir whose simulated trades and truth to reuse (ablations)")
    p.add_argument("--only", default=None,
                   help="comma list of trader indices of the --traders draw to run (quick ablations)")
    a = p.parse_args()
    fams = [f.strip() for f in a.families.split(",") if f.strip()]
    bad = [f for f in fams if f not in FAMILIES]
    if bad or a.traders < 1:
        raise SystemExit(f"bench_twin_zoo: unknown families {bad} (use {', '.join(FAMILIES)}) or --traders < 1")
    work, out = Path(a.workdir), REPO / a.out
    out.mkdir(parents=True, exist_ok=True)
    t_all, results = time.perf_counter(), []
    only = None if a.only is None else {int(i) for i in a.only.split(",")}
    for t in draw_traders(a.traders, a.seed, fams):
        if only is not None and t["index"] not in only:
            continue
        t0 = time.perf_counter()
        done = (trader_dir(t, work) / "reports" / "predictions.parquet").exists()
        src = Path(a.data_from) if a.data_from else None
        d = trader_dir(t, work) if a.reuse and done else run_trader(
            t, work, a.days or DAYS[t["interval"]], a.epochs, ["--features", a.features],
            a.train_args.split(), src)
        rows = scored_rows(d, trader_dir(t, src) / "truth" if src else None)
        res = {**t, "test_rows": len(rows), "stats": bootstrap(rows, seed=t["seed"]),
               "seconds": round(time.perf_counter() - t0, 1)}
        results.append(res)
        s = res["stats"]
        print(f"[{t['index']:2d}] {t['family']:<13} {t['interval']:<5} rows {len(rows):5d}  oracle "
              f"{_fmt(s['oracle'])}  twin {_fmt(s['twin'])}  HistGB {_fmt(s['hist_gradient_boosting'])}"
              f"  {res['seconds']:.0f}s", flush=True)
    df, md = table(results)
    df.to_csv(out / "twin_zoo.csv", index=False)
    plot(df, out / "twin_zoo.png")
    wall = time.perf_counter() - t_all
    print(md)
    print(f"{len(results)} traders in {wall / 60:.1f} min; wrote {out / 'twin_zoo.csv'} and {out / 'twin_zoo.png'}")
    if a.write_benchmarks:
        cmd = " ".join(["python bench/bench_twin_zoo.py", *sys.argv[1:]]).replace(" --write_benchmarks", "")
        write_benchmarks(md + f"\n\nWall time: {wall / 60:.1f} min on this 2-core host.", cmd, a.features)


if __name__ == "__main__":
    main()
