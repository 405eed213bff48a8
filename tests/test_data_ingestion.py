"""Tests for data_ingestion: real fills, data-api dumps, hand-worked accounting, bars, the report,
the CLI and the truncation (no-leakage) property. The fuzz test is in test_data_ingestion_fuzz.py;
hostile input (times, files, identity) in tests/test_ingestion_*.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import FIXTURES, REPO

from data_ingestion import (
    BAR_COLUMNS,
    MARKET_SECONDS,
    IngestionConfig,
    IngestionError,
    build_bars,
    forward_filled,
    load_events,
    load_price_file,
    run,
)

GABA = FIXTURES / "ingestion" / "gabagool22"
DUMP = FIXTURES / "ingestion" / "data_api"
START = 1768904100  # a BTC 15m window start (s), 2026-01-20 10:15 UTC
ADDR = "0xtrader"


def write_market(root, start, events, address=ADDR, resolution=None, slug=None):
    """Write one seed-format price file in the R2 layout; returns its path."""
    doc = {"slug": slug or f"btc-updown-15m-{start}", "prices": events}
    if resolution is not None:
        doc["resolution"] = resolution
    path = root / address / f"{doc['slug']}_prices.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc))
    return path


def trade(t_s, price, side, size, outcome=None, start=START, **kw):
    ev = {"type": "trade", "t": (start + t_s) * 1000, "price": price, "side": side, "size": size}
    if outcome is not None:
        ev["outcome"] = outcome
    return {**ev, **kw}


def quote(t_s, bid, ask, start=START, **kw):
    return {"type": "price_change", "t": (start + t_s) * 1000, "best_bid": bid, "best_ask": ask,
            **kw}


def ingest(data_dir, out_dir, interval="15min", workers=1):
    cfg = IngestionConfig(data_dir=str(data_dir), out_dir=str(out_dir), bar_interval=interval,
                          workers=workers)
    bars = run(cfg)
    report = orjson.loads((out_dir / "ingestion_report.json").read_bytes())
    return bars, report


# ---------------------------------------------------------------- real data
def test_gabagool22_real_fills_shares_and_settled_pnl(tmp_path):
    """749 real fills (winner Up): 4,376.82 Up and 4,343.01 Down shares before settlement and a
    settled P&L of +4.39 USDC before fees (numbers from the issue, worked from the CSV)."""
    bars, report = ingest(GABA, tmp_path, "1min")
    tot = report["totals"]
    assert tot["read"] == tot["used"] == 749 and tot["dropped_total"] == 0
    assert tot["duplicate_id"] == 0 and tot["identical_looking"] > 0  # real identical fills kept
    assert report["positions"]["settlement_source"] == {"resolution": 1}  # resolution Up
    doc = orjson.loads(next(GABA.rglob("*.json")).read_bytes())
    fills = pd.DataFrame(doc["prices"])
    signed = np.where(fills["side"] == "BUY", 1, -1) * fills["size"]
    held = {o: signed[fills["outcome"] == o].sum() for o in ("Up", "Down")}  # before settling
    assert round(held["Up"], 2) == 4376.82 and round(held["Down"], 2) == 4343.01
    # settled P&L = what the Up shares pay (1 each, Down pays 0) - the net cash paid
    cash = bars["buy_usdc"].sum() - bars["sell_usdc"].sum()
    assert bars["realized_pnl"].iloc[-1] == pytest.approx(held["Up"] - cash, abs=1e-9)
    assert round(bars["realized_pnl"].iloc[-1], 2) == 4.39
    assert round(bars["pnl"].sum(), 2) == 4.39
    assert bars["settled"].iloc[-1] and bars["settled"].sum() == 1
    assert bars[["inv_up", "inv_down", "cost_basis"]].iloc[-1].abs().max() == 0.0
    assert bars["n_trades"].sum() == 749
    assert round(bars["net_shares"].sum(), 2) == round(4376.82 - 4343.01, 2)
    # the inventory before the settlement bar equals the running net of the fixture's fills
    cut = bars["bar_start"].iloc[-2].value // 10**6 + 60_000
    early = fills[fills["t"] < cut]
    signed = np.where(early["side"] == "BUY", 1, -1) * early["size"]
    assert bars["inv_up"].iloc[-2] == pytest.approx(signed[early["outcome"] == "Up"].sum())
    assert bars["inv_down"].iloc[-2] == pytest.approx(signed[early["outcome"] == "Down"].sum())


def test_data_api_dump_btc_markets_recognised_others_skipped(tmp_path):
    records = orjson.loads((DUMP / "distinct_baguette_trades.json").read_bytes())
    btc = {r["slug"] for r in records if r["slug"].startswith("btc-updown-15m-")}
    n_btc = sum(r["slug"] in btc for r in records)
    bars, report = ingest(DUMP, tmp_path)
    tot = report["totals"]
    assert tot["read"] == len(records) and tot["used"] == n_btc
    assert tot["dropped"] == {"not_btc_15m": len(records) - n_btc}
    assert set(report["skipped_markets"]) == {r["slug"] for r in records} - btc
    assert report["files"][0]["slugs"] and set(report["files"][0]["slugs"]) == btc
    assert set(bars["slug"].dropna()) == btc
    assert bars["address"].unique().tolist() == [records[0]["proxyWallet"]]
    assert bars["n_trades"].sum() == n_btc
    assert bars["settled"].sum() == len(btc)  # no resolution: settled from the last mark
    assert report["positions"]["settlement_source"] == {"last_mark": len(btc)}


# ---------------------------------------------------------------- accounting by hand
def test_hand_worked_accounting_up_down_buy_sell(tmp_path):
    # A (Up wins): buy 10 Up @.40 and 10 @.60 (avg .50), sell 5 Up @.70 (+1.00),
    # buy 4 Down @.30; settlement: 15 Up pay 15 (+7.50), 4 Down pay 0 (-1.20) -> +7.30
    a = START
    write_market(tmp_path, a, [trade(10, 0.40, "BUY", 10, "Up"), trade(20, 0.60, "BUY", 10, "Up"),
                               trade(70, 0.70, "SELL", 5, "Up"), trade(80, 0.30, "BUY", 4, "Down"),
                               quote(100, 0.54, 0.56)], resolution="Up")
    # B (no resolution, no outcome field -> Up token; last mid .30 -> Down wins): buy 10 @.50 -> -5
    b = START + MARKET_SECONDS
    write_market(tmp_path, b, [trade(5, 0.50, "BUY", 10, start=b), quote(600, 0.29, 0.31, start=b),
                               quote(MARKET_SECONDS + 5, 0.9, 0.95, start=b)])
    # C (Down wins): sell 5 Up @.60 with nothing held -> a short of 5 (cost -3); pays 0 -> +3
    c = START + 2 * MARKET_SECONDS
    write_market(tmp_path, c, [trade(30, 0.60, "SELL", 5, "Up", start=c)], resolution="down")
    # D (Up wins): a fill after the end, buy 10 Up @.90 -> settles at once: +1
    d = START + 3 * MARKET_SECONDS
    write_market(tmp_path, d, [trade(MARKET_SECONDS + 30, 0.90, "BUY", 10, "Up", start=d)],
                 resolution="Up")
    bars, report = ingest(tmp_path / ADDR, tmp_path / "out", "1min")
    by = bars.set_index("bar_start")
    ts = lambda s: pd.Timestamp(s, unit="s", tz="UTC")  # noqa: E731
    # market A, minute 1 (after the sale): 15 Up at avg .50, 4 Down at .30, mark mid .55
    row = by.loc[ts(a + 60)]
    assert row["inv_up"] == 15 and row["inv_down"] == 4 and row["inventory"] == 11
    assert row["avg_entry_up"] == pytest.approx(0.5) and row["avg_entry_down"] == pytest.approx(0.3)
    assert row["realized_pnl"] == pytest.approx(1.0)
    assert row["cost_basis"] == pytest.approx(15 * 0.5 + 4 * 0.3)
    assert row["net_shares"] == pytest.approx(-5 - 4)  # SELL Up -5, BUY Down -4
    assert row["sell_usdc"] == pytest.approx(3.5) and row["buy_usdc"] == pytest.approx(1.2)
    assert row["unrealized_pnl"] == pytest.approx(15 * 0.55 + 4 * 0.45 - 8.7)  # mid .55 at 100 s
    row = by.loc[ts(a)]  # minute 0: no quote yet, the last mark is the fill's price .60
    assert row["unrealized_pnl"] == pytest.approx(20 * 0.6 - 10.0)
    end_a = by.loc[ts(a + MARKET_SECONDS - 60)]
    assert end_a["settled"] and end_a["inv_up"] == 0 and end_a["inv_down"] == 0
    assert end_a["realized_pnl"] == pytest.approx(7.3)
    assert by.loc[ts(a), "net_shares"] == pytest.approx(20)
    assert by.loc[ts(a), "bars_since_entry"] == 0 and by.loc[ts(a + 120), "bars_since_entry"] == 2
    assert by.loc[ts(a + 60), "exposure_usdc"] == pytest.approx(10.0)  # max |cost| in the bar
    assert by.loc[ts(b + MARKET_SECONDS - 60), "realized_pnl"] == pytest.approx(7.3 - 5)
    c_row = by.loc[ts(c)]
    assert c_row["inv_up"] == -5 and c_row["cost_basis"] == pytest.approx(-3)
    assert by.loc[ts(c + MARKET_SECONDS - 60), "realized_pnl"] == pytest.approx(7.3 - 5 + 3)
    assert bars["realized_pnl"].iloc[-1] == pytest.approx(7.3 - 5 + 3 + 1)
    assert bars["pnl"].sum() == pytest.approx(6.3)
    pos = report["positions"]
    assert pos["oversold_trades"] == 1 and pos["post_end_trades"] == 1
    assert pos["settlement_source"] == {"resolution": 3, "last_mark": 1}
    assert (bars["bars_since_entry"][bars["inv_up"].abs() + bars["inv_down"].abs() == 0] == -1).all()


# ---------------------------------------------------------------- bars
def test_bar_sources_timeline_and_underlying(tmp_path):
    a = START
    ev = [quote(1, 0.49, 0.51), quote(2, 0.59, 0.61), quote(3, 0.39, 0.41, mid=0.40),
          quote(4, 0.54, 0.56),                                                    # minute 0
          {"type": "candle", "t": (a + 60) * 1000, "o": 0.5, "h": 0.7, "l": 0.45, "c": 0.6,
           "v": 100},                                                              # minute 1
          trade(130, 0.30, "BUY", 7, "Down"),                                      # minute 2
          {"type": "ohlcv", "t": (a + 240) * 1000, "open": 97000.0, "high": 97100.0,
           "low": 96900.0, "close": 97050.0, "volume": 3.0},                       # minute 4
          trade(300, 0.6, "BUY", 1, "Up")]                                          # minute 5
    write_market(tmp_path, a, ev, resolution="Up")
    # a second file of the same address repeats the underlying candle: used once
    write_market(tmp_path, a + MARKET_SECONDS, [ev[6], trade(10, 0.5, "BUY", 1, start=a + 900)])
    bars, _ = ingest(tmp_path / ADDR, tmp_path / "out", "1min")
    by = bars.set_index("bar_start")
    m = [by.loc[pd.Timestamp(a + 60 * i, unit="s", tz="UTC")] for i in range(6)]
    assert (m[0]["open"], m[0]["high"], m[0]["low"], m[0]["close"]) == (0.5, 0.6, 0.4, 0.55)
    assert m[0]["spread"] == pytest.approx(0.02) and m[0]["volume"] == 0
    assert (m[1]["open"], m[1]["high"], m[1]["low"], m[1]["close"]) == (0.5, 0.7, 0.45, 0.6)
    assert m[1]["volume"] == 100 and np.isnan(m[1]["spread"])
    assert m[2]["close"] == pytest.approx(0.7) and m[2]["volume"] == 7  # Down fill .30 -> Up .70
    assert not m[3]["has_data"] and np.isnan(m[3]["close"]) and not m[3]["has_underlying"]
    assert m[4]["u_close"] == 97050.0 and m[4]["u_volume"] == 3.0 and m[4]["has_underlying"]
    assert not m[4]["has_data"]
    filled = forward_filled(bars).set_axis(bars["bar_start"])
    assert filled.loc[m[3].name] == pytest.approx(0.7)  # filled, yet has_data stays False
    steps = bars["bar_start"].diff().dropna().unique()
    assert steps.tolist() == [pd.Timedelta("1min")] and list(bars.columns) == BAR_COLUMNS
    assert bars["slug"].iloc[0] == f"btc-updown-15m-{a}"
    assert bars["slug"].iloc[-1] == f"btc-updown-15m-{a + 900}"
    bars15, _ = ingest(tmp_path / ADDR, tmp_path / "out15", "15min")
    assert len(bars15) == 2 and bars15["n_trades"].tolist() == [2, 1]
    assert bars15["open"].iloc[0] == 0.5 and bars15["close"].iloc[0] == pytest.approx(0.55)
    assert bars15["bar_start"].dt.tz is not None
    with pytest.raises(IngestionError, match="bar_interval"):
        ingest(tmp_path / ADDR, tmp_path / "bad", "W")


def test_pool_matches_in_process(tmp_path):
    rng = np.random.default_rng(3)
    for k in range(6):
        s = START + k * MARKET_SECONDS
        write_market(tmp_path, s, [quote(int(x), 0.4, 0.45, start=s) for x in rng.integers(0, 900, 20)]
                     + [trade(int(x), 0.42, "BUY", 3.0, "Down", start=s)
                        for x in rng.integers(0, 900, 3)])
        s2 = s + 6 * MARKET_SECONDS
        write_market(tmp_path, s2, [  # every kind, optional fields given and absent
            {"type": "ohlcv", "t": s2 * 1000, "open": 0.4, "high": 0.5, "low": 0.3, "close": 0.45},
            {"type": "ohlcv", "t": s2 * 1000, "open": 9e4, "high": 9.1e4, "low": 8.9e4,
             "close": 9e4, "volume": -0.0}, quote(5, 0.4, 0.5, start=s2, mid=0.45),
            trade(7, 0.25, "SELL", 2.0, "Up", start=s2, usdc=0.5), {"type": "x", "t": 1}])
    one, r1 = ingest(tmp_path / ADDR, tmp_path / "o1", "1min", workers=1)
    two, r2 = ingest(tmp_path / ADDR, tmp_path / "o2", "1min", workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert r1["totals"] == r2["totals"] and r1["totals"]["dropped"] == {"unknown_type": 6}
    e1, m1, _ = load_events(IngestionConfig(data_dir=str(tmp_path / ADDR), workers=1))
    e2, m2, _ = load_events(IngestionConfig(data_dir=str(tmp_path / ADDR), workers=2))
    pd.testing.assert_frame_equal(e1, e2)
    pd.testing.assert_frame_equal(m1, m2)


# ---------------------------------------------------------------- report, quarantine, CLI
def test_a_second_file_of_the_same_market_is_dropped_and_still_reconciles(tmp_path):
    first = write_market(tmp_path / "data", START, [quote(1, 0.4, 0.6), trade(2, 0.5, "BUY", 1)])
    copy = first.with_name(first.name.replace("_prices", "z_prices"))  # sorts after `first`
    copy.write_bytes(orjson.dumps({"slug": f"btc-updown-15m-{START}", "prices": [
        quote(3, 0.4, 0.6), quote(4, 0.6, 0.5), trade(5, 0.5, "BUY", 2),  # 1 crossed book
        {"type": "weird", "t": 1}]}))  # a reason that sorts after duplicate_market
    bars, rep = ingest(tmp_path / "data", tmp_path / "out")
    f = {r["path"]: r for r in rep["files"]}
    assert f[str(first)]["used"] == 2 and f[str(first)]["dropped"] == {}
    c = f[str(copy)]
    assert c["read"] == 4 and c["used"] == 0 and c["reconciles"]
    assert c["dropped"] == {"crossed_book": 1, "duplicate_market": 2, "unknown_type": 1}
    assert list(c["dropped"]) == sorted(c["dropped"]) and rep["reconciles"]
    assert rep["totals"]["dropped"]["duplicate_market"] == 2 and int(bars["n_trades"].sum()) == 1


def test_fill_ids_from_transaction_hash_and_log_index(tmp_path):
    # a transaction holds several fills: (hash, index) is the id, a hash alone is none
    fills = [trade(1, 0.5, "BUY", 1, "Up"),  # no id keys on the first fill
             trade(2, 0.5, "BUY", 1, "Up", transactionHash="0xa", logIndex=1),
             trade(3, 0.5, "BUY", 2, "Up", transactionHash="0xa", logIndex=2),  # same tx, kept
             trade(4, 0.5, "BUY", 3, "Up", transactionHash="0xa", logIndex=1),  # repeat: dropped
             trade(5, 0.5, "BUY", 4, "Up", transactionHash="0xb"),  # hash alone: no id, kept
             trade(6, 0.5, "BUY", 5, "Up", transactionHash="0xb"),  # ... so no repeat either
             trade(7, 0.5, "BUY", 6, "Up", tx_hash="0xc", index=0),
             trade(8, 0.5, "BUY", 7, "Up", tx_hash="0xc", index=0),  # aliases: dropped
             trade(9, 0.5, "BUY", 8, "Up", id="x", transactionHash="0xa", logIndex=1)]  # id wins
    path = write_market(tmp_path / "data", START, fills)
    bars, rep = ingest(tmp_path / "data", tmp_path / "out")
    f = {r["path"]: r for r in rep["files"]}[str(path)]
    assert f["read"] == 9 and f["used"] == 7 and f["duplicate_id"] == 2 and f["reconciles"]
    assert int(bars["n_trades"].sum()) == 7
    assert bars["net_shares"].sum() == 1 + 1 + 2 + 4 + 5 + 6 + 8


def test_ids_on_quotes_and_bars_are_found_among_clean_events(tmp_path):
    # every other quote is canonical (type + t, bid, ask, mid): the id must still be seen
    clean = [quote(k, 0.4, 0.6, mid=0.5) for k in range(1, 9)]
    good = write_market(tmp_path / "data", START, clean + [
        quote(10, 0.4, 0.6, mid=0.5, id="q1"), quote(11, 0.41, 0.6, mid=0.5, id="q1"),  # dup id
        {"type": "ohlcv", "t": START * 1000, "open": 0.5, "high": 0.6, "low": 0.4, "close": 0.5,
         "volume": 1.0, "id": "b1"},
        {"type": "ohlcv", "t": START * 1000 + 60_000, "open": 0.5, "high": 0.6, "low": 0.4,
         "close": 0.5, "volume": 2.0, "id": "b1"}])                                   # dup id
    _, rep = ingest(tmp_path / "data", tmp_path / "out")
    f = {r["path"]: r for r in rep["files"]}[str(good)]
    assert f["read"] == 12 and f["used"] == 10 and f["duplicate_id"] == 2
    assert f["dropped"] == {"duplicate_id": 2} and f["reconciles"]


def test_report_quarantine_and_duplicates(tmp_path):
    d = tmp_path / "data" / ADDR
    good = write_market(tmp_path / "data", START, [
        trade(1, 0.5, "BUY", 1, "Up", id="a"), trade(1, 0.5, "BUY", 1, "Up", id="a"),   # dup id
        trade(2, 0.5, "BUY", 1, "Up"), trade(2, 0.5, "BUY", 1, "Up"),                  # identical
        trade(3, 1.5, "BUY", 1), trade(3, 0.5, "HOLD", 1), trade(3, 0.5, "BUY", -1),
        quote(4, 0.6, 0.5), {"type": "weird", "t": 1}, {"t": 5}, 7,
        trade(5, 0.5, "BUY", 2, usdc=5.0)])
    (d / "btc-updown-15m-1768905000_prices.json").write_bytes(b'{"slug": "btc-updown-15m-1768')
    write_market(tmp_path / "data", START, [trade(1, 0.5, "BUY", 1)],
                 slug="btc-updown-5m-1768904100")
    (d / "btc-noslug_prices.json").write_bytes(orjson.dumps({"prices": [1, 2]}))
    before = {p: p.read_bytes() for p in d.iterdir()}
    bars, rep = ingest(tmp_path / "data", tmp_path / "out")
    assert {p: p.read_bytes() for p in d.iterdir()} == before  # the user's files are untouched
    f = {r["path"]: r for r in rep["files"]}[str(good)]
    assert f["read"] == 12 and f["used"] == 3 and f["duplicate_id"] == 1
    assert f["identical_looking"] == 1
    assert f["dropped"] == {"bad_price": 1, "bad_side": 1, "bad_size": 1, "crossed_book": 1,
                            "unknown_type": 1, "missing_type": 1, "not_object": 1,
                            "duplicate_id": 1, "usdc_mismatch": 1}
    assert f["unknown_types"] == {"weird": 1}
    assert rep["reconciles"] and all(r["reconciles"] for r in rep["files"])
    assert rep["totals"]["read"] == rep["totals"]["used"] + rep["totals"]["dropped_total"]
    reasons = {r["path"].rsplit("/", 1)[1]: r["reason"] for r in rep["quarantined"]}
    assert reasons["btc-noslug_prices.json"] == "missing_slug"
    assert reasons["btc-updown-15m-1768905000_prices.json"].startswith("invalid_json")
    assert [s["reason"] for s in rep["skipped"]] == ["not_btc_15m"]
    assert rep["totals"]["files_found"] == 4 and bars["n_trades"].sum() == 3
    events, report = load_price_file(d / "btc-noslug_prices.json")
    assert events.empty and report["status"] == "quarantined" and report["read"] == 2


def test_cli_writes_parquet_and_report_and_user_errors_exit_2(tmp_path):
    write_market(tmp_path / "data", START, [quote(1, 0.4, 0.6), trade(2, 0.5, "BUY", 3, "Up")])
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "data_ingestion.py"), "--data_dir", str(tmp_path / "data"),
           "--out_dir", str(out), "--bar_interval", "1min", "--workers", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    bars = pd.read_parquet(out / "bars.parquet")
    assert list(bars.columns) == BAR_COLUMNS and len(bars) == 15 and bars["n_trades"].sum() == 1
    assert orjson.loads((out / "ingestion_report.json").read_bytes())["reconciles"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    for args in (["--data_dir", str(tmp_path / "missing")], ["--bar_interval", "bogus"]):
        res = subprocess.run(cmd[:2] + args + ["--out_dir", str(tmp_path / "o2")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run(cmd[:2] + ["--help"], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    for flag in ("--data_dir", "--out_dir", "--bar_interval", "--workers", "--max_file_mb"):
        assert flag in res.stdout
    assert res.stdout.count("(default:") == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestionError, match="no usable price file.*report: .*o3"):
        run(IngestionConfig(data_dir=str(empty), out_dir=str(tmp_path / "o3"), workers=1))
    rep = orjson.loads((tmp_path / "o3" / "ingestion_report.json").read_bytes())
    assert rep["totals"]["files_found"] == 0 and "no usable price file" in rep["error"]


# ---------------------------------------------------------------- no leakage: truncation
def _random_history(root, rng, n_markets=5):
    """Markets with quotes, token and underlying candles and fills (some with, some without
    resolution); returns every event time (ms)."""
    times = []
    for k in range(n_markets):
        s = START + k * MARKET_SECONDS
        ev = []
        for x in np.sort(rng.integers(-60, MARKET_SECONDS + 60, 40)):
            mid = float(rng.uniform(0.05, 0.95))
            ev.append(quote(int(x), round(mid - 0.01, 3), round(mid + 0.01, 3), start=s))
        for m in range(0, MARKET_SECONDS, 60):
            ev.append({"type": "ohlcv", "t": (s + m) * 1000, "open": 90000.0 + m,
                       "high": 90100.0 + m, "low": 89900.0 + m, "close": 90050.0 + m,
                       "volume": 1.0})
        for x in rng.integers(0, MARKET_SECONDS + 30, 8):
            ev.append(trade(int(x), float(rng.uniform(0.05, 0.95)), str(rng.choice(["BUY", "SELL"])),
                            float(rng.integers(1, 50)), str(rng.choice(["Up", "Down"])), start=s))
        rng.shuffle(ev)  # the loader sorts by t
        write_market(root, s, ev, resolution=[None, "Up", "Down"][k % 3])
        times += [e["t"] for e in ev]
    return np.array(times)


@pytest.mark.parametrize("interval", ["1min", "15min"])
def test_truncation_changes_no_bar_that_ends_before_the_cut(tmp_path, interval):
    rng = np.random.default_rng(7)
    full_dir = tmp_path / "full"
    times = _random_history(full_dir, rng)
    full, _ = ingest(full_dir / ADDR, tmp_path / "o", interval)
    iv = pd.Timedelta(interval)
    lo, hi = times.min(), times.max()
    cuts = [int(x) for x in rng.integers(lo + 60_000, hi, 8)]
    cuts += [int(pd.Timestamp(c, unit="ms").floor(interval).value // 10**6) for c in cuts[:4]]
    for T in cuts:
        cut_dir = tmp_path / f"cut{T}" / ADDR
        for p in (full_dir / ADDR).iterdir():
            doc = orjson.loads(p.read_bytes())
            doc["prices"] = [e for e in doc["prices"] if e["t"] < T]
            cut_dir.mkdir(parents=True, exist_ok=True)
            (cut_dir / p.name).write_bytes(orjson.dumps(doc))
        cut, _ = ingest(cut_dir, tmp_path / "oc", interval)
        t_cut = pd.Timestamp(T, unit="ms", tz="UTC")
        keep = full["bar_start"] + iv <= t_cut
        if T % int(iv / pd.Timedelta("1ms")) == 0:  # on a boundary: every bar starting before T
            keep = full["bar_start"] < t_cut
        a = full[keep].reset_index(drop=True)
        b = cut[cut["bar_start"].isin(a["bar_start"])].reset_index(drop=True)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------- the embedded demo
def test_demo_set_ingests_clean_and_matches_the_truth(demo_tree, tmp_path):
    bars, rep = ingest(demo_tree["data_dir"], tmp_path, "15min", workers=2)
    assert rep["totals"]["dropped_total"] == 0 and rep["reconciles"]
    assert rep["totals"]["files_used"] == demo_tree["summary"]["files"]
    assert bars["n_trades"].sum() == demo_tree["summary"]["trades"]
    truth = pd.concat(pd.read_parquet(p) for p in demo_tree["truth_dir"].glob("*.parquet"))
    merged = bars.merge(truth, left_on=["address", "bar_start"],
                        right_on=["address", "decision_time"], suffixes=("", "_truth"))
    assert len(merged) == len(truth)
    np.testing.assert_allclose(merged["net_shares"], merged["net_shares_truth"], atol=1e-6)


def test_build_bars_on_empty_events_and_copy_of_fixture(tmp_path):
    shutil.copytree(GABA, tmp_path / "g")
    events, markets, _ = load_events(IngestionConfig(data_dir=str(tmp_path / "g"), workers=1))
    empty = build_bars(events.iloc[:0], markets, "15min")
    assert empty.empty and list(empty.columns) == BAR_COLUMNS
