"""The demo's policies: the seed's four strategies and the zoo of simulated traders, policy
families built strategy-first (private part of demo_data.py; nothing else imports it).

Promise: `family_policy(family, seed, world)` gives one trader of a family - its coefficients
drawn from `seed` - as (base logits (n_dec, 5) over the pipeline's actions, Knobs for the
decisions that depend on the trader's own state). demo_data.simulate_trader draws the actions.
Each family is what a trader of these markets plausibly does, written before (and without
looking at) the pipeline's state features:

| family | interval | decides on |
|---|---|---|
| trend | 15min, 1min | BTC log returns over 15 / 60 / 240 min in units of trailing 1-min vol (weights drawn) |
| reversion | 15min, 1min | minus BTC returns over 5 / 15 / 60 min, same units |
| session | 15min | trend in one session, fading it in another, idle in the rest (session hours drawn) |
| streak | 15min | the last markets' resolutions: follows or fades the signed streak and the last-n mean |
| vol_regime | 15min | trades 15-min momentum only when 1h realised vol is above (or below) its 1-day level |
| technical | 15min | the seed's technical trader: RSI(14), MACD histogram, Bollinger %b of 15-min closes |
| cooldown | 15min, 1min | 15-min momentum, a cool-down of n bars after each trade, pressing after a win |
| fair_value | 1min | the Up quote against the binary's fair value from BTC's distance to strike and time left |
| late_winner | 1min | the last L minutes only: buys the likely winner while its ask is below a cap |
| scaler | 1min | scales in toward the side BTC's strike distance favours, up to an inventory cap |
| profit_taker | 1min | enters on 5-min momentum, sells the held side at a take-profit or a stop-loss |

Signals are turned into the five classes by the ordinal softmax of demo_data (logit_a = beta
(c_a m - c_a^2 / 2) + b_a, centres c = (2, 1, 0, -1, -2)), on the signal divided by the
root-mean-square of the same signal over the trader's earlier decisions (a causal unit scale,
so each class stays frequent whatever the signal's natural units). beta, the STRONG and HOLD
biases, the sizes and every family coefficient are drawn from the seed.

No-leakage rule: a decision at second t of the path uses only price[<= t] (closes of intervals
that ended at or before t), the clock, markets that ended at or before t, the Up quote in effect
during the second before t, and the trader's own fills and settled P&L (tests truncate the
world after T and check no decision before T moves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import talib
from scipy.special import ndtr

FAMILIES = {"trend": ("15min", "1min"), "reversion": ("15min", "1min"), "session": ("15min",),
            "streak": ("15min",), "vol_regime": ("15min",), "technical": ("15min",),
            "cooldown": ("15min", "1min"), "fair_value": ("1min",), "late_winner": ("1min",),
            "scaler": ("1min",), "profit_taker": ("1min",)}
"""Family name -> the decision intervals it is defined for (the first is its default)."""
CENTRES = np.array([2.0, 1.0, 0.0, -1.0, -2.0])
STRONG_MASK, HOLD_MASK = np.array([1.0, 0, 0, 0, 1.0]), np.array([0, 0, 1.0, 0, 0])
RANDOM_PROBS = np.array([0.0875, 0.2625, 0.30, 0.2625, 0.0875])  # STRONG = 25 % of each side
# Per strategy (beta, STRONG bias, HOLD bias): tuned on 30-day runs so that STRONG is ~25 % of each
# side's non-HOLD decisions, no class tops 70 % and E[max pi] is ~0.6-0.7.
POLICY = {"momentum": (2.8, -0.75, 0.3), "mean_reversion": (2.8, -0.75, 0.3),
          "time_of_day": (3.6, 0.4, 0.5)}
MOMENTUM_WEIGHTS = (0.2, 0.1, 0.9)  # of z1, z4 and (RSI - 50) / 12 in the momentum signal
OFF = 8.0  # HOLD logit shift where a family is idle: pi(HOLD) > 0.99
# Extra (STRONG, HOLD) bias of families that are idle part of the time, so that while active
# they trade often and strongly enough for every class to stay frequent overall.
ACTIVE_BIAS = {"session": (0.5, -0.6), "vol_regime": (0.8, -0.8), "late_winner": (1.5, -1.2),
               "fair_value": (0.7, -0.2), "scaler": (0.9, 0.0), "profit_taker": (1.1, 0.0),
               "cooldown": (0.2, -0.3)}
MARKET_SECONDS = 900


@dataclass(frozen=True)
class Knobs:
    """The parts of a policy that read the trader's own state (applied per decision)."""

    lean: float = 0.0
    """Logit shift per 200 shares of open Up-equivalent inventory, against the inventory."""
    pnl_hold: float = 0.0
    """HOLD logit + pnl_hold x tanh(-EMA of settled market P&L / 50): risk-off after losses."""
    cooldown_bars: int = 0
    """Decisions after a trade during which HOLD gets + cooldown_hold."""
    cooldown_hold: float = 0.0
    """HOLD logit shift while cooling down."""
    press: float = 0.0
    """STRONG logit shift after a market the trader won (settled P&L > 0)."""
    inv_cap: float = math.inf
    """Open Up-equivalent shares beyond which the adding side's logits get -OFF."""
    take_profit: float = math.inf
    """Sell the held side when its mid is this far above the average entry price."""
    cut_loss: float = math.inf
    """Sell the held side when its mid is this far below the average entry price."""
    exit_boost: float = 0.0
    """Logit shift of the classes that sell the held side at take-profit or stop-loss."""
    size_scale: float = 1.0
    """Multiplier of demo_data's regular and STRONG size ranges."""


@dataclass(frozen=True)
class World:
    """What a policy may read, each array indexed so that reading it at a decision is causal.

    price (n_sec+1,) BTC at each second boundary of the path (index 0 = t0); w_idx (n_mk,) index
    of each market's open; bid / ask (n_mk, 900) Up-token top in ticks in effect during each
    second; res_up (n_mk,) bool; dec_idx / dec_mk / dec_sec (n_dec,) each decision's second in the
    path, market and second within the window; t0 the Unix second of index 0; step the interval."""

    price: np.ndarray
    w_idx: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    res_up: np.ndarray
    dec_idx: np.ndarray
    dec_mk: np.ndarray
    dec_sec: np.ndarray
    t0: int
    step: int


# ---------------------------------------------------------------- causal inputs -------------
def causal_unit(m: np.ndarray, active: np.ndarray | None = None, prior: float = 1.0,
                weight: float = 50.0) -> np.ndarray:
    """m over 1.25 x the mean |m| at the earlier active decisions (the sd of a normal signal; a
    robust scale for heavy-tailed ones), with a prior of `weight` decisions at scale `prior`;
    0 where inactive. Decision d's scale reads decisions < d only."""
    act = np.ones(len(m), bool) if active is None else active
    ab = np.where(act, np.abs(m), 0.0)
    n = np.concatenate([[0.0], np.cumsum(act)[:-1]])
    s = np.concatenate([[0.0], np.cumsum(ab)[:-1]])
    scale = 1.25 * (s + weight * prior / 1.25) / (n + weight)
    return np.where(act, m / scale, 0.0)


def minute_vol(price: np.ndarray, dec_idx: np.ndarray, minutes: int) -> np.ndarray:
    """Realised vol of 1-minute log returns over the `minutes` minutes before each decision."""
    lr = np.diff(np.log(price[::60]))
    c2 = np.concatenate([[0.0], np.cumsum(lr**2)])
    gm = dec_idx // 60  # minutes completed before the decision
    n = np.maximum(np.minimum(gm, minutes), 1)
    return np.sqrt(np.maximum((c2[gm] - c2[gm - n]) / n, 1e-14))


def ret_z(w: World, minutes: int, sig1: np.ndarray) -> np.ndarray:
    """BTC log return over the last `minutes` minutes in units of sig1 x sqrt(minutes)."""
    logp = np.log(w.price)
    back = np.maximum(w.dec_idx - 60 * minutes, 0)
    return (logp[w.dec_idx] - logp[back]) / (sig1 * math.sqrt(minutes))


def past_resolutions(w: World, n: int) -> np.ndarray:
    """(n_dec, n): +1/-1 for Up/Down of the n 15-minute windows that ended last before each
    decision's market opened (warm-up windows of the path included)."""
    n_win = (len(w.price) - 1) // MARKET_SECONDS
    opens = w.price[::MARKET_SECONDS]
    res = np.where(opens[1:n_win + 1] >= opens[:n_win], 1.0, -1.0)  # window j: [900j, 900(j+1))
    j = w.w_idx[w.dec_mk] // MARKET_SECONDS  # the decision's own window
    lags = j[:, None] - 1 - np.arange(n)[None, :]
    return np.where(lags >= 0, res[np.maximum(lags, 0)], 0.0)


def signed_streak(res: np.ndarray) -> np.ndarray:
    """Signed length of the run of equal outcomes ending at the most recent one (res[:, 0])."""
    same = np.cumprod(res == res[:, :1], axis=1)
    return res[:, 0] * same.sum(1)


def up_quote(w: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mid, bid, ask) of the Up token in effect during the second before each decision, in
    price units; at a window's first second nothing is quoted yet: (0.5, 0.49, 0.51)."""
    s = np.maximum(w.dec_sec - 1, 0)
    b, a = w.bid[w.dec_mk, s] / 100.0, w.ask[w.dec_mk, s] / 100.0
    first = w.dec_sec == 0
    return (np.where(first, 0.5, (b + a) / 2), np.where(first, 0.49, b), np.where(first, 0.51, a))


def fair_value(w: World, sig1: np.ndarray) -> np.ndarray:
    """P(close >= open) = Phi(ln(S_t / S_open) / (sigma_s sqrt(tau))), sigma_s the trailing
    1-minute vol per second, tau the seconds left in the market."""
    tau = MARKET_SECONDS - w.dec_sec
    z = np.log(w.price[w.dec_idx] / w.price[w.w_idx[w.dec_mk]]) / (sig1 / math.sqrt(60) * np.sqrt(tau))
    return ndtr(z)


# ---------------------------------------------------------------- the seed's strategies ----
def policy_inputs(strategy: str, price: np.ndarray, dec_idx: np.ndarray, t0: int,
                  step: int) -> tuple[np.ndarray, np.ndarray]:
    """Signal m and HOLD-bias shift per decision, from the path up to each decision only.

    dec_idx (n_dec,): second index of each decision in `price` (a multiple of `step`); uses
    price[<= dec_idx] (closes of intervals that ended at or before the decision) and the clock.
    """
    hour = ((t0 + dec_idx) % 86400) / 3600.0
    weekend = (((t0 + dec_idx) // 86400 + 3) % 7) >= 5
    if strategy == "time_of_day":  # long Up into the US afternoon, short in the Asian night
        return 1.3 * np.sin(2 * np.pi * (hour - 9.0) / 24.0), 0.7 * weekend
    logp = np.log(price)
    lr = np.diff(logp[::60])  # 1-minute log returns, lr[i] covers minute i
    c1, c2 = np.concatenate([[0.0], np.cumsum(lr)]), np.concatenate([[0.0], np.cumsum(lr**2)])
    gm = dec_idx // 60  # minutes completed before the decision
    n = np.minimum(gm, 240)  # trailing 4 hours
    var = (c2[gm] - c2[gm - n]) / n - ((c1[gm] - c1[gm - n]) / n) ** 2
    sig = np.sqrt(np.maximum(var, 1e-12) * step / 60)  # realised vol over one decision interval
    z1 = (logp[dec_idx] - logp[dec_idx - step]) / sig
    z4 = (logp[dec_idx] - logp[dec_idx - 4 * step]) / (2 * sig)
    rsi = talib.RSI(price[::MARKET_SECONDS], 14)[dec_idx // MARKET_SECONDS]  # 15-min closes <= t
    w1, w4, w_rsi = MOMENTUM_WEIGHTS
    m = w1 * z1 + w4 * z4 + w_rsi * (rsi - 50.0) / 12.0
    if strategy == "mean_reversion":
        m = -m
    return m, -0.5 * np.cos(2 * np.pi * (hour - 15.0) / 24.0)


def legacy_policy(strategy: str, m: np.ndarray, hold_shift: np.ndarray) -> tuple[np.ndarray, Knobs]:
    """Base logits (n_dec, 5) and knobs of one of the seed's four STRATEGIES (module doc)."""
    if strategy == "random":  # ignores its own state
        return np.tile(np.log(RANDOM_PROBS), (len(m), 1)), Knobs()
    beta, b_strong, b_hold = POLICY[strategy]
    bias = np.array([b_strong, 0.0, b_hold, 0.0, b_strong])
    base = beta * (CENTRES * m[:, None] - CENTRES**2 / 2) + bias
    base[:, 2] += hold_shift
    return base, Knobs(lean=0.6, pnl_hold=0.3)  # risk-off after losses; lean against inventory


# ---------------------------------------------------------------- families ------------------
def _ordinal(m: np.ndarray, beta: float, b_strong: float, b_hold: float,
             hold_shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Ordinal-softmax logits (n_dec, 5) of a unit-scale signal m."""
    base = beta * (CENTRES * m[:, None] - CENTRES**2 / 2) + b_strong * STRONG_MASK + b_hold * HOLD_MASK
    base[:, 2] += hold_shift
    return base


def family_policy(family: str, seed: int, index: int, w: World) -> tuple[np.ndarray, Knobs, dict]:
    """Trader `index` of `family` under `seed`: (base logits (n_dec, 5), knobs, coefficients).

    Coefficients come from np.random.default_rng([seed, 7, family number, index]); the same
    family, seed and index give the same trader on any world."""
    if family not in FAMILIES:
        raise ValueError(f"unknown zoo family {family!r}; use one of {', '.join(FAMILIES)}")
    rng = np.random.default_rng([seed, 7, list(FAMILIES).index(family), index])
    beta, b_strong = rng.uniform(2.4, 3.2), rng.uniform(-0.9, -0.5)
    b_hold = rng.uniform(0.0, 0.6)
    b_strong, b_hold = np.add((b_strong, b_hold), ACTIVE_BIAS.get(family, (0.0, 0.0))).tolist()
    size = rng.uniform(0.6, 1.6)
    sig1 = minute_vol(w.price, w.dec_idx, 240)
    hour = ((w.t0 + w.dec_idx) % 86400) / 3600.0
    co: dict = {"beta": beta, "b_strong": b_strong, "b_hold": b_hold, "size_scale": size}
    knobs = Knobs(size_scale=size)
    shift: np.ndarray | float = 0.0
    active = None
    if family in ("trend", "reversion", "cooldown"):
        hs = {"trend": (15, 60, 240), "reversion": (5, 15, 60), "cooldown": (15, 60, 240)}[family]
        wts = rng.dirichlet(np.ones(3))
        co["horizons"], co["weights"] = list(hs), wts.round(3).tolist()
        m = sum(wi * ret_z(w, h, sig1) for wi, h in zip(wts, hs, strict=True))
        m = -m if family == "reversion" else m
        if family == "cooldown":
            knobs = Knobs(cooldown_bars=int(rng.integers(1, 4)), cooldown_hold=rng.uniform(2.0, 3.5),
                          press=rng.uniform(1.0, 2.0), size_scale=size)
            co |= {"cooldown_bars": knobs.cooldown_bars, "cooldown_hold": knobs.cooldown_hold,
                   "press": knobs.press}
    elif family == "session":
        follow, fade = rng.uniform(12.0, 15.0), rng.uniform(0.0, 4.0)  # session opens, UTC hours
        length = rng.uniform(6.0, 9.0)
        in_f = (hour - follow) % 24 < length
        in_d = (hour - fade) % 24 < length
        m = np.where(in_f, 1.0, np.where(in_d, -1.0, 0.0)) * ret_z(w, 60, sig1)
        active = in_f | in_d
        shift = np.where(active, 0.0, OFF)
        co |= {"follow_open_h": follow, "fade_open_h": fade, "session_h": length}
    elif family == "streak":
        n, sign = int(rng.integers(3, 7)), float(rng.choice([-1.0, 1.0]))
        res = past_resolutions(w, n)
        m = sign * (0.6 * signed_streak(res) + 1.0 * res.mean(1) * n)
        co |= {"last_n": n, "follow": sign > 0}
    elif family == "vol_regime":
        above = bool(rng.random() < 0.5)
        thr = rng.uniform(0.8, 1.0) if above else rng.uniform(1.0, 1.2)
        ratio = minute_vol(w.price, w.dec_idx, 60) / minute_vol(w.price, w.dec_idx, 1440)
        active = ratio > thr if above else ratio < thr
        m = np.where(active, ret_z(w, 15, sig1), 0.0)
        shift = np.where(active, 0.0, OFF)
        co |= {"on_when_vol_above": above, "ratio_threshold": thr}
    elif family == "technical":
        closes = w.price[::MARKET_SECONDS].astype(np.float64)
        k = w.dec_idx // MARKET_SECONDS  # 15-min closes <= t
        rsi = talib.RSI(closes, 14)[k]
        macd_hist = talib.MACD(closes, 12, 26, 9)[2][k] / (closes[k] * 1e-3)
        up, mid, lo = talib.BBANDS(closes, 20, 2.0, 2.0)
        pct_b = (closes[k] - lo[k]) / np.maximum(up[k] - lo[k], 1e-9) - 0.5
        wts = rng.dirichlet(np.ones(3)) * np.array([1.0, 1.0, -1.0 if rng.random() < 0.5 else 1.0])
        m = np.nan_to_num(wts[0] * (rsi - 50) / 12 + wts[1] * macd_hist + wts[2] * 2 * pct_b)
        co["weights_rsi_macd_pctb"] = wts.round(3).tolist()
    elif family == "fair_value":
        mid, _, _ = up_quote(w)
        m = fair_value(w, sig1) - mid
        cap = rng.uniform(200.0, 500.0)
        knobs = Knobs(inv_cap=cap, size_scale=size)
        active = w.dec_sec > 0
        shift = np.where(active, 0.0, OFF)
        co["inv_cap"] = cap
    elif family == "late_winner":
        last, cap = int(rng.integers(8, 12)), rng.uniform(0.9, 0.98)
        mid, bid, ask = up_quote(w)
        win_ask = np.where(mid >= 0.5, ask, 1.0 - bid)  # the likely winner's ask
        active = (w.dec_sec >= MARKET_SECONDS - 60 * last) & (win_ask <= cap)
        m = np.where(active, mid - 0.5, 0.0)
        shift = np.where(active, 0.0, OFF)
        co |= {"last_minutes": last, "price_cap": cap}
    elif family == "scaler":
        cap = rng.uniform(500.0, 900.0)
        fv = fair_value(w, sig1)
        m = (fv - 0.5) + rng.uniform(0.0, 0.5) * np.tanh(ret_z(w, 60, sig1)) * 0.2
        active = w.dec_sec > 0
        shift = np.where(active, 0.0, OFF)
        knobs = Knobs(inv_cap=cap, size_scale=size)
        co["inv_cap"] = cap
    elif family == "profit_taker":
        tp, sl = rng.uniform(0.05, 0.12), rng.uniform(0.05, 0.15)
        m = ret_z(w, 5, sig1)
        active = w.dec_sec > 0
        shift = np.where(active, 0.0, OFF)
        knobs = Knobs(take_profit=tp, cut_loss=sl, exit_boost=rng.uniform(3.0, 5.0),
                      inv_cap=rng.uniform(150.0, 400.0), size_scale=size)
        co |= {"take_profit": tp, "cut_loss": sl, "exit_boost": knobs.exit_boost, "inv_cap": knobs.inv_cap}
    else:  # trend, reversion and cooldown were handled first
        raise AssertionError(family)
    return _ordinal(causal_unit(m, active), beta, b_strong, b_hold, shift), knobs, co
