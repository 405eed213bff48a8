"""The embedded demo market: a simulated BTC 15-minute Up/Down market and a simulated trader.

Promise: `run(DemoConfig(...))` writes one price file per 15-minute market per trader address in
the R2 layout, `{out}/{address}/btc-updown-15m-{window start, unix s}_prices.json`, in the seed's
JSON format (docs/INTERFACES.md "Input files"): `trade` events (the trader's own fills),
`price_change` events (the Up token's book top, only when the top moves), 1-minute `ohlcv` events
of the Up token (priced in (0, 1)) and of the underlying BTC/USD (priced > 1), `resolution` and
`address`. The truth - pi(a | s) over the five actions and the action drawn, per decision - goes to
`{truth_dir}/{address}.parquet`, outside the input tree, so evaluation can report the oracle.

The world: BTC follows a 1-second GBM with stochastic (OU log-)volatility, an intraday/weekend
volatility profile, Poisson jumps and a mild persistence of 15-minute returns (AR(1), kappa=0.08,
so that momentum has a small edge). The Up token's fair price is the binary-option probability
P(S_end >= S_start | S_now) = Phi(ln(S_now/S_start) / (sigma sqrt(tau))); a market maker requotes
at random seconds (p=0.2/s) around it with noise and a 1-3 tick spread. A market resolves Up iff
the close of its last second (the close of the last BTC bar in the file) >= its open.

No-leakage rule: the trader's state at a decision time t uses only the BTC path up to t (closes
of bars that ended at or before t), the clock, and its own inventory and settled P&L; fills happen
2-18 s after t at the book top in effect then (buys at the ask, sells at the bid; later fills of
one action may walk up to 2 ticks into the book).

Run alone: `python demo_data.py --out downloads/merged_trades --days 30 --traders 1 --strategy
momentum --seed 0` (also `--decision-interval 1min`, `--traded-only`, `--truth-dir`, `--start`).

Decisions where the issue is silent:
- Policies are ordinal softmaxes: logit_a = beta (c_a m - c_a^2 / 2) + b_a with centres
  c = (2, 1, 0, -1, -2) over a standardised signal m, so every class is the argmax somewhere.
  momentum: m = 0.2 z1 + 0.1 z4 + 0.9 (RSI14 - 50) / 12, z1 / z4 the BTC log return over the
  previous 1 / 4 intervals over trailing 4-hour realised vol (z4 also / 2), RSI(14) of the 15-min
  BTC closes <= t (TA-Lib, as the pipeline's state) - RSI-heavy because a twin that sees
  RSI/MACD/FFD learns it from one state (proxy: gradient boosting reaches ~0.9 x the oracle's
  macro-F1); HOLD likelier outside US hours, after recent losses (small), and 1min trades lean
  against the open inventory. mean_reversion: -m. time_of_day: m a sinusoid of the hour, more
  HOLD at weekends. random: fixed probabilities. STRONG is ~25 % of each side's non-HOLD decisions.
- Sizes: BUY/SELL 10-60 shares, STRONG 150-300, split into 1-3 fills. A SELL-side action sells
  Up when the Up inventory covers it, else buys Down; BUY-side mirrors (sells Down, else buys Up).
- At 15min decisions are at each window start; at 1min, at each minute of each window. Positions
  are held to settlement. All traders share one market path; each has its own policy seed.
- Existing files in `out` are overwritten, never deleted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import lfilter
from scipy.special import ndtr
from tqdm import tqdm

from _demo_zoo import (
    CENTRES,
    FAMILIES,
    Knobs,
    World,
    family_policy,
    legacy_policy,
    policy_inputs,
)

log = logging.getLogger("demo_data")

POLICY_ACTIONS = ("STRONG_BUY", "BUY", "HOLD", "SELL", "STRONG_SELL")
"""Action ids 0..4; action_discretization.ACTIONS must be equal (a test checks it)."""
STRATEGIES = ("momentum", "mean_reversion", "time_of_day", "random")
"""The seed's four strategies; a zoo trader is `zoo:FAMILY` (FAMILIES of _demo_zoo)."""
ZOO_PREFIX = "zoo:"
OFF = 8.0  # logit penalty of a class a knob rules out (inventory cap)
INTERVALS = {"15min": 900, "1min": 60}
MARKET_SECONDS = 900
NORMAL_SIZE, STRONG_SIZE = (10.0, 60.0), (150.0, 300.0)  # total shares per decision, by class
BTC_VOL, VOL_OF_VOL, VOL_HALF_LIFE_MIN = 0.50, 0.35, 360.0  # annualised vol, sd of log-vol, OU
JUMPS_PER_DAY, JUMP_SD, TREND_KAPPA = 3.0, 0.0035, 0.08
QUOTE_RATE, QUOTE_NOISE = 0.2, 0.006  # requote probability per second, sd of the quote around fair


@dataclass(frozen=True)
class DemoConfig:
    out: str = "downloads/merged_trades"
    """Input tree to write: {out}/{address}/btc-updown-15m-{start}_prices.json."""
    days: int = 30
    """Simulated days (96 markets each)."""
    traders: int = 1
    """Number of simulated traders (addresses); all trade the same market path."""
    strategy: str = "momentum"
    """Policy: momentum | mean_reversion | time_of_day | random | zoo:FAMILY (_demo_zoo.FAMILIES)."""
    seed: int = 0
    """Seed of the market path and (with the trader index) of each policy."""
    decision_interval: str = "15min"
    """When the trader decides: 15min (each window start) or 1min (each minute of a window)."""
    traded_only: bool = False
    """Write files only for markets the trader traded (default: every market)."""
    truth_dir: str = "data/demo_truth"
    """Where {address}.parquet with pi and the drawn action per decision goes (outside `out`)."""
    start: str = "2026-01-05"
    """First market's day (UTC midnight), YYYY-MM-DD."""


class DemoError(ValueError):
    """A user error (bad flag value); main() prints it as one line and exits 2."""


def check_config(cfg: DemoConfig) -> int:
    """Validate cfg; return the start as Unix seconds. Raises DemoError naming the bad field."""
    zoo = cfg.strategy.removeprefix(ZOO_PREFIX) if cfg.strategy.startswith(ZOO_PREFIX) else None
    if cfg.strategy not in STRATEGIES and zoo not in FAMILIES:
        raise DemoError(f"--strategy {cfg.strategy!r} is unknown; use one of {', '.join(STRATEGIES)} "
                        f"or zoo:FAMILY with FAMILY one of {', '.join(FAMILIES)}")
    if cfg.decision_interval not in INTERVALS:
        raise DemoError(f"--decision-interval {cfg.decision_interval!r} is unknown; use 15min or 1min")
    if zoo is not None and cfg.decision_interval not in FAMILIES[zoo]:
        raise DemoError(f"--strategy {cfg.strategy} decides at {' or '.join(FAMILIES[zoo])}, not "
                        f"--decision-interval {cfg.decision_interval}")
    if cfg.days < 1 or cfg.traders < 1:
        raise DemoError(f"--days ({cfg.days}) and --traders ({cfg.traders}) must be >= 1")
    out, truth = Path(cfg.out).resolve(), Path(cfg.truth_dir).resolve()
    if truth == out or out in truth.parents:
        raise DemoError(f"--truth-dir {cfg.truth_dir} is inside --out {cfg.out}; "
                        "put the truth outside the input tree")
    try:
        day = dt.date.fromisoformat(cfg.start)
    except ValueError as err:
        raise DemoError(f"--start {cfg.start!r} is not a date (YYYY-MM-DD): {err}") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def address_of(seed: int, index: int) -> str:
    """Deterministic 0x-prefixed 40-hex address of trader `index` under `seed`."""
    return "0x" + hashlib.sha256(f"trader-twin-demo/{seed}/{index}".encode()).hexdigest()[:40]


# ---------------------------------------------------------------- the market ----------------
def simulate_btc(n_sec: int, t0: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """BTC price at each second boundary and per-second vol, vectorised over the whole span.

    n_sec must be a multiple of 900; t0 is the Unix second of index 0. Returns (price (n_sec+1,),
    rounded to cents; sigma (n_sec,), the instantaneous per-second log-vol of second i).
    """
    n_min = n_sec // 60
    phi = math.exp(-math.log(2.0) / VOL_HALF_LIFE_MIN)  # OU log-vol at 1-minute steps
    x0 = rng.standard_normal() * VOL_OF_VOL
    logvol = lfilter([VOL_OF_VOL * math.sqrt(1 - phi**2)], [1.0, -phi],
                     rng.standard_normal(n_min), zi=[phi * x0])[0]
    tmin = t0 + 60 * np.arange(n_min)
    hour = (tmin % 86400) / 3600.0
    d_us = np.minimum(abs(hour - 15.0), 24 - abs(hour - 15.0))  # circular distance to 15:00 UTC
    d_as = np.minimum(abs(hour - 4.0), 24 - abs(hour - 4.0))
    season = 1 + 0.35 * np.exp(-0.5 * (d_us / 2.5) ** 2) - 0.2 * np.exp(-0.5 * (d_as / 3) ** 2)
    weekend = ((tmin // 86400 + 3) % 7) >= 5  # 1970-01-01 was a Thursday: +3 makes Monday 0
    season = season * np.where(weekend, 0.75, 1.0)
    sig_min = BTC_VOL * np.exp(logvol - VOL_OF_VOL**2 / 2) * season / math.sqrt(365 * 86400)
    sigma = np.repeat(sig_min, 60)  # (n_sec,)
    inc = sigma * rng.standard_normal(n_sec) - 0.5 * sigma**2
    n_jump = rng.poisson(JUMPS_PER_DAY * n_sec / 86400)
    np.add.at(inc, rng.integers(0, n_sec, n_jump), rng.normal(0.0, JUMP_SD, n_jump))
    bar_noise = inc.reshape(-1, MARKET_SECONDS).sum(axis=1)  # (n_bars,)
    bar_ret = lfilter([1.0], [1.0, -TREND_KAPPA], bar_noise)  # R_k = noise_k + kappa R_{k-1}
    drift = TREND_KAPPA * np.concatenate([[0.0], bar_ret[:-1]]) / MARKET_SECONDS
    inc += np.repeat(drift, MARKET_SECONDS)
    logp = math.log(95_000.0) + rng.normal(0.0, 0.05) + np.concatenate([[0.0], np.cumsum(inc)])
    return np.round(np.exp(logp), 2), sigma


def quote_book(price: np.ndarray, sigma: np.ndarray, w_idx: np.ndarray, rng: np.random.Generator):
    """Up-token fair value and the quoted book top for every second of every market.

    w_idx (n_mk,): index of each window start in `price`. Returns (bid, ask, update): int tick
    arrays (n_mk, 900) of the top in effect during each second (ticks of 0.01, 1 <= bid < ask <=
    99) and a bool array, True where a requote at that second changed the top.
    """
    sec = w_idx[:, None] + np.arange(MARKET_SECONDS)[None, :]  # (n_mk, 900) index of each second
    tau = MARKET_SECONDS - np.arange(MARKET_SECONDS)[None, :]
    z = np.log(price[sec] / price[w_idx][:, None]) / (sigma[sec] * np.sqrt(tau))
    quote = ndtr(z) + rng.normal(0.0, QUOTE_NOISE, z.shape)
    spread = rng.choice(np.array([1, 2, 3]), size=z.shape, p=[0.7, 0.25, 0.05])
    bid = np.clip(np.floor(quote * 100 - spread / 2 + 0.5), 1, 99 - spread).astype(np.int64)
    ask = bid + spread
    requote = rng.random(z.shape) < QUOTE_RATE
    requote[:, 0] = True
    last = np.maximum.accumulate(np.where(requote, np.arange(MARKET_SECONDS), 0), axis=1)
    bid, ask = np.take_along_axis(bid, last, 1), np.take_along_axis(ask, last, 1)
    changed = np.ones_like(requote)
    changed[:, 1:] = (bid[:, 1:] != bid[:, :-1]) | (ask[:, 1:] != ask[:, :-1])
    return bid, ask, changed


def market_events(price, w_idx, bid, ask, changed, t_start, rng) -> list[list[dict]]:
    """The non-trade events of each market (price_change, token and BTC ohlcv), sorted by t.

    price_change at second s is stamped s*1000 + [0, 500) ms, so a fill stamped in the second
    half of second s sees exactly the top in effect during s.
    """
    n_mk = len(w_idx)
    mm = ((bid + ask) / 200.0).reshape(n_mk, 15, 60)  # Up mid per second, by minute
    t_vol = rng.lognormal(math.log(600.0), 0.8, (n_mk, 15)) * (1 + 20 * (mm.max(2) - mm.min(2)))
    minute = w_idx[:, None] + 60 * np.arange(15)[None, :]  # (n_mk, 15) index of each minute open
    b_sec = price[minute[..., None] + np.arange(61)]  # (n_mk, 15, 61) second opens + the close
    b_vol = rng.lognormal(math.log(15.0), 0.7, (n_mk, 15))
    tok = np.stack([mm[:, :, 0], mm.max(2), mm.min(2), mm[:, :, -1], np.round(t_vol, 2)], -1)
    btc = np.stack([b_sec[..., 0], b_sec.max(2), b_sec.min(2), b_sec[..., -1], np.round(b_vol, 4)], -1)
    tok, btc = tok.tolist(), btc.tolist()  # (n_mk, 15, 5) nested lists of Python floats
    pc_ms = rng.integers(0, 500, bid.shape)
    keys = ("open", "high", "low", "close", "volume")
    out = []
    for k in range(n_mk):
        w_ms = (t_start + MARKET_SECONDS * k) * 1000
        ev = []
        for j in range(15):  # token bar then BTC bar, both stamped at the minute's open
            for bar in (tok[k][j], btc[k][j]):
                ev.append({"type": "ohlcv", "t": w_ms + 60_000 * j, **dict(zip(keys, bar, strict=True))})
        s_ch = np.flatnonzero(changed[k])
        ev += [{"type": "price_change", "t": w_ms + 1000 * s + m, "best_bid": b / 100,
                "best_ask": a / 100, "mid": (b + a) / 200}
               for s, m, b, a in zip(s_ch.tolist(), pc_ms[k, s_ch].tolist(),
                                     bid[k, s_ch].tolist(), ask[k, s_ch].tolist(), strict=True)]
        ev.sort(key=lambda e: e["t"])
        out.append(ev)
    return out


# ---------------------------------------------------------------- the trader ----------------
def simulate_trader(base: np.ndarray, knobs: Knobs, dec_mk: np.ndarray, dec_sec: np.ndarray,
                    bid: np.ndarray, ask: np.ndarray, res_up: np.ndarray, t_start: int,
                    rng: np.random.Generator):
    """Draw an action per decision from pi(a | s) and turn it into fills; settle each market.

    base (n_dec, 5): the policy's logits from what it sees of the world; knobs add what it sees
    of itself (inventory, settled P&L, its last trades, its entry prices). Decisions are in time
    order; dec_mk / dec_sec give each one's market and second in the window. The loop runs over
    decisions only (pi depends on the trader's own state). Returns (probs (n_dec, 5), actions
    int8 (n_dec,), net Up-equivalent shares (n_dec,), fills: list per market of trade dicts).
    """
    n_dec = len(base)
    base, u = base.tolist(), rng.random(n_dec).tolist()
    sc = knobs.size_scale
    normal = np.round(rng.uniform(NORMAL_SIZE[0] * sc, NORMAL_SIZE[1] * sc, n_dec), 2).tolist()
    strong = np.round(rng.uniform(STRONG_SIZE[0] * sc, STRONG_SIZE[1] * sc, n_dec), 2).tolist()
    n_fill = rng.integers(1, 4, n_dec).tolist()
    weights = rng.uniform(0.2, 1.0, (n_dec, 3)).tolist()
    offs = np.cumsum(np.column_stack([rng.integers(2, 9, n_dec), rng.integers(0, 6, (n_dec, 2))]), 1)
    offs = (offs + dec_sec[:, None]).tolist()  # (n_dec, 3) fill seconds within the window
    walk = np.cumsum(rng.random((n_dec, 3)) < 0.3, 1).tolist()  # ticks walked into the book
    ms = rng.integers(500, 1000, (n_dec, 3)).tolist()
    centres = CENTRES.tolist()
    exits = math.isfinite(knobs.take_profit) or math.isfinite(knobs.cut_loss)
    probs, actions, net = np.zeros((n_dec, 5)), np.zeros(n_dec, np.int8), np.zeros(n_dec)
    fills: list[list[dict]] = [[] for _ in range(len(bid))]
    pnl_ema, cur, inv_up, inv_dn, cash = 0.0, -1, 0.0, 0.0, 0.0
    cost_up = cost_dn = 0.0  # USDC paid for the shares held, per side (average entry)
    last_won, since_trade = False, 10**9
    for d in range(n_dec):
        k = int(dec_mk[d])
        if k != cur:  # the previous market settled at its window end, before this decision
            if cur >= 0:
                r = float(res_up[cur])
                settled = cash + inv_up * r + inv_dn * (1 - r)
                pnl_ema = 0.7 * pnl_ema + 0.3 * settled
                last_won = settled > 0
            cur, inv_up, inv_dn, cash, cost_up, cost_dn = k, 0.0, 0.0, 0.0, 0.0, 0.0
        lg = base[d]
        inv = inv_up - inv_dn
        lg = [x - knobs.lean * c * inv / 200 for x, c in zip(lg, centres, strict=True)]
        lg[2] += knobs.pnl_hold * math.tanh(-pnl_ema / 50)
        if since_trade <= knobs.cooldown_bars:
            lg[2] += knobs.cooldown_hold
        if last_won and knobs.press:
            lg[0] += knobs.press
            lg[4] += knobs.press
        if inv >= knobs.inv_cap:
            lg[0] -= OFF
            lg[1] -= OFF
        elif inv <= -knobs.inv_cap:
            lg[3] -= OFF
            lg[4] -= OFF
        s0 = int(dec_sec[d]) - 1  # the quote in effect during the second before the decision
        if exits and s0 >= 0 and (inv_up >= 1 or inv_dn >= 1):
            mid_up = (int(bid[k, s0]) + int(ask[k, s0])) / 200
            mid, avg = (mid_up, cost_up / inv_up) if inv_up >= 1 else (1 - mid_up, cost_dn / inv_dn)
            if mid - avg >= knobs.take_profit or avg - mid >= knobs.cut_loss:
                lg[3 if inv_up >= 1 else 1] += knobs.exit_boost  # sell the held side
        top = max(lg)
        e = [math.exp(x - top) for x in lg]
        tot = sum(e)
        p = [x / tot for x in e]
        probs[d] = p
        a, acc = 4, 0.0
        for i, x in enumerate(p):
            acc += x
            if u[d] < acc:
                a = i
                break
        actions[d] = a
        since_trade = 0 if a != 2 else since_trade + 1
        if a == 2:
            continue
        size = strong[d] if a in (0, 4) else normal[d]
        if a < 2:
            outcome, side = ("Down", "SELL") if inv_dn >= size or (exits and inv_dn >= 1) else ("Up", "BUY")
        else:
            outcome, side = ("Up", "SELL") if inv_up >= size or (exits and inv_up >= 1) else ("Down", "BUY")
        if side == "SELL":  # an exit trader sells at most what it holds (>= 1 share)
            size = round(min(size, inv_up if outcome == "Up" else inv_dn), 2)
        ww = weights[d][: n_fill[d]]
        parts = [round(size * x / sum(ww), 2) for x in ww[:-1]]
        parts.append(round(size - sum(parts), 2))
        parts = [q for q in parts if q > 0]
        w_ms = (t_start + MARKET_SECONDS * k) * 1000
        for j, q in enumerate(parts):
            s = offs[d][j]
            b, aa = int(bid[k, s]), int(ask[k, s])
            top_ticks = (aa if side == "BUY" else b) if outcome == "Up" else (
                100 - b if side == "BUY" else 100 - aa)
            px = min(max(top_ticks + (walk[d][j] if side == "BUY" else -walk[d][j]), 1), 99) / 100
            sign = 1.0 if side == "BUY" else -1.0
            cash -= sign * px * q
            if outcome == "Up":
                cost_up = cost_up + px * q if sign > 0 else cost_up * (1 - q / inv_up)
                inv_up += sign * q
            else:
                cost_dn = cost_dn + px * q if sign > 0 else cost_dn * (1 - q / inv_dn)
                inv_dn += sign * q
            fills[k].append({"type": "trade", "t": w_ms + 1000 * s + ms[d][j], "price": px,
                             "side": side, "size": q, "usdc": round(px * q, 4), "outcome": outcome})
        net[d] = (1.0 if a < 2 else -1.0) * sum(parts)
    return probs, actions, net, fills


# ---------------------------------------------------------------- writing -------------------
def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to path via a temp file in the same folder + os.replace (no partial files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_truth(path: Path, address: str, strategy: str, dec_t: np.ndarray, probs: np.ndarray,
                actions: np.ndarray, net: np.ndarray, coefficients: dict | None = None) -> None:
    """Write the truth parquet (one row per decision; columns of docs/INTERFACES.md) atomically;
    the policy's drawn coefficients go to the schema metadata key `coefficients` (JSON)."""
    cols = {"address": pa.array([address] * len(dec_t)),
            "decision_time": pa.array(dec_t * 1_000_000_000, type=pa.timestamp("ns", tz="UTC")),
            "strategy": pa.array([strategy] * len(dec_t))}
    cols |= {f"prob_{i}": pa.array(probs[:, i]) for i in range(5)}
    cols |= {"action": pa.array(actions), "net_shares": pa.array(net)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    table = pa.table(cols).replace_schema_metadata(
        {"coefficients": orjson.dumps(coefficients or {}, option=orjson.OPT_SERIALIZE_NUMPY)})
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def make_world(seed: int, days: int, t_start: int, step: int) -> tuple[World, list[list[dict]]]:
    """The market path every trader of one run sees, and each market's non-trade events.

    One simulated day of warm-up precedes t_start, so trailing signals exist at the first market;
    decisions are every `step` seconds of every market window."""
    warm = 86_400
    n_mk = days * 86_400 // MARKET_SECONDS
    t0 = t_start - warm
    rng = np.random.default_rng([seed, 0])
    price, sigma = simulate_btc(warm + n_mk * MARKET_SECONDS, t0, rng)
    w_idx = warm + MARKET_SECONDS * np.arange(n_mk)
    bid, ask, changed = quote_book(price, sigma, w_idx, rng)
    res_up = price[w_idx + MARKET_SECONDS] >= price[w_idx]  # last second's close vs the open
    base_events = market_events(price, w_idx, bid, ask, changed, t_start, rng)
    dec_sec = np.tile(np.arange(0, MARKET_SECONDS, step), n_mk)
    dec_mk = np.repeat(np.arange(n_mk), MARKET_SECONDS // step)
    world = World(price=price, w_idx=w_idx, bid=bid, ask=ask, res_up=res_up,
                  dec_idx=w_idx[dec_mk] + dec_sec, dec_mk=dec_mk, dec_sec=dec_sec, t0=t0, step=step)
    return world, base_events


def simulate(strategy: str, seed: int, index: int, world: World, t_start: int):
    """Trader `index` of `strategy` on `world`: (simulate_trader's 4-tuple, its coefficients)."""
    if strategy.startswith(ZOO_PREFIX):
        base, knobs, coef = family_policy(strategy.removeprefix(ZOO_PREFIX), seed, index, world)
    else:
        m, hold_shift = policy_inputs(strategy, world.price, world.dec_idx, world.t0, world.step)
        (base, knobs), coef = legacy_policy(strategy, m, hold_shift), {}
    out = simulate_trader(base, knobs, world.dec_mk, world.dec_sec, world.bid, world.ask,
                          world.res_up, t_start, np.random.default_rng([seed, 1, index]))
    return out, coef


def run(cfg: DemoConfig) -> dict:
    """Simulate the market and cfg.traders traders; write the price files and the truth.

    Returns the summary: files, events, trades, addresses, decisions, action_counts (per
    POLICY_ACTIONS name), oracle_accuracy (mean max pi), majority_rate, seconds.
    """
    t_begin = time.perf_counter()
    t_start = check_config(cfg)
    world, base_events = make_world(cfg.seed, cfg.days, t_start, INTERVALS[cfg.decision_interval])
    n_mk, t0, dec_idx = len(world.w_idx), world.t0, world.dec_idx
    out, truth = Path(cfg.out), Path(cfg.truth_dir)
    summary = {"files": 0, "events": 0, "trades": 0, "addresses": [], "decisions": 0}
    counts, max_p = np.zeros(5, np.int64), []
    bar = tqdm(total=cfg.traders * n_mk, desc="demo files", unit="file")
    for i in range(cfg.traders):
        address = address_of(cfg.seed, i)
        (probs, actions, net, fills), coef = simulate(cfg.strategy, cfg.seed, i, world, t_start)
        res_up = world.res_up
        for k in range(n_mk):
            bar.update()
            if cfg.traded_only and not fills[k]:
                continue
            w = t_start + MARKET_SECONDS * k
            doc = {"slug": f"btc-updown-15m-{w}", "address": address,
                   "resolution": "Up" if res_up[k] else "Down",
                   "prices": sorted(base_events[k] + fills[k], key=lambda e: e["t"])
                   if fills[k] else base_events[k]}
            write_atomic(out / address / f"btc-updown-15m-{w}_prices.json", orjson.dumps(doc))
            summary["files"] += 1
            summary["events"] += len(doc["prices"])
            summary["trades"] += len(fills[k])
        write_truth(truth / f"{address}.parquet", address, cfg.strategy, t0 + dec_idx, probs,
                    actions, net, coef)
        summary["addresses"].append(address)
        summary.setdefault("coefficients", {})[address] = coef
        summary["decisions"] += len(actions)
        counts += np.bincount(actions, minlength=5)
        max_p.append(probs.max(1))
    bar.close()
    summary["action_counts"] = dict(zip(POLICY_ACTIONS, counts.tolist(), strict=True))
    summary["oracle_accuracy"] = float(np.concatenate(max_p).mean())
    summary["majority_rate"] = float(counts.max() / counts.sum())
    summary["seconds"] = round(time.perf_counter() - t_begin, 2)
    return summary


def main(argv: list[str] | None = None) -> None:
    """CLI: flags 1:1 with DemoConfig; user errors -> one line on stderr, exit 2."""
    d = DemoConfig
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", default=d.out, help="input tree to write")
    ap.add_argument("--days", type=int, default=d.days, help="simulated days (96 markets each)")
    ap.add_argument("--traders", type=int, default=d.traders, help="number of trader addresses")
    ap.add_argument("--strategy", default=d.strategy,
                    help="|".join(STRATEGIES) + " | zoo:FAMILY, FAMILY one of " + ", ".join(FAMILIES))
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of market and policies")
    ap.add_argument("--decision-interval", "--decision_interval", dest="decision_interval",
                    default=d.decision_interval, help="15min | 1min")
    ap.add_argument("--traded-only", "--traded_only", dest="traded_only", action="store_true",
                    default=d.traded_only, help="write only markets the trader traded")
    ap.add_argument("--truth-dir", "--truth_dir", dest="truth_dir", default=d.truth_dir,
                    help="where {address}.parquet with pi and the drawn actions goes")
    ap.add_argument("--start", default=d.start, help="first day, YYYY-MM-DD (UTC)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        s = run(DemoConfig(**vars(args)))
    except DemoError as err:
        print(f"demo_data: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info("wrote %d files (%d events, %d fills) for %d trader(s) to %s, truth in %s; "
             "actions %s; oracle accuracy %.3f vs majority %.3f; %.1f s", s["files"], s["events"],
             s["trades"], len(s["addresses"]), args.out, args.truth_dir, s["action_counts"],
             s["oracle_accuracy"], s["majority_rate"], s["seconds"])


if __name__ == "__main__":
    main()
