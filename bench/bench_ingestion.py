"""Benchmark of data_ingestion on the 30-day demo set (not a test: prints figures, asserts nothing).

Prints events/s, peak RSS and the ratio of ingestion wall time to a plain `orjson.loads` of the
same files (goal <= 2x), for --workers 1 and all cores, at 15min and 1min bars. The demo set is
generated with demo_data.py into a temp dir (synthetic files of the same shape if demo_data.py
is missing). Record the figures in BENCHMARKS.md "## Ingestion".

Run: python bench/bench_ingestion.py [--days 30] [--repeat 3] [--fills 750 --days 7]
(--fills N: a synthetic heavy trader with N fills per market, where the ledger matters)
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_ingestion import IngestionConfig, run  # noqa: E402


def synthetic_set(root: Path, days: int, seed: int = 0, fills: int = 1) -> None:
    """Seed-format files shaped like the demo: 1 trader, ~180 events per 15-minute market, and
    `fills` trades per market (1 by default; gabagool22 made 749 in one market, both tokens,
    buys and sells)."""
    rng = np.random.default_rng(seed)
    start = 1767571200
    folder = root / "0x" f"{seed:040x}"
    folder.mkdir(parents=True)
    for k in range(days * 96):
        s = start + 900 * k
        ev = [{"type": "price_change", "t": int(s * 1000 + x), "best_bid": 0.49, "best_ask": 0.51,
               "mid": 0.5} for x in np.sort(rng.integers(0, 900_000, 150))]
        ev += [{"type": "ohlcv", "t": (s + 60 * m) * 1000, "open": 0.5, "high": 0.52,
                "low": 0.48, "close": 0.51, "volume": 100.0} for m in range(15)]
        ev += [{"type": "ohlcv", "t": (s + 60 * m) * 1000, "open": 97000.0, "high": 97010.0,
                "low": 96990.0, "close": 97005.0, "volume": 12.0} for m in range(15)]
        if fills == 1:
            ev += [{"type": "trade", "t": (s + 5) * 1000, "price": 0.51, "side": "BUY",
                    "size": 20.0, "usdc": 10.2, "outcome": "Up"}]
        else:  # a heavy trader: both tokens, 70 % buys, sizes 1-50 shares
            px = np.round(rng.uniform(0.05, 0.95, fills), 2)
            ev += [{"type": "trade", "t": int(s * 1000 + x), "price": float(p),
                    "side": "BUY" if b else "SELL", "size": float(z),
                    "outcome": "Up" if u else "Down"}
                   for x, p, b, z, u in zip(np.sort(rng.integers(0, 900_000, fills)), px,
                                            rng.random(fills) < 0.7,
                                            np.round(rng.uniform(1, 50, fills), 2),
                                            rng.random(fills) < 0.5, strict=True)]
        doc = {"slug": f"btc-updown-15m-{s}", "resolution": "Up", "prices": ev}
        (folder / f"btc-updown-15m-{s}_prices.json").write_bytes(orjson.dumps(doc))


def make_set(root: Path, days: int, fills: int = 1) -> str:
    if fills > 1:
        synthetic_set(root / "merged_trades", days, fills=fills)
        return f"synthetic heavy trader, {fills} fills per market"
    try:
        from demo_data import DemoConfig
        from demo_data import run as demo_run
    except ImportError:
        synthetic_set(root / "merged_trades", days)
        return "synthetic (demo_data.py missing)"
    demo_run(DemoConfig(out=str(root / "merged_trades"), days=days,
                        truth_dir=str(root / "truth")))
    return "demo_data.py momentum, 1 trader, seed 0"


def usage() -> tuple:
    """resource usage so far of (this process, its reaped children: the pool's workers)."""
    return resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)


def cpu_s() -> float:
    """CPU seconds of this process plus its reaped children."""
    return sum(u.ru_utime + u.ru_stime for u in usage())


def minor_faults() -> tuple[int, int]:
    """Minor page faults so far (this process, its reaped children). A fork pool adds
    copy-on-write faults to both sides; `fault_cost_us` says what one costs on this host."""
    me, kids = usage()
    return me.ru_minflt, kids.ru_minflt


def fault_cost_us() -> float:
    """Microseconds per first touch of a fresh anonymous page (best of 3 x 4,096 pages)."""
    best = float("inf")
    for _ in range(3):
        with mmap.mmap(-1, 4096 * 4096) as m:
            f0, t0 = minor_faults()[0], time.perf_counter()
            np.frombuffer(m, np.uint8)[::4096] = 1  # one write per page
            dt, n = time.perf_counter() - t0, minor_faults()[0] - f0
        best = min(best, dt / max(n, 1) * 1e6)
    return best


def plain_loads(files: list[Path]) -> tuple[float, float]:
    """(wall s, CPU s) of reading and orjson.loads-ing every file."""
    t0, c0 = time.perf_counter(), cpu_s()
    for p in files:
        orjson.loads(p.read_bytes())
    return time.perf_counter() - t0, cpu_s() - c0


def parallel_loads(files: list[Path], workers: int) -> float:
    """Wall s of plain orjson.loads over the files split across `workers` processes (pool
    started before the clock): how well this machine runs the same work in parallel."""
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(plain_loads, [files[:1]] * workers))  # workers up and warm
        t0 = time.perf_counter()
        list(pool.map(plain_loads, [files[k::workers] for k in range(workers)]))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    ap.add_argument("--fills", type=int, default=1,
                    help="trades per market; > 1 uses a synthetic heavy trader instead of the demo")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = make_set(root, args.days, args.fills)
        data = root / "merged_trades"
        files = sorted(data.rglob("*_prices.json"))
        mb = sum(p.stat().st_size for p in files) / 2**20
        plain_loads(files)  # warm the page cache
        runs = [plain_loads(files) for _ in range(args.repeat)]
        loads_s, loads_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"data: {source}; {len(files)} files, {mb:.1f} MiB; {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"plain orjson.loads: {loads_s:.3f} s wall, {loads_cpu:.3f} s CPU; a minor page "
              f"fault costs {fault_cost_us():.2f} us here")
        cores = os.cpu_count() or 1
        if cores > 1:  # the parallel head-room of this machine, for reading the workers rows
            par = min(parallel_loads(files, cores) for _ in range(args.repeat))
            print(f"plain orjson.loads in {cores} processes: {par:.3f} s wall "
                  f"({loads_s / par:.2f}x of 1 process; {cores}x would be perfect)")
        for interval in ("15min", "1min"):
            for workers in (1, 0):
                # interleaved with a plain-loads timing per repeat: this host's speed drifts
                # by ~30 % over a minute, so each ratio pairs timings taken seconds apart
                walls, cpus, pairs, flts, bars = [], [], [], [], None
                for _ in range(args.repeat):
                    ref = plain_loads(files)
                    cfg = IngestionConfig(data_dir=str(data), out_dir=str(root / "out"),
                                          bar_interval=interval, workers=workers)
                    t0, c0, f0 = time.perf_counter(), cpu_s(), minor_faults()
                    bars = run(cfg)
                    walls.append(time.perf_counter() - t0)
                    flts.append([b - a for a, b in zip(f0, minor_faults(), strict=True)])
                    cpus.append(cpu_s() - c0)
                    pairs.append(walls[-1] / ref[0])
                best, best_cpu = min(walls), min(cpus)
                rep = orjson.loads((root / "out" / "ingestion_report.json").read_bytes())
                n = rep["totals"]["read"]
                print(f"bars {interval:>5} workers {workers or os.cpu_count()}: {best:.3f} s, "
                      f"{n / best:,.0f} events/s ({n:,} events, {len(bars):,} bars), "
                      f"ratio to loads: best/best {best / loads_s:.2f}x, per-pair median "
                      f"{np.median(pairs):.2f}x (min {min(pairs):.2f}x) wall, "
                      f"{best_cpu / loads_cpu:.2f}x CPU (all processes); minor page faults "
                      f"per run (median) {np.median([f[0] for f in flts]):,.0f} main, "
                      f"{np.median([f[1] for f in flts]):,.0f} workers")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: this process {self_mb:.0f} MiB, largest worker {child_mb:.0f} MiB")


if __name__ == "__main__":
    main()
