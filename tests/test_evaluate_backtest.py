"""Tests of _evaluate_backtest: the fee formula, fills at quotes (no peeking), settlement, the
replay check on the demo, the trader's fees from real maker/taker roles, the statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES

import _evaluate_backtest as eb
import data_ingestion as di
from action_discretization import HOLD

START = 1_768_000_500  # a market window start (Unix s, a multiple of 900)
SIZES = {"STRONG_BUY": 200.0, "BUY": 30.0, "HOLD": 0.0, "SELL": -30.0, "STRONG_SELL": -200.0}


def market_rows(n_bars: int = 1, bar: str = "15min", settle: float = 1.0) -> pd.DataFrame:
    """Rows of one address in the market starting at START (address, bar_start, slug, ...)."""
    return pd.DataFrame({
        "address": "0xa",
        "bar_start": pd.date_range(pd.Timestamp(START, unit="s", tz="UTC"), periods=n_bars, freq=bar),
        "slug": f"btc-updown-15m-{START}", "settle_up": settle, "net_shares": 0.0, "pnl": 0.0})


def quotes(offsets_s, bids, asks) -> pd.DataFrame:
    """Quotes of that market at START + offset seconds."""
    return pd.DataFrame({"address": "0xa", "slug": f"btc-updown-15m-{START}",
                         "t": [START * 1000 + int(o * 1000) for o in offsets_s],
                         "best_bid": bids, "best_ask": asks})


def simulate(rows, orders, q, latency_s=2.0, bar_ms=900_000, **kw):
    book = eb.execution_quotes(rows, q, latency_s, bar_ms)
    return eb.simulate(book, orders, rows["bar_start"].to_numpy(), **kw)


# ---------------------------------------------------------------- the fee
def test_taker_fee_is_polymarkets_formula_with_the_documented_example():
    assert eb.taker_fee(100, 0.50) == pytest.approx(1.5625)  # "1.56" on 100 shares at 0.50
    # the Maker Rebates Program's table (100 shares): 0.20 at 0.10, 0.64 at 0.20, 1.10 at 0.30
    np.testing.assert_allclose(eb.taker_fee(100, [0.10, 0.20, 0.30, 0.40]),
                               [0.2025, 0.64, 1.1025, 1.44])
    assert eb.taker_fee(100, 0.7) == pytest.approx(eb.taker_fee(100, 0.3))
    assert eb.taker_fee(100, 0.5, rate=0.5, exponent=1.0) == pytest.approx(12.5)
    # a buy pays in tokens (worth 0.78 USDC at 0.50), a sell in USDC
    np.testing.assert_allclose(eb.fee_usdc_at_fill(100, 0.5, [True, False]), [0.78125, 1.5625])


def test_a_buy_fee_is_taken_in_tokens_and_a_sell_fee_in_usdc():
    rows = market_rows(2, "1min", settle=1.0)
    q = quotes([5, 65], [0.48, 0.58], [0.50, 0.60])
    fills, pm = simulate(rows, [100.0, -50.0], q, bar_ms=60_000)
    buy_fee, sell_fee = eb.taker_fee(100, 0.50), eb.taker_fee(50, 0.58)
    assert fills["fee_in"].tolist() == ["tokens", "usdc"]
    # settled Up at 1: the 100 - 50 tokens still held pay 1 each, less the fee's tokens
    before = -100 * 0.50 + 50 * 0.58 + 50 * 1.0
    assert pm["pnl_before"][0] == pytest.approx(before)
    assert pm["pnl_after"][0] == pytest.approx(before - buy_fee * 1.0 - sell_fee)
    _, down = simulate(rows.assign(settle_up=0.0), [100.0, -50.0], q, bar_ms=60_000)
    assert down["fees"][0] == pytest.approx(sell_fee)  # the fee's tokens paid 0


# ---------------------------------------------------------------- fills without peeking
def test_each_fill_uses_the_first_quote_at_or_after_decision_plus_latency():
    rows = market_rows().assign(net_shares=10.0)
    q = quotes([-60, 0.5, 1.9, 2.0, 3.0], bids=[0.08, 0.18, 0.28, 0.48, 0.58],
               asks=[0.10, 0.20, 0.30, 0.50, 0.60])
    fills, _ = simulate(rows, [10.0], q, latency_s=2.0)
    assert fills["price"].tolist() == [0.50] and fills["t"].tolist() == [START * 1000 + 2000]
    fills, _ = simulate(rows, [10.0], q, latency_s=2.5)
    assert fills["price"].tolist() == [0.60]
    sell, _ = simulate(rows, [-10.0], q, latency_s=2.5)  # nothing held: buys Down at 1 - bid
    assert sell["token"].tolist() == ["Down"] and sell["price"].tolist() == [pytest.approx(0.42)]
    none, pm = simulate(rows, [10.0], q, latency_s=10.0)  # no quote after the decision + latency
    assert none.empty and pm["unfilled_orders"] == 1 and pm["pnl_after"][0] == 0.0


def test_a_quote_after_the_bars_end_fills_nothing():
    rows = market_rows(2, "1min")
    q = quotes([70.0], [0.48], [0.50])  # inside bar 2 only
    fills, pm = simulate(rows, [10.0, 0.0], q, bar_ms=60_000)
    assert fills.empty and pm["unfilled_orders"] == 1


def test_the_bot_never_fills_at_the_traders_own_price():
    rows = market_rows().assign(net_shares=10.0, pnl=10 * (1.0 - 0.05))  # trader bought at 0.05
    trader_fills = pd.DataFrame({"address": "0xa", "slug": rows["slug"], "t": [START * 1000 + 2500],
                                 "price": 0.05, "size": 10.0, "side": 1, "outcome": 0, "role": 2})
    q = quotes([2.2], [0.60], [0.62])
    s, _ = eb.run_backtest(rows, np.array([1]), np.array([0.0, 1.0]), np.ones((2, 1), int),
                           SIZES | {"BUY": 10.0}, q, trader_fills, bar_ms=900_000, n_boot=50)
    expected = 10 * (1.0 - 0.62) - eb.taker_fee(10, 0.62)  # at the quote's ask, not 0.05
    assert s["bot"]["after_fees"]["total_usdc"] == pytest.approx(expected)


def test_sell_side_sells_held_up_first_then_buys_down_and_the_cap_cuts_orders():
    rows = market_rows(3, "1min", settle=0.0)
    q = quotes([5, 65, 125], [0.40, 0.40, 0.40], [0.42, 0.42, 0.42])
    fills, pm = simulate(rows, [20.0, -50.0, 0.0], q, bar_ms=60_000, rate=0.0)
    assert fills["token"].tolist() == ["Up", "Up", "Down"]
    assert fills["side"].tolist() == [1.0, -1.0, 1.0]
    np.testing.assert_allclose(fills["shares"], [20.0, 20.0, 30.0])
    np.testing.assert_allclose(fills["price"], [0.42, 0.40, 0.60])
    assert pm["pnl_before"][0] == pytest.approx(-20 * 0.42 + 20 * 0.40 - 30 * 0.60 + 30 * 1.0)
    capped, pc = simulate(rows, [20.0, 20.0, 20.0], q, bar_ms=60_000, cap=50.0, rate=0.0)
    np.testing.assert_allclose(capped["shares"], [20.0, 20.0, 10.0])
    assert pc["capped_orders"] == 1


def test_an_all_hold_bot_makes_exactly_zero(demo_bars):
    bars, q, f = demo_bars
    hold = np.full(len(bars), HOLD)
    s, curve = eb.run_backtest(bars, hold, np.array([0.0, 1.0]), np.stack([hold, hold]), SIZES, q, f,
                               bar_ms=900_000, n_boot=100)
    for k in ("before_fees", "after_fees"):
        assert s["bot"][k]["total_usdc"] == 0.0 and s["bot"][k]["max_drawdown_usdc"] == 0.0
    assert s["bot"]["fees_usdc"] == 0.0 and s["bot"]["fills"] == 0
    assert (curve["bot_after_fees"] == 0.0).all()
    assert s["rtg_table"]["total_usdc"] == [0.0, 0.0] and not s["rtg_table"]["steers"]


# ---------------------------------------------------------------- on the demo
@pytest.fixture(scope="module")
def demo_bars(demo_tree):
    events, markets, _ = di.load_events(di.IngestionConfig(data_dir=str(demo_tree["data_dir"]),
                                                           workers=1))
    q, f = di.quotes_and_fills(events)
    return di.build_bars(events, markets, "15min"), q, f


def test_the_replay_reproduces_the_traders_settled_pnl_on_the_demo(demo_bars):
    bars, q, f = demo_bars
    acts = np.full(len(bars), HOLD)
    s, _ = eb.run_backtest(bars, acts, np.array([0.0, 1.0]), np.stack([acts, acts]), SIZES, q, f,
                           bar_ms=900_000, n_boot=100)
    r = s["replay"]
    assert r["trader_pnl_usdc"] == pytest.approx(bars["pnl"].sum())
    assert r["notional_usdc"] > 1000 and r["unfilled_orders"] == 0
    assert abs(r["difference_usdc"]) <= eb.REPLAY_TOLERANCE * r["notional_usdc"]
    assert r["within_tolerance"] is True
    assert r["pnl_after_fees_usdc"] < r["pnl_before_fees_usdc"]  # the demo trader is a taker
    t = s["trader"]  # the demo's fills carry no role
    assert not t["fees_known"] and t["after_fees"] is None and t["fees_if_all_taker_usdc"] > 0
    # one fill per (row, token): the replay's own fees are what a taker would have paid
    assert r["pnl_before_fees_usdc"] - r["pnl_after_fees_usdc"] == pytest.approx(
        t["fees_if_all_taker_usdc"], rel=0.2)


def test_the_traders_fees_come_from_the_real_fills_maker_taker_role():
    events, markets, _ = di.load_events(di.IngestionConfig(
        data_dir=str(FIXTURES / "ingestion" / "gabagool22"), workers=1))
    q, f = di.quotes_and_fills(events)
    assert q.empty and f["role"].value_counts().to_dict() == {1: 713, 2: 36}
    bars = di.build_bars(events, markets, "15min")
    hold = np.full(len(bars), HOLD)
    args = (bars, hold, np.array([0.0, 1.0]), np.stack([hold, hold]), SIZES)
    s, curve = eb.run_backtest(*args, q, f, bar_ms=900_000, n_boot=50, reason="no quotes here")
    assert not s["available"] and s["reason"] == "no quotes here" and curve is None
    slug = markets["slug"].iloc[0]
    crafted = pd.DataFrame({"address": f["address"].iloc[0], "slug": slug,
                            "t": [int(markets["start_ms"].iloc[0]) + 1000], "best_bid": [0.49],
                            "best_ask": [0.51]})
    s, curve = eb.run_backtest(*args, crafted, f, bar_ms=900_000, n_boot=50)
    t = s["trader"]
    taker = f[f["role"] == 2]
    pay = np.where(taker["outcome"] == 0, 1.0, 0.0)  # resolution Up
    fee = eb.taker_fee(taker["size"], taker["price"])
    expected = np.where(taker["side"] > 0, fee * pay, fee).sum()
    assert t["fees_known"] and t["role_known_share"] == 1.0 and t["fills"] == len(f)
    assert t["fees_usdc"] == pytest.approx(expected) and expected > 0
    assert t["after_fees"]["total_usdc"] == pytest.approx(t["before_fees"]["total_usdc"] - expected)
    assert "trader_after_fees" in curve


# ---------------------------------------------------------------- statistics
def test_pnl_summary_drawdown_hit_rate_sharpe_and_interval():
    pnl = np.array([1.0, -3.0, 2.0, 0.0])
    day = pd.to_datetime(["2026-01-05", "2026-01-05", "2026-01-06", "2026-01-08"], utc=True)
    s = eb.pnl_summary(pnl, np.array([True, True, True, False]), day, eb.resample_markets(4, 500, 0))
    assert s["total_usdc"] == 0.0 and s["max_drawdown_usdc"] == 3.0
    assert s["hit_rate"] == pytest.approx(2 / 3) and s["markets_traded"] == 3
    assert s["days"] == 4  # 2026-01-07 had no market: a zero day
    daily = np.array([-2.0, 2.0, 0.0, 0.0])
    assert s["sharpe_daily"] == pytest.approx(daily.mean() / daily.std(ddof=1))
    assert s["sharpe_annualised"] == pytest.approx(s["sharpe_daily"] * math.sqrt(365))
    lo, hi = s["mean_ci95_usdc"]
    assert lo < s["mean_per_market_usdc"] < hi
    assert eb.pnl_summary(np.ones(3), np.ones(3, bool), day[:3].floor("D")[[0, 0, 0]],
                          eb.resample_markets(3, 10, 0))["sharpe_daily"] is None


def test_the_rtg_table_says_whether_the_target_steers_return():
    rng = np.random.default_rng(0)
    targets = np.linspace(-0.1, 0.1, 5)
    noise = rng.normal(0, 1, 400)
    idx = eb.resample_markets(400, 500, 0)
    steer = eb.rtg_table(targets, np.stack([noise + 3 * t * 10 for t in targets]), idx)
    assert steer["steers"] and steer["spearman"] == pytest.approx(1.0)
    assert steer["verdict"].startswith("the target steers return: higher targets give higher")
    flat = eb.rtg_table(targets, np.stack([noise] * 5), idx)
    assert not flat["steers"] and flat["spearman"] is None and flat["intervals_overlap"]
    assert flat["verdict"].startswith("no evidence")
