"""labeling: hand-worked Triple Barrier cases (ties, data end, last bar, gaps, markets), events,
round-trip calibration against a straightforward loop, fallbacks, and train-only calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labeling as lb


def _tb(close, events, side, pt, sl, horizon, o=None, h=None, lo=None, seg=None):
    c = np.asarray(close, float)
    o, h, lo = (c if v is None else np.asarray(v, float) for v in (o, h, lo))
    seg = np.zeros(len(c), int) if seg is None else np.asarray(seg)
    ref = lb.entry_reference(c, o, seg)
    return lb.triple_barrier((o, h, lo, c), ref, lb.segment_last(seg), np.asarray(events),
                             np.asarray(side, float), pt, sl, horizon)


def test_profit_barrier_close_only_exits_at_the_close_beyond_it():
    r = _tb([100, 101, 103, 90], [1], [1], pt=0.02, sl=0.05, horizon=5)
    # ref = close[0] = 100; bar 1: +1 %, bar 2: +3 % >= 2 % -> +1 after 1 bar at +3 %
    assert (r["label"][0], r["exit_bars"][0], r["both"][0]) == (1.0, 1, False)
    assert r["ret"][0] == pytest.approx(0.03)


def test_short_side_mirrors():
    r = _tb([100, 99, 97, 110], [1], [-1], pt=0.02, sl=0.05, horizon=5)
    assert (r["label"][0], r["exit_bars"][0]) == (1.0, 1)
    assert r["ret"][0] == pytest.approx(0.03)
    r = _tb([100, 101, 106, 90], [1], [-1], pt=0.02, sl=0.05, horizon=5)
    assert (r["label"][0], r["exit_bars"][0]) == (-1.0, 1) and r["ret"][0] == pytest.approx(-0.06)


def test_tie_both_barriers_in_one_bar_is_the_stop():
    # entry bar 1 (ref 100) ranges 96..103: +3 % >= pt 2 % and -4 % <= -sl 3 % in the same bar
    r = _tb(close=[100, 100, 100], o=[100, 100, 100], h=[100, 103, 100], lo=[100, 96, 100],
            events=[1], side=[1], pt=0.02, sl=0.03, horizon=3)
    assert (r["label"][0], r["exit_bars"][0], bool(r["both"][0])) == (-1.0, 0, True)
    assert r["ret"][0] == pytest.approx(-0.03)       # exits at the stop level
    # the same bar for a short: best = -(96/100-1) = 4 %, worst = -3 %: also both -> stop
    r = _tb(close=[100, 100, 100], o=[100, 100, 100], h=[100, 103, 100], lo=[100, 96, 100],
            events=[1], side=[-1], pt=0.02, sl=0.03, horizon=3)
    assert (r["label"][0], bool(r["both"][0])) == (-1.0, True)


def test_barriers_beyond_data_end_take_vertical_at_last_bar_and_event_on_last_bar():
    c = [100, 100.5, 101, 100.8]
    r = _tb(c, [1, 3], [1, 1], pt=0.05, sl=0.05, horizon=10)
    # event 1: no touch, data ends at bar 3 -> vertical at bar 3: 2 bars, 100.8/100 - 1
    assert (r["label"][0], r["exit_bars"][0]) == (0.0, 2)
    assert r["ret"][0] == pytest.approx(0.008)
    # event on the last bar: ref close[2] = 101, exits in its own bar
    assert (r["label"][1], r["exit_bars"][1]) == (0.0, 0)
    assert r["ret"][1] == pytest.approx(100.8 / 101 - 1)


def test_vertical_barrier_inside_the_data():
    r = _tb([100, 100, 101, 101.5, 99, 80], [1], [1], pt=0.05, sl=0.05, horizon=3)
    assert (r["label"][0], r["exit_bars"][0]) == (0.0, 3)
    assert r["ret"][0] == pytest.approx(-0.01)       # close of bar 4 (entry 1 + 3)


def test_segment_end_cuts_the_path():
    # a new market (segment) starts at bar 3: the path of event 1 ends at bar 2
    r = _tb([100, 100, 101, 50, 40], [1], [1], pt=0.05, sl=0.05, horizon=10, seg=[0, 0, 0, 1, 1])
    assert (r["label"][0], r["exit_bars"][0]) == (0.0, 1)
    assert r["ret"][0] == pytest.approx(0.01)


def _bars(u_close, net, inv, **extra) -> pd.DataFrame:
    n = len(u_close)
    df = pd.DataFrame({"address": "0xa",
                       "bar_start": pd.date_range("2026-01-05", periods=n, freq="15min", tz="UTC"),
                       "u_close": np.asarray(u_close, float), "net_shares": np.asarray(net, float),
                       "inventory": np.asarray(inv, float)})
    for k, v in extra.items():
        df[k] = v
    return df


def test_gap_forward_filled_and_gap_open_beyond_stop():
    close = [100, 100, np.nan, np.nan, 94, 94]
    bars = _bars(close, [10, 0, 0, 0, 0, 0], [10, 10, 10, 10, 10, 10],
                 u_open=[100, 100, np.nan, np.nan, 95, 94], u_high=[100, 100, np.nan, np.nan, 95, 94],
                 u_low=[100, 100, np.nan, np.nan, 93, 94])
    labels, cal = lb.run(bars, bars["u_close"], np.ones(6, bool),
                         lb.LabelConfig(pt=0.02, sl=0.02, horizon=5))
    # event 0: first bar, ref = its own open 100; bars 2-3 have no price (flat at 100);
    # bar 4 opens at 95, beyond the 2 % stop -> exit at the open: -5 %, 4 bars after entry
    assert labels["tbm_event"].tolist() == [True, False, False, False, False, False]
    assert (labels.at[0, "tbm_label"], labels.at[0, "tbm_exit_bars"]) == (-1.0, 4)
    assert labels.at[0, "tbm_ret"] == pytest.approx(-0.05)
    assert cal["n_events"] == 1 and cal["n_both"] == 0


def test_events_are_opens_adds_and_flips_with_previous_close_reference():
    net = [0, 5, 5, -3, 0, -20, 0, 4]
    inv = [0, 5, 10, 7, 7, -13, -13, 0]
    close = [100, 100, 102, 103, 101, 100, 97, 99]
    bars = _bars(close, net, inv)
    labels, _ = lb.run(bars, bars["u_close"], np.ones(8, bool),
                       lb.LabelConfig(pt=0.025, sl=0.5, horizon=2))
    assert labels["tbm_event"].tolist() == [False, True, True, False, False, True, False, False]
    assert np.isnan(labels["tbm_label"][~labels["tbm_event"]]).all()
    # bar 1 long, ref close[0] = 100: +0 %, +2 %, +3 % >= 2.5 % at bar 3 -> +1, 2 bars, +3 %
    assert (labels.at[1, "tbm_label"], labels.at[1, "tbm_exit_bars"]) == (1.0, 2)
    assert labels.at[1, "tbm_ret"] == pytest.approx(0.03)
    # bar 5 short (flip), ref close[4] = 101: 100 -> +0.99 %, 97 -> +3.96 % -> +1 after 1 bar
    assert (labels.at[5, "tbm_label"], labels.at[5, "tbm_exit_bars"]) == (1.0, 1)
    assert labels.at[5, "tbm_ret"] == pytest.approx(1 - 97 / 101)


def _loop_calibration(close, inv, train, min_rt, fb):
    """Round trips walked bar by bar: the straightforward reading of the calibration rule."""
    holds, moves, open_at = [], [], None
    for i in range(len(inv)):
        prev = inv[i - 1] if i else 0.0
        if open_at is not None and np.sign(inv[i]) != np.sign(prev):
            a = open_at
            lo = a - 1 if a > 0 else a
            ref = close[a - 1] if a > 0 else close[a]
            if all(train[lo:i + 1]):
                holds.append(i - a)
                moves.append(np.sign(inv[a]) * (close[i] / ref - 1))
            open_at = None
        if inv[i] != 0 and np.sign(inv[i]) != np.sign(prev):
            open_at = i
    if len(holds) < min_rt:
        return fb
    m = np.asarray(moves)
    return (float(np.median(m[m > 0])), float(np.median(-m[m < 0])),
            max(1, int(round(float(np.median(holds))))), len(holds))


def _random_trader(n, seed):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    inv = np.zeros(n)
    i = 1
    while i < n:
        hold = int(rng.integers(1, 8))
        inv[i:i + hold] = rng.choice([-1, 1]) * rng.integers(1, 5)
        i += hold + int(rng.integers(0, 4))
    net = np.diff(np.r_[0.0, inv])
    return close, net, inv


def test_calibration_matches_loop_and_uses_train_rows_only():
    close, net, inv = _random_trader(600, 4)
    train = np.arange(600) < 400
    bars = _bars(close, net, inv)
    _, cal = lb.run(bars, bars["u_close"], train, lb.LabelConfig())
    pt, sl, hz, n = _loop_calibration(close, inv, train, 5, None)
    assert cal["source"] == "round_trips" and cal["n_round_trips"] == n > 20
    assert (cal["pt"], cal["sl"], cal["horizon"]) == (pytest.approx(pt), pytest.approx(sl), hz)


def test_fallback_when_too_few_round_trips_and_config_overrides():
    bars = _bars([100, 101, 102, 103], [1, 0, -1, 0], [1, 1, 0, 0])
    cfg = lb.LabelConfig(min_round_trips=5, fallback_pt=0.03, fallback_sl=0.02, fallback_horizon=7)
    _, cal = lb.run(bars, bars["u_close"], np.ones(4, bool), cfg)
    assert (cal["source"], cal["n_round_trips"]) == ("fallback", 1)
    assert (cal["pt"], cal["sl"], cal["horizon"]) == (0.03, 0.02, 7)
    _, cal = lb.run(bars, bars["u_close"], np.ones(4, bool), lb.LabelConfig(pt=0.1, horizon=2))
    assert (cal["pt"], cal["horizon"]) == (0.1, 2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(100, 380))
def test_changing_non_train_rows_leaves_calibration_unchanged(seed, cut):
    close, net, inv = _random_trader(400, 9)
    train = np.arange(400) < cut
    bars = _bars(close, net, inv)
    _, a = lb.run(bars, bars["u_close"], train, lb.LabelConfig())
    rng = np.random.default_rng(seed)
    c2, n2, i2 = _random_trader(400, seed)
    changed = bars.copy()
    rest = ~train
    changed.loc[rest, "u_close"] = c2[rest] * rng.uniform(0.5, 2)
    changed.loc[rest, "inventory"] = i2[rest]
    changed.loc[rest, "net_shares"] = n2[rest]
    _, b = lb.run(changed, changed["u_close"], train, lb.LabelConfig())
    assert {k: a[k] for k in ("pt", "sl", "horizon", "n_round_trips", "source")} == \
           {k: b[k] for k in ("pt", "sl", "horizon", "n_round_trips", "source")}


def test_token_price_path_stays_inside_its_market_and_rows_unsorted():
    close = [0.50, 0.52, 0.60, 0.10, 0.12]
    bars = _bars([np.nan] * 5, [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], close=close, open=close,
                 high=close, low=close, slug=["m1", "m1", "m1", "m2", "m2"])
    bars = bars.iloc[::-1]                        # run() must not rely on the row order
    labels, _ = lb.run(bars, bars["close"], np.ones(5, bool), lb.LabelConfig(pt=0.5, sl=0.5, horizon=9))
    # event at bar 0 (first bar: ref = its open 0.50); market m1 ends at bar 2 -> vertical there
    assert (labels.at[0, "tbm_label"], labels.at[0, "tbm_exit_bars"]) == (0.0, 2)
    assert labels.at[0, "tbm_ret"] == pytest.approx(0.2)


def test_positions_opened_and_settled_inside_one_bar_are_events_and_round_trips():
    # 15-minute bars of 15-minute markets: every bar starts flat and ends flat after settlement
    close = [100, 101, 100, 102, 103, 101, 100, 104]
    net = [0, 5, -4, 0, 6, -2, 3, 0]
    inv = [0] * 8
    bars = _bars(close, net, inv)
    labels, cal = lb.run(bars, bars["u_close"], np.ones(8, bool), lb.LabelConfig(min_round_trips=3))
    assert labels["tbm_event"].tolist() == [n != 0 for n in net]
    assert (cal["source"], cal["n_round_trips"], cal["horizon"]) == ("round_trips", 5, 1)
    # moves in the trade's favour from the previous close to the bar's close
    moves = np.array([1 / 100, -(100 / 101 - 1), 103 / 102 - 1, -(101 / 103 - 1), 100 / 101 - 1])
    assert cal["pt"] == pytest.approx(np.median(moves[moves > 0]))
    assert cal["sl"] == pytest.approx(np.median(-moves[moves < 0]))


def test_label_path_never_crosses_a_split_even_when_horizon_exceeds_it():
    # a long entry at bar 1 (train) and at bar 6 (val); price crashes in the embargo/val rows
    close = [100, 100, 101, 102, 60, 60, 60, 60, 200, 200]
    split = np.array(["train"] * 4 + ["embargo"] * 2 + ["val"] * 4, dtype=object)
    net = [0, 10, 0, 0, 0, 0, 10, 0, 0, 0]
    inv = [0, 10, 10, 10, 10, 10, 20, 20, 20, 20]
    bars = _bars(close, net, inv)
    cfg = lb.LabelConfig(pt=0.5, sl=0.3, horizon=50)
    labels, _ = lb.run(bars, bars["u_close"], split == "train", cfg, split=split)
    ev = np.flatnonzero(labels["tbm_event"].to_numpy())
    assert ev.tolist() == [1, 6]
    # train event: ends at its part's last bar (3) at the vertical barrier, blind to the crash
    assert labels["tbm_exit_bars"][1] == 2 and labels["tbm_label"][1] == 0.0
    assert labels["tbm_ret"][1] == pytest.approx(102 / 100 - 1)
    # val event: reaches the profit barrier inside val (60 -> 200)
    assert labels["tbm_label"][6] == 1.0 and labels["tbm_exit_bars"][6] == 2
    # without the split the same train event looks into the embargo and hits the stop
    labels_all, _ = lb.run(bars, bars["u_close"], np.ones(len(bars), bool), cfg)
    assert labels_all["tbm_label"][1] == -1.0


def test_fit_reads_train_rows_only_and_transform_applies_the_stored_barriers():
    close, net, inv = _random_trader(600, 4)
    train = np.arange(600) < 400
    split = np.where(train, "train", "test")
    bars = _bars(close, net, inv)
    params = lb.fit(bars, bars["u_close"], train, lb.LabelConfig())
    # fit's params are plain values (pipeline_meta.json) and run = fit then transform
    assert set(params) == {"pt", "sl", "horizon", "n_round_trips", "source"}
    labels, counts = lb.transform(bars, bars["u_close"], params, split)
    run_labels, run_cal = lb.run(bars, bars["u_close"], train, lb.LabelConfig(), split=split)
    pd.testing.assert_frame_equal(labels, run_labels)
    assert run_cal == {**params, **counts} and counts["n_events"] == int(labels["tbm_event"].sum())
    # transform with other barriers moves the labels; fit ignores the test rows entirely
    wide, _ = lb.transform(bars, bars["u_close"], {**params, "pt": 10 * params["pt"]}, split)
    assert (wide["tbm_label"] == 1).sum() < (labels["tbm_label"] == 1).sum()
    changed = bars.copy()
    changed.loc[~train, "u_close"] *= 3.0
    assert lb.fit(changed, changed["u_close"], train, lb.LabelConfig()) == params
    with pytest.raises(ValueError, match="split"):
        lb.transform(bars, bars["u_close"], params, split[:10])
