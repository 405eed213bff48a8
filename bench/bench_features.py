"""Benchmark: feature_engineering indicators on 1e6 bars against TA-Lib (same run), FFD against a
direct np.convolve reference, and Triple Barrier labelling. Prints a markdown table.

Run: python bench/bench_features.py [--n 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import feature_engineering as fe  # noqa: E402
import labeling as lb  # noqa: E402


def best_of(fn, repeat: int) -> float:
    """Best wall time of `repeat` calls, in milliseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="bars")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per row (best is kept)")
    a = p.parse_args()
    import talib

    rng = np.random.default_rng(0)
    c = 50_000 * np.exp(np.cumsum(rng.normal(0, 1e-3, a.n)))
    o = np.r_[c[0], c[:-1]]
    h, lo = np.maximum(o, c) * 1.0005, np.minimum(o, c) * 0.9995
    rows = [
        ("SMA(20)", lambda: fe.sma(c, 20), lambda: talib.SMA(c, 20)),
        ("EMA(12)", lambda: fe.ema(c, 12), lambda: talib.EMA(c, 12)),
        ("RSI(14)", lambda: fe.rsi(c, 14), lambda: talib.RSI(c, 14)),
        ("MACD hist(12,26,9)", lambda: fe.macd_histogram(c), lambda: talib.MACD(c, 12, 26, 9)),
        ("Bollinger width(20,2)", lambda: fe.bollinger_width(c), lambda: talib.BBANDS(c, 20, 2, 2, 0)),
        # no TA-Lib Yang-Zhang: its three rolling terms cost about three TA-Lib VARs
        ("Yang-Zhang(20) vs 3x talib.VAR", lambda: fe.yang_zhang(o, h, lo, c, 20),
         lambda: [talib.VAR(c, 20) for _ in range(3)]),
        # the same plus the four logs any Yang-Zhang needs (log O/C_prev, C/O, H/C, L/C)
        ("Yang-Zhang(20) vs 3x talib.VAR + 4x talib.LN", lambda: fe.yang_zhang(o, h, lo, c, 20),
         lambda: [talib.VAR(c, 20) for _ in range(3)] + [talib.LN(c) for _ in range(4)]),
    ]
    print(f"n = {a.n:,} bars, best of {a.repeat}\n")
    print("| indicator | ours (ms) | reference (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for name, ours, ref in rows:
        t1, t2 = best_of(ours, a.repeat), best_of(ref, a.repeat)
        print(f"| {name} | {t1:.1f} | {t2:.1f} | {t1 / t2:.2f} |")
    x = np.log(c)
    for d in (0.3, 0.5):
        w = fe.ffd_weights(d, 1e-4)
        t1 = best_of(lambda d=d: fe.frac_diff_ffd(x, d, 1e-4), a.repeat)
        t2 = best_of(lambda w=w: np.convolve(x, w, "valid"), max(1, a.repeat // 2))
        diff = np.nanmax(np.abs(fe.frac_diff_ffd(x, d, 1e-4)[len(w) - 1:] - np.convolve(x, w, "valid")))
        print(f"| FFD d={d} (width {len(w)}) vs np.convolve, max diff {diff:.1e} | {t1:.1f} | {t2:.1f} "
              f"| {t1 / t2:.2f} |")
    t_d = best_of(lambda: fe.choose_d(x[:100_000]), 1)
    print(f"| choose_d on 100,000 bars (21-point grid, ADF) | {t_d:.1f} | - | - |")
    inv = np.sign(rng.normal(size=a.n)) * (rng.random(a.n) < 0.3)
    seg = np.zeros(a.n, int)
    ref = lb.entry_reference(c, o, seg)
    ev = np.flatnonzero(inv != 0)[: a.n // 10]
    t_tb = best_of(lambda: lb.triple_barrier((o, h, lo, c), ref, lb.segment_last(seg), ev,
                                             inv[ev], 0.002, 0.002, 16), max(1, a.repeat // 2))
    print(f"| triple_barrier, {len(ev):,} events, horizon 16 | {t_tb:.1f} | - | - |")


if __name__ == "__main__":
    main()
