"""Triple Barrier labels for the trader's entries, barriers calibrated on their own round trips.

Promise: `fit(bars, price, train_mask, cfg)` -> the barriers (pt, sl, horizon) from train rows;
`transform(bars, price, params, split)` -> the labels with those barriers; `run(bars, price,
train_mask, cfg)` = fit then transform, and returns columns aligned to `bars` -
`tbm_event` (bool), `tbm_label` (+1 profit barrier / -1 stop / 0 vertical; NaN where no event),
`tbm_ret` (signed return at exit, in the trade's favour), `tbm_exit_bars` (exit bar - entry bar),
`tbm_both` (bool: the exit bar touched both barriers) - and `calibration` = {"pt", "sl",
"horizon", "n_round_trips", "source", "n_events", "n_both", "n_unlabelled"}.

No-leakage rule: labels are targets, never state, so they look forward from the entry bar, but
never across a split: a path ends at the last row of its split part (`split`, else the train
mask), whatever the horizon, so no label straddles two parts even when horizon > window.
Calibration (pt, sl, horizon) uses only round trips lying wholly on train rows (including the
reference bar before entry), so changing any non-train row leaves it unchanged.

Run alone: python labeling.py --bars data/bars.parquet --out data/labels.parquet
(`--bars/--out/--train_end/--price_source` are stand-alone I/O flags; the rest are config fields).

Decisions where the issue is silent:
- Event = a bar where the trader opens or adds: net_shares != 0 and the bar starts flat, or the
  net has the sign of the inventory at the bar's start (an add) or at its end (a flip); side =
  sign(net_shares) (Up-equivalent). Inventory at the bar's start is the previous row's, because
  the bar table's inventory is after settlement: a 15-minute bar of a 15-minute market always
  ends flat, yet its opening trade is an event and a round trip of 0 bars. Entry reference = the previous bar's close (the price at the bar's
  start) within the same segment, else the bar's open, else its close.
- Path = bars entry .. entry + horizon of the same segment (one address; for the Up-token mid also
  one market `slug`, since a new market is a new token). Returns are side x (p / ref - 1).
  When `price` is the bar table's u_close or close, that series' high/low/open give the intrabar
  range; otherwise the path is close-only.
- A barrier touched in a bar exits at the barrier, or at the bar's open if it opened beyond it
  (gaps); touching both in one bar = the stop (pessimistic), flagged tbm_both. Vertical barrier:
  label 0 and the close return at that bar. A path cut by the data (or market) end takes the
  vertical barrier at the last available bar (an event on the last bar exits at 0 bars).
  Bars without a price are forward-filled within the segment (flat: they touch nothing).
- Round trip = inventory leaving 0 (or flipping sign) to returning to 0 (sells or settlement) or
  flipping, or a bar that starts flat, trades and ends flat (0 bars); a position still open at the data end is not complete. horizon = median holding
  bars (>= 1). pt / sl = medians of the positive / |negative| realised exit moves of the label
  price series (side x (close at exit / ref - 1)), i.e. the trader's own take-profit and stop
  levels; a side without samples takes its fallback. Fewer than min_round_trips -> all
  fallbacks. Config values that are not None override calibration one by one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common import add_config_args, atomic_write

log = logging.getLogger("labeling")

LABEL_COLUMNS = ["tbm_event", "tbm_label", "tbm_ret", "tbm_exit_bars", "tbm_both"]
"""The columns run() returns."""


@dataclass(frozen=True)
class LabelConfig:
    pt: float | None = None
    """Profit-taking barrier as a return in the trade's favour; None = calibrate."""
    sl: float | None = None
    """Stop-loss barrier as a return against the trade (positive number); None = calibrate."""
    horizon: int | None = None
    """Vertical barrier in bars after the entry bar; None = calibrate."""
    min_round_trips: int = 5
    """Fewer completed train round trips than this -> the fallback values."""
    fallback_pt: float = 0.01
    """pt when it cannot be calibrated."""
    fallback_sl: float = 0.01
    """sl when it cannot be calibrated."""
    fallback_horizon: int = 4
    """horizon when it cannot be calibrated."""


# ----------------------------------------------------------------------------- path helpers

def segment_last(seg: np.ndarray) -> np.ndarray:
    """For each row, the index of the last row of its run of equal consecutive `seg` codes."""
    n = len(seg)
    brk = np.flatnonzero(seg[1:] != seg[:-1])          # row brk is the last of its segment
    ends = np.append(brk, n - 1)
    return ends[np.searchsorted(ends, np.arange(n))]


def entry_reference(close: np.ndarray, open_: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """ref[i] = close[i-1] in the same segment, else open[i], else close[i] (NaN if none)."""
    prev = np.concatenate([[np.nan], close[:-1]])
    same = np.concatenate([[False], seg[1:] == seg[:-1]])
    ref = np.where(same & np.isfinite(prev), prev, open_)
    return np.where(np.isfinite(ref), ref, close)


def triple_barrier(ohlc: tuple, ref: np.ndarray, seg_end: np.ndarray, events: np.ndarray,
                   side: np.ndarray, pt: float, sl: float, horizon: int) -> dict:
    """Triple Barrier outcome of each event; value k looks at bars events[k] .. events[k]+horizon.

    ohlc = (open, high, low, close) of the path, (N,) each, finite where used; ref, seg_end (N,)
    per bar; events (E,) int rows; side (E,) +-1. Returns dict of (E,) arrays label, ret,
    exit_bars, both (see the module docstring for the exit rules).
    """
    o, h, lo, c = ohlc
    E, H = len(events), int(horizon)
    res = {"label": np.zeros(E), "ret": np.zeros(E), "exit_bars": np.zeros(E, np.int64),
           "both": np.zeros(E, bool)}
    chunk = max(1, 2_000_000 // (H + 1))     # bounds the (chunk, H+1) matrices to ~16 MB each
    for s0 in range(0, E, chunk):
        ev, sd = events[s0:s0 + chunk], side[s0:s0 + chunk].astype(float)[:, None]
        last_j = np.minimum(seg_end[ev] - ev, H)                    # (e,)
        j = np.arange(H + 1)[None, :]                               # (1, H+1)
        idx = np.minimum(ev[:, None] + j, len(c) - 1)               # (e, H+1)
        valid = j <= last_j[:, None]
        r = ref[ev][:, None]
        rel_h, rel_l = h[idx] / r - 1.0, lo[idx] / r - 1.0
        best = np.where(sd > 0, rel_h, -rel_l)                      # most in-favour move in the bar
        worst = np.where(sd > 0, rel_l, -rel_h)
        up, dn = valid & (best >= pt), valid & (worst <= -sl)
        f_up = np.where(up.any(1), up.argmax(1), H + 1)
        f_dn = np.where(dn.any(1), dn.argmax(1), H + 1)
        stop = f_dn <= np.minimum(f_up, last_j)                     # ties go to the stop
        take = ~stop & (f_up <= last_j)
        ex = np.where(stop, f_dn, np.where(take, f_up, last_j))
        row = np.arange(len(ev))
        open_ret = sd[:, 0] * (o[idx[row, ex]] / r[:, 0] - 1.0)
        close_ret = sd[:, 0] * (c[idx[row, ex]] / r[:, 0] - 1.0)
        sl_ = slice(s0, s0 + len(ev))
        res["label"][sl_] = np.where(stop, -1.0, np.where(take, 1.0, 0.0))
        res["ret"][sl_] = np.where(stop, np.minimum(-sl, open_ret),
                                   np.where(take, np.maximum(pt, open_ret), close_ret))
        res["exit_bars"][sl_] = ex
        res["both"][sl_] = stop & (f_up == f_dn)
    return res


# ----------------------------------------------------------------------------- calibration

def round_trips(inventory: np.ndarray, seg: np.ndarray,
                net: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(entry rows, exit rows, side) of completed round trips, rows sorted by segment then time.

    Entry: inventory != 0 after 0 (or a segment start) or after the opposite sign; exit: the next
    row of the same segment where inventory is 0 or flips sign. Open at the segment end = dropped.
    With `net` given, a bar that starts flat, trades and ends flat (a position opened and settled
    inside one bar, as every 15-minute bar of a 15-minute market is) is a round trip of 0 bars
    with side sign(net); end-of-bar inventory alone cannot see it.
    """
    inv = np.nan_to_num(np.asarray(inventory, float))
    sgn = np.sign(inv)
    prev = np.concatenate([[0.0], sgn[:-1]])
    prev[np.concatenate([[True], seg[1:] != seg[:-1]])] = 0.0       # segment start: flat before
    entries = np.flatnonzero((sgn != 0) & (sgn != prev))
    enders = np.flatnonzero((prev != 0) & (sgn != prev))            # flat again, or a flip
    k = np.searchsorted(enders, entries, side="right")
    ok = k < len(enders)
    a, b = entries[ok], enders[k[ok]]
    same = seg[a] == seg[b]
    a, b = a[same], b[same]
    side = sgn[a]
    if net is not None:
        nsg = np.sign(np.nan_to_num(np.asarray(net, float)))
        intra = np.flatnonzero((prev == 0) & (nsg != 0) & (sgn == 0))
        a, b, side = (np.concatenate([a, intra]), np.concatenate([b, intra]),
                      np.concatenate([side, nsg[intra]]))
        order = np.argsort(a, kind="stable")
        a, b, side = a[order], b[order], side[order]
    return a, b, side


def calibrate(inventory, close, ref, seg, train, cfg: LabelConfig, net=None) -> dict:
    """pt, sl, horizon from the train split's completed round trips (see module docstring)."""
    a, b, side = round_trips(inventory, seg, net)
    # a round trip counts only if every row from the reference bar a-1 to b is a train row
    bad = np.concatenate([[0], np.cumsum(~train)])
    lo = np.where((a > 0) & (seg[np.maximum(a - 1, 0)] == seg[a]), a - 1, a)
    keep = (bad[b + 1] - bad[lo]) == 0
    a, b, side = a[keep], b[keep], side[keep]
    move = side * (close[b] / ref[a] - 1.0)
    fin = np.isfinite(move)
    a, b, move = a[fin], b[fin], move[fin]
    n = int(len(a))
    if n >= cfg.min_round_trips:
        source = "round_trips"
        horizon = max(1, int(round(float(np.median(b - a)))))
        pos, neg = move[move > 0], -move[move < 0]
        pt = float(np.median(pos)) if pos.size else float(cfg.fallback_pt)
        sl = float(np.median(neg)) if neg.size else float(cfg.fallback_sl)
    else:
        source, horizon = "fallback", int(cfg.fallback_horizon)
        pt, sl = float(cfg.fallback_pt), float(cfg.fallback_sl)
    return {"pt": float(cfg.pt) if cfg.pt is not None else pt,
            "sl": float(cfg.sl) if cfg.sl is not None else sl,
            "horizon": int(cfg.horizon) if cfg.horizon is not None else horizon,
            "n_round_trips": n, "source": source}


# ----------------------------------------------------------------------------- the stage

def _path_columns(bars: pd.DataFrame, price: np.ndarray) -> tuple[str | None, list[str]]:
    """Which bar-table series `price` is: ("underlying"|"token", its o/h/l columns) or (None, [])."""
    for kind, cols in (("underlying", ["u_open", "u_high", "u_low", "u_close"]),
                       ("token", ["open", "high", "low", "close"])):
        if all(c in bars for c in cols) and np.array_equal(
                bars[cols[3]].to_numpy(float), price, equal_nan=True):
            return kind, cols[:3]
    return None, []


def _prepare(bars: pd.DataFrame, price) -> dict:
    """The (N,) path arrays in (address, bar_start) order shared by fit and transform: order,
    seg (run ids), close (ffilled within seg), o/h/lo, ref (entry reference), net, inv."""
    for col in ("address", "bar_start", "net_shares", "inventory"):
        if col not in bars:
            raise ValueError(f"bar table lacks column {col!r} needed for labels")
    px = np.asarray(price, dtype=float).ravel()
    if px.shape != (len(bars),):
        raise ValueError(f"price {px.shape} must be ({len(bars)},) like bars")
    order = np.lexsort((bars["bar_start"].to_numpy(), bars["address"].astype(str).to_numpy()))
    kind, rng_cols = _path_columns(bars, px)
    key = bars["address"].astype(str)
    if kind == "token" and "slug" in bars:
        key = key + "|" + bars["slug"].astype(str)
    codes = pd.factorize(key.to_numpy()[order])[0]
    seg = np.concatenate([[0], np.cumsum(codes[1:] != codes[:-1])])   # run ids, (N,)
    close = pd.Series(px[order]).groupby(seg).ffill().to_numpy()
    if kind:
        raw_open, raw_h, raw_l = (bars[col].to_numpy(float)[order] for col in rng_cols)
    else:                                 # close-only path: the range is the close itself
        raw_open = raw_h = raw_l = px[order]
    o, h, lo = (np.where(np.isfinite(v), v, close) for v in (raw_open, raw_h, raw_l))
    return {"order": order, "seg": seg, "close": close, "o": o, "h": h, "lo": lo,
            "ref": entry_reference(close, raw_open, seg),
            "net": np.nan_to_num(bars["net_shares"].to_numpy(float)[order]),
            "inv": np.nan_to_num(bars["inventory"].to_numpy(float)[order])}


def _mask(values, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values).ravel()
    if arr.shape != (n,):
        raise ValueError(f"{name} {arr.shape} must be ({n},) like bars")
    return arr


def fit(bars: pd.DataFrame, price, train_mask, cfg: LabelConfig) -> dict:
    """The barrier calibration from train rows only: {"pt", "sl", "horizon", "n_round_trips",
    "source"} (module docstring). Changing any non-train row leaves it unchanged."""
    prep = _prepare(bars, price)
    train = _mask(train_mask, len(bars), "train_mask").astype(bool)
    return calibrate(prep["inv"], prep["close"], prep["ref"], prep["seg"], train[prep["order"]],
                     cfg, prep["net"])


def transform(bars: pd.DataFrame, price, params: dict, split) -> tuple[pd.DataFrame, dict]:
    """Triple Barrier labels aligned to bars with fit's barriers (params pt, sl, horizon); a
    path never leaves its part of `split` ((N,) part labels, e.g. train/embargo/val/test).
    Returns (labels with LABEL_COLUMNS, {"n_events", "n_both", "n_unlabelled"})."""
    n = len(bars)
    prep = _prepare(bars, price)
    order, seg, close, inv, net = (prep[k] for k in ("order", "seg", "close", "inv", "net"))
    part = pd.factorize(_mask(split, n, "split").astype(object))[0]
    # a path also ends where the split part changes: both run ids are non-decreasing, so their
    # (N,) sum steps up wherever either does
    seg_end = segment_last(seg + np.concatenate([[0], np.cumsum(np.diff(part[order]) != 0)]))
    # (N,) inventory at the bar's start: the previous row of the same segment, flat at its start
    inv0 = np.concatenate([[0.0], inv[:-1]])
    inv0[np.concatenate([[True], seg[1:] != seg[:-1]])] = 0.0
    sn = np.sign(net)
    is_ev = (sn != 0) & ((inv0 == 0) | (sn == np.sign(inv0)) | (sn == np.sign(inv)))
    ref = prep["ref"]
    ev = np.flatnonzero(is_ev & np.isfinite(ref) & (ref > 0))
    res = triple_barrier((prep["o"], prep["h"], prep["lo"], close), ref, seg_end, ev, sn[ev],
                         params["pt"], params["sl"], params["horizon"])
    out = {"tbm_event": np.zeros(n, bool), "tbm_label": np.full(n, np.nan),
           "tbm_ret": np.full(n, np.nan), "tbm_exit_bars": np.full(n, np.nan),
           "tbm_both": np.zeros(n, bool)}
    rows = order[ev]                      # back to the bars' own row order
    out["tbm_event"][rows] = True
    out["tbm_label"][rows] = res["label"]
    out["tbm_ret"][rows] = res["ret"]
    out["tbm_exit_bars"][rows] = res["exit_bars"]
    out["tbm_both"][rows] = res["both"]
    counts = {"n_events": int(len(ev)), "n_both": int(res["both"].sum()),
              "n_unlabelled": int(is_ev.sum() - len(ev))}
    return pd.DataFrame(out, index=bars.index), counts


def run(bars: pd.DataFrame, price, train_mask, cfg: LabelConfig, split=None
        ) -> tuple[pd.DataFrame, dict]:
    """fit on train rows, then transform every row: (labels aligned to bars, calibration plus
    transform's counts). split: optional (N,) part labels; None = the train mask's two parts."""
    train = _mask(train_mask, len(bars), "train_mask").astype(bool)
    calib = fit(bars, price, train, cfg)
    labels, counts = transform(bars, price, calib, train if split is None else split)
    return labels, {**calib, **counts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from feature_engineering import add_standalone_args, resolve_price_source, standalone_train_mask

    add_standalone_args(p, "data/labels.parquet")
    p.add_argument("--price_source", default="auto", help="auto | underlying | token")
    add_config_args(p, LabelConfig)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = LabelConfig(**{k: getattr(a, k) for k in LabelConfig.__dataclass_fields__})
    try:
        bars = pd.read_parquet(a.bars)
        train = standalone_train_mask(bars, a.train_end)
        src = resolve_price_source(bars, a.price_source, train)
        price = bars["u_close" if src == "underlying" else "close"]
        labels, calib = run(bars, price, train, cfg)
    except (OSError, ValueError, KeyError) as e:
        print(f"labeling: {a.bars}: {e} (run data_ingestion.py first, or fix the flag)",
              file=sys.stderr)
        raise SystemExit(2) from None
    out = pd.concat([bars[["address", "bar_start"]], labels], axis=1)
    atomic_write(a.out, lambda tmp: out.to_parquet(tmp, index=False))
    log.info("wrote %s: %d events, pt %.4g sl %.4g horizon %d (%s, %d round trips)", a.out,
             calib["n_events"], calib["pt"], calib["sl"], calib["horizon"], calib["source"],
             calib["n_round_trips"])


if __name__ == "__main__":
    main()
