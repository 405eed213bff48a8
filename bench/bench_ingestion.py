"""Benchmark of data_ingestion on demo sets (not a test: prints figures, asserts nothing).

For each --days set (demo_data.py momentum, 1 trader, seed 0, generated into a temp dir) it
prints the JSON bytes, the wall time of a plain `orjson.loads` of the same files (read + loads,
one process), and per (bar interval, workers) run the ingestion's best wall time, events/s, the
median ratio to a plain loads timed just before each run, and the peak RSS against the JSON
bytes. Each ingestion runs in a fresh process, so its peak RSS (VmHWM, and the largest pool
worker's ru_maxrss) is that run's alone.
With several --days sets it prints the time ratio of the largest to the smallest at 1 worker,
15min. Targets (issue 22): <= 5x loads at 1 worker on 30 days; 365 days <= 13x the 30-day time;
peak RSS <= 2x the JSON bytes.

Run: python bench/bench_ingestion.py [--days 30 365] [--repeat 3] [--tmp /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from data_ingestion import IngestionConfig, run
t0 = time.perf_counter()
bars = run(IngestionConfig(data_dir={data!r}, out_dir={out!r}, bar_interval={iv!r}, workers={w}))
wall = time.perf_counter() - t0
rep = json.load(open({out!r} + "/ingestion_report.json"))
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(json.dumps({{"wall": wall, "events": rep["totals"]["read"], "bars": len(bars),
                   "rss_mb": int(hwm[0].split()[1]) / 1024 if hwm else
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def make_set(root: Path, days: int) -> Path:
    """The demo set of `days` days (one momentum trader, seed 0) under root/merged_trades,
    written by demo_data.py in its own process (this one stays small)."""
    subprocess.run([sys.executable, str(REPO / "demo_data.py"), "--out", str(root / "merged_trades"),
                    "--days", str(days), "--traders", "1", "--strategy", "momentum", "--seed", "0",
                    "--truth_dir", str(root / "truth")], check=True, capture_output=True)
    return root / "merged_trades"


def plain_loads(files: list[Path]) -> float:
    """Wall s of reading and orjson.loads-ing every file in this process."""
    t0 = time.perf_counter()
    for p in files:
        orjson.loads(p.read_bytes())
    return time.perf_counter() - t0


def ingest(data: Path, out: Path, interval: str, workers: int) -> dict:
    """One ingestion run in a fresh process -> its wall time, events, bars and peak RSS."""
    code = CHILD.format(repo=str(REPO), data=str(data), out=str(out), iv=interval, w=workers)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, nargs="+", default=[30, 365], help="demo set lengths")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (30-day set; "
                    "sets over 100 days run once)")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the sets are generated")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} cores, load average {os.getloadavg()[0]:.1f}")
    base = {}
    for days in sorted(args.days):
        with tempfile.TemporaryDirectory(dir=args.tmp, prefix=f"bench_ingest_{days}d_") as tmp:
            t0 = time.perf_counter()
            data = make_set(Path(tmp), days)
            files = sorted(data.rglob("*.json"))
            mb = sum(p.stat().st_size for p in files) / 2**20
            repeat = args.repeat if days <= 100 else 1
            loads = min(plain_loads(files) for _ in range(repeat + 1))  # the first warms the cache
            print(f"{days} days: {len(files):,} files, {mb:,.1f} MiB JSON (generated in "
                  f"{time.perf_counter() - t0:.0f} s); plain orjson.loads {loads:.2f} s")
            runs = [("15min", 1), ("1min", 1), ("15min", 0)] if days <= 100 else [("15min", 1)]
            for interval, workers in runs:
                # each run paired with a plain loads timed just before it: this host's speed
                # drifts with its load, so a ratio compares timings taken seconds apart
                pairs = [(plain_loads(files), ingest(data, Path(tmp) / "out", interval, workers))
                         for _ in range(repeat)]
                best = min((g for _, g in pairs), key=lambda g: g["wall"])
                ratio = float(np.median([g["wall"] / ref for ref, g in pairs]))
                rss = max(max(g["rss_mb"], g["worker_rss_mb"]) for _, g in pairs)
                print(f"  bars {interval:>5} workers {workers or cores}: {best['wall']:.2f} s, "
                      f"{best['events'] / best['wall']:,.0f} events/s ({best['events']:,} events, "
                      f"{best['bars']:,} bars), {ratio:.2f}x plain loads (median of pairs); "
                      f"peak RSS {rss:,.0f} MiB = {rss / mb:.2f}x the JSON bytes")
                if (interval, workers) == ("15min", 1):
                    base[days] = best["wall"]
    if len(base) > 1:
        lo, hi = min(base), max(base)
        print(f"{hi} days / {lo} days at 1 worker, 15min: {base[hi] / base[lo]:.1f}x the time "
              f"for {hi / lo:.1f}x the days")


if __name__ == "__main__":
    main()
