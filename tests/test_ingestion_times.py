"""Hostile times: every event is bounded by its market's window (with WINDOW_SLACK_S), slugs off
the 15-minute grid or outside 2020..now+1y are skipped, times in seconds or microseconds are
converted, and no input makes a trader's bars longer than the span of its markets."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pandas as pd
import pytest

from data_ingestion import MARKET_SECONDS, WINDOW_SLACK_S, IngestionConfig, load_events, run

START = 1768904100  # a window start on the grid, 2026-01-20 10:15 UTC
ADDR = "0xtimes"


def write(root, start, events, slug=None):
    slug = slug or f"btc-updown-15m-{start}"
    path = root / ADDR / f"{slug}_prices.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"slug": slug, "prices": events}))
    return path


def quote(t_ms):
    return {"type": "price_change", "t": t_ms, "best_bid": 0.4, "best_ask": 0.6}


def fill(t, price=0.5, size=2.0):
    return {"type": "trade", "t": t, "price": price, "side": "BUY", "size": size, "outcome": "Up"}


def ingest(root, out, interval="1min"):
    bars = run(IngestionConfig(data_dir=str(root), out_dir=str(out), bar_interval=interval,
                               workers=1))
    return bars, orjson.loads((out / "ingestion_report.json").read_bytes())


def test_a_fill_in_2096_and_a_slug_from_1973_do_not_create_bars(tmp_path):
    t0 = START * 1000
    path = write(tmp_path / "d", START, [quote(t0 + 1_000), fill(t0 + 5_000),
                                         fill(3_989_347_200_000)])  # 2096
    write(tmp_path / "d", 100_800_900, [quote(100_800_900_000), fill(100_800_901_000)])  # 1973
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert len(bars) == MARKET_SECONDS // 60  # one market at 1-minute bars, not 70 years
    assert bars["bar_start"].min() == pd.Timestamp(START, unit="s", tz="UTC")
    assert bars["n_trades"].sum() == 1
    tot = rep["totals"]
    assert tot["dropped"] == {"outside_window": 1, "slug_out_of_range": 2}
    assert tot["read"] == tot["used"] + tot["dropped_total"] and rep["reconciles"]
    # the message names the file, the field and the value
    assert rep["examples"]["outside_window"].startswith(str(path))
    assert "t = '3989347200000' read as ms: 2096-06-01" in rep["examples"]["outside_window"]
    assert "the window with its slack is 2026-01-20T10:13:00 .. 2026-01-20T10:32:00" in \
        rep["examples"]["outside_window"]
    assert rep["skipped"] == [{"path": str(tmp_path / "d" / ADDR /
                                           "btc-updown-15m-100800900_prices.json"),
                               "reason": "slug_out_of_range"}]


def test_the_window_slack_is_the_edge_of_what_counts(tmp_path):
    s, e, slack = START * 1000, (START + MARKET_SECONDS) * 1000, WINDOW_SLACK_S * 1000
    write(tmp_path / "d", START, [fill(s - slack - 1), fill(s - slack), quote(s + 10),
                                  fill(e + slack - 1), fill(e + slack)])
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert rep["totals"]["dropped"] == {"outside_window": 2}
    assert bars["n_trades"].sum() == 2
    # the kept edge fills define the timeline: 2 slack minutes before, the window, 2 after
    assert bars["bar_start"].iloc[0] == pd.Timestamp(s - slack, unit="ms", tz="UTC")
    assert bars["bar_start"].iloc[-1] == pd.Timestamp(e + slack - 60_000, unit="ms", tz="UTC")
    assert rep["positions"]["post_end_trades"] == 1  # the fill after the end settles at once


def test_slugs_off_the_grid_or_out_of_range_are_skipped_with_their_reason(tmp_path):
    future = (int(time.time()) // 900 + 2 * 35_136) * 900  # two years ahead, on the grid
    write(tmp_path / "d", START, [quote(START * 1000 + 1)])
    write(tmp_path / "d", START + 60, [quote((START + 60) * 1000)])  # 1 minute off the grid
    write(tmp_path / "d", future, [quote(future * 1000)])
    write(tmp_path / "d", 1_500_000_300, [quote(1_500_000_300_000)])  # 2017, on the grid
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    reasons = {s["path"].rsplit("-", 1)[1]: s["reason"] for s in rep["skipped"]}
    assert reasons == {f"{START + 60}_prices.json": "slug_off_grid",
                       f"{future}_prices.json": "slug_out_of_range",
                       "1500000300_prices.json": "slug_out_of_range"}
    assert rep["totals"]["dropped"] == {"slug_off_grid": 1, "slug_out_of_range": 2}
    assert bars["slug"].dropna().unique().tolist() == [f"btc-updown-15m-{START}"]
    notes = [n for f in rep["files"] for n in f["notes"]]
    assert any("slug_off_grid" in n and "2026-01-20 10:16:00" in n for n in notes)


def test_times_in_seconds_and_microseconds_are_converted(tmp_path):
    t_ms = [START * 1000 + 1_500, START * 1000 + 61_000, START * 1000 + 122_250]
    ms = [quote(t_ms[0]), fill(t_ms[1]), fill(t_ms[2], 0.6)]
    mixed = [quote(t_ms[0] / 1000), fill(t_ms[1] * 1000), fill(str(t_ms[2] / 1000), 0.6)]
    write(tmp_path / "ms", START, ms)
    write(tmp_path / "mixed", START, mixed)
    a, _ = ingest(tmp_path / "ms", tmp_path / "o1")
    b, rep = ingest(tmp_path / "mixed", tmp_path / "o2")
    pd.testing.assert_frame_equal(a, b)
    assert rep["totals"]["time_units"] == {"s": 2, "us": 1}
    assert rep["files"][0]["time_units"] == {"s": 2, "us": 1}
    events = load_events(IngestionConfig(data_dir=str(tmp_path / "mixed"), workers=1))[0]
    assert events["t"].tolist() == t_ms  # floored to int64 milliseconds


@pytest.mark.parametrize("t, reason", [(5, "outside_window"), (-1, "bad_time"), (0, "bad_time"),
                                       (1e18, "bad_time"), (float("inf"), "bad_time"),
                                       ("2026-01-20", "bad_time"), (True, "bad_time"),
                                       (START * 10**6 + 10**10, "outside_window")])  # us, 10,000 s late
def test_times_no_unit_explains_are_dropped_with_a_reason(tmp_path, t, reason):
    write(tmp_path / "d", START, [quote(START * 1000 + 5), fill(t)])
    raw = (tmp_path / "d" / ADDR / f"btc-updown-15m-{START}_prices.json")
    if t == float("inf"):  # orjson writes null for inf: write the literal the stdlib reads
        raw.write_bytes(raw.read_bytes().replace(b'"t":null', b'"t":Infinity'))
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert rep["totals"]["dropped"] == {reason: 1}
    assert len(bars) == 1 and bars["n_trades"].sum() == 0  # the quote's bar only
    if t == 5:  # the message says how the time was read
        assert "t = '5' read as s: 1970-01-01T00:00:05.000 UTC" in rep["examples"][reason]


def test_no_time_stretches_the_bars_beyond_the_markets(tmp_path):
    rng = np.random.default_rng(4)
    starts = [START, START + 3 * MARKET_SECONDS]
    junk = [int(x) for x in rng.integers(-10**15, 10**17, 40)] + [10**11 - 1, 10**14, 10**17 - 1]
    for k, s in enumerate(starts):
        write(tmp_path / "d", s, [quote(s * 1000 + 7)] + [fill(x) for x in junk[k::2]])
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    lo = pd.Timestamp(starts[0] - WINDOW_SLACK_S, unit="s", tz="UTC")
    hi = pd.Timestamp(starts[-1] + MARKET_SECONDS + WINDOW_SLACK_S, unit="s", tz="UTC")
    assert bars["bar_start"].min() >= lo and bars["bar_start"].max() < hi
    assert len(bars) <= (hi - lo) / pd.Timedelta("1min")
    assert rep["reconciles"]
