"""The twin zoo's ablation table: several bench_twin_zoo.py runs on the same traders, side by side.

Each run is a `twin_zoo.csv` written by bench_twin_zoo.py (one row per trader, the macro-F1s with
their 95 % intervals). Runs must hold the same traders (same --seed and --traders; variants use
--data_from so they score the very same simulated trades). Prints a markdown table: per trader
the oracle, and per run the twin's and HistGradientBoosting's macro-F1 and their paired
difference; then per run the mean twin / oracle and HistGradientBoosting / oracle with a 95 %
bootstrap interval over traders, and the count of traders where the twin is ahead of, tied with
or behind HistGradientBoosting (the per-trader paired interval excludes 0 or not).

Run: `python bench/zoo_ablations.py seed=reports/zoo/twin_zoo.csv ext=reports/zoo_ext/twin_zoo.csv`
(`--traders N` keeps the first N rows of each, `--only 2,3,7` those trader indices).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def mean_interval(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-trader values and its 95 % percentile bootstrap interval over traders."""
    rng = np.random.default_rng(seed)
    boot = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return float(x.mean()), *np.percentile(boot, [2.5, 97.5]).tolist()


def table(runs: dict[str, pd.DataFrame]) -> str:
    """The markdown table and summary lines (see the module docstring)."""
    first = next(iter(runs.values()))
    head = "| # | family | interval | oracle | " + " | ".join(
        f"{n}: twin | {n}: HistGB | {n}: twin - HistGB" for n in runs) + " |"
    lines = [head, "|---" * (4 + 3 * len(runs)) + "|"]
    for i, r in first.iterrows():
        cells = [str(int(r["index"])), r["family"], r["interval"], f"{r['oracle']:.3f}"]
        for df in runs.values():
            x = df.loc[i]
            cells += [f"{x['twin']:.3f}", f"{x['hist_gradient_boosting']:.3f}",
                      f"{x['twin_minus_hgb']:+.3f} [{x['twin_minus_hgb_lo']:+.3f}, {x['twin_minus_hgb_hi']:+.3f}]"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| run | twin / oracle, mean [95 %] | HistGB / oracle, mean [95 %] | twin - HistGB, mean | "
                 "ahead / tie / behind |")
    lines.append("|---|---|---|---|---|")
    for name, df in runs.items():
        tw = mean_interval((df["twin"] / df["oracle"]).to_numpy())
        hg = mean_interval((df["hist_gradient_boosting"] / df["oracle"]).to_numpy())
        ahead = int((df["twin_minus_hgb_lo"] > 0).sum())
        behind = int((df["twin_minus_hgb_hi"] < 0).sum())
        lines.append(f"| {name} | {tw[0]:.3f} [{tw[1]:.3f}, {tw[2]:.3f}] | {hg[0]:.3f} [{hg[1]:.3f}, "
                     f"{hg[2]:.3f}] | {df['twin_minus_hgb'].mean():+.3f} | {ahead} / "
                     f"{len(df) - ahead - behind} / {behind} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="name=path/to/twin_zoo.csv, in table order")
    p.add_argument("--traders", type=int, default=None, help="keep the first N traders of each run")
    p.add_argument("--only", default=None, help="comma list of trader indices to keep (runs made with --only)")
    a = p.parse_args()
    keep = None if a.only is None else {int(i) for i in a.only.split(",")}
    runs = {}
    for spec in a.runs:
        name, _, path = spec.partition("=")
        df = pd.read_csv(path).sort_values("index")
        df = (df if keep is None else df[df["index"].isin(keep)]).reset_index(drop=True)
        runs[name] = df.head(a.traders) if a.traders else df
    n = {len(df) for df in runs.values()}
    if len(n) != 1:
        raise SystemExit(f"zoo_ablations: runs hold different numbers of traders {sorted(n)}: use --traders")
    fams = {tuple(df["family"]) for df in runs.values()}
    if len(fams) != 1:
        raise SystemExit("zoo_ablations: runs hold different traders (families differ row by row)")
    print(table(runs))


if __name__ == "__main__":
    main()
