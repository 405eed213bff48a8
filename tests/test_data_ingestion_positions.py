"""The ledger's average-cost recursion (_ingestion_positions.average_cost) against the scalar
loop it replaced: bit-identical on random fills with exact closes, flips, 1e-9 edges, sells from
flat and fills after the settlement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import _ingestion_positions


def _average_cost_loop(new, settle, d, p, pv):
    """The scalar average-cost recursion (the ledger's loop before it was vectorised across
    groups): the reference that average_cost must match bit for bit."""
    n, eps = len(new), 1e-9
    q_out, c_out, r_out = np.zeros(n), np.zeros(n), np.zeros(n)
    oversold, post = np.zeros(n, bool), np.zeros(n, bool)
    q = c = 0.0
    done = False
    for i in range(n):
        if new[i]:
            q = c = 0.0
            done = False
        r = 0.0
        di, pi, pvi = float(d[i]), float(p[i]), float(pv[i])
        if settle[i]:
            r, q, c, done = q * pvi - c, 0.0, 0.0, True
        elif done:
            r = di * (pvi - pi)
            post[i] = True
        elif q == 0.0 or (q > 0) == (di > 0):
            q, c = q + di, c + di * pi
        else:
            sgn = 1.0 if q > 0 else -1.0
            avg = c / q
            close = min(abs(di), abs(q))
            r = close * (pi - avg) * sgn
            q -= sgn * close
            c = avg * q
            rem = di + sgn * close
            if abs(rem) > eps:
                q, c = rem, rem * pi
            if abs(q) < eps:
                q = c = 0.0
        oversold[i] = (not settle[i]) and di < 0 and q < -eps and not done
        q_out[i], c_out[i], r_out[i] = q, c, r
    return q_out, c_out, r_out, oversold, post


@pytest.mark.parametrize("seed", range(6))
def test_average_cost_is_the_scalar_recursion_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, [3, 40, 400, 5, 60, 12][seed], rng.integers(1, 300))
    n = int(lens.sum())
    new = np.zeros(n, bool)
    new[np.r_[0, np.cumsum(lens)[:-1]]] = True
    size = np.where(rng.random(n) < 0.3, rng.integers(1, 4, n), rng.uniform(0.01, 50, n))
    d = np.where(rng.random(n) < 0.55, 1.0, -1.0) * size
    # exact closes (-q) and remainders at the 1e-9 edge, computed from a running net per group
    net = pd.Series(d).groupby(np.cumsum(new)).cumsum().shift(1, fill_value=0.0).to_numpy()
    edge = rng.random(n)
    d = np.where(edge < 0.08, -net, d)
    d = np.where((edge > 0.08) & (edge < 0.12), -net * (1 + 1e-12) - 5e-10, d)
    d = np.where(d == 0.0, 1.0, d)
    p = np.round(rng.uniform(0.01, 0.99, n), rng.integers(2, 6))
    pv = rng.integers(0, 2, n).astype(float)
    settle = rng.random(n) < 0.1  # anywhere: before, between and after fills, even twice
    got = _ingestion_positions.average_cost(new, settle, d, p, pv)
    want = _average_cost_loop(new, settle, d, p, pv)
    for name, a, b in zip(("q", "c", "realized", "oversold", "post_end"), got, want, strict=True):
        assert a.dtype == b.dtype, name
        view = (lambda x: x.view(np.int64)) if a.dtype == np.float64 else (lambda x: x)
        assert np.array_equal(view(a), view(b)), name  # bit patterns: -0.0 and ulps count
    q = want[0]
    flips = (q[1:] * q[:-1] < 0) & ~new[1:]  # long -> short or back within one group
    assert want[3].any() and want[4].any() and (q == 0.0).any() and flips.any()  # branches ran
