"""The demo's zoo of simulated traders (_demo_zoo.py through demo_data.py): every family is
non-trivial at its default interval, draws from its seed, and is causal (truncation test of the
simulator itself: changing the world after T moves no decision at or before T)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

import demo_data as dd
from _demo_zoo import FAMILIES, MARKET_SECONDS, RANDOM_PROBS

T_START = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())
DAYS = {"15min": 40, "1min": 4}  # >= 3,800 / 5,700 decisions: class shares within ~1 %


@pytest.fixture(scope="module")
def worlds():
    return {iv: dd.make_world(0, DAYS[iv], T_START, dd.INTERVALS[iv])[0] for iv in DAYS}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_draws_all_five_classes_and_its_oracle_beats_the_majority(family, worlds):
    w = worlds[FAMILIES[family][0]]  # the family's default interval
    (probs, actions, net, _), coef = dd.simulate(f"zoo:{family}", 0, 0, w, T_START)
    share = np.bincount(actions, minlength=5) / len(actions)
    assert share.min() >= 0.03, f"{family}: class shares {np.round(share, 3)}"
    assert share.max() <= 0.85, f"{family}: one class dominates {np.round(share, 3)}"
    oracle = (probs.argmax(1) == actions).mean()
    assert oracle > share.max() + 0.02, f"{family}: oracle {oracle:.3f} vs majority {share.max():.3f}"
    assert np.allclose(probs.sum(1), 1.0) and coef["beta"] > 0
    traded = actions != 2
    assert np.all(np.sign(net[traded]) == np.where(actions[traded] < 2, 1, -1))


def test_coefficients_follow_the_seed(worlds):
    w = worlds["15min"]
    a = dd.simulate("zoo:trend", 3, 0, w, T_START)[1]
    assert a == dd.simulate("zoo:trend", 3, 0, w, T_START)[1]
    assert a != dd.simulate("zoo:trend", 4, 0, w, T_START)[1]
    assert a != dd.simulate("zoo:trend", 3, 1, w, T_START)[1]  # another trader of the family


def _perturbed(w, t_idx: int, rng: np.random.Generator):
    """The same world up to second t_idx; BTC, quotes and resolutions redrawn after it."""
    price = w.price.copy()
    price[t_idx + 1:] *= np.exp(np.cumsum(rng.normal(0, 3e-4, len(price) - t_idx - 1)))
    bid, ask = w.bid.copy(), w.ask.copy()
    sec = w.w_idx[:, None] + np.arange(MARKET_SECONDS)[None, :]  # path index of each second
    later = sec >= t_idx
    new_bid = rng.integers(1, 97, bid.shape)
    bid[later], ask[later] = new_bid[later], new_bid[later] + 2
    res_up = price[w.w_idx + MARKET_SECONDS] >= price[w.w_idx]
    assert np.array_equal(res_up[w.w_idx + MARKET_SECONDS <= t_idx],
                          w.res_up[w.w_idx + MARKET_SECONDS <= t_idx])
    return replace(w, price=price, bid=bid, ask=ask, res_up=res_up)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_no_decision_reads_the_world_after_its_time(family, worlds):
    iv = FAMILIES[family][0]
    w = worlds[iv]
    # T inside a market, 7 min 30 s after the open of a market 60 % of the way in
    t_idx = int(w.w_idx[int(len(w.w_idx) * 0.6)] + 450)
    cut = _perturbed(w, t_idx, np.random.default_rng(5))
    (p0, a0, n0, _), _ = dd.simulate(f"zoo:{family}", 0, 0, w, T_START)
    (p1, a1, n1, _), _ = dd.simulate(f"zoo:{family}", 0, 0, cut, T_START)
    before = w.dec_idx <= t_idx
    assert before.sum() > 100 and (~before).sum() > 100
    np.testing.assert_array_equal(p0[before], p1[before])
    np.testing.assert_array_equal(a0[before], a1[before])
    assert not np.array_equal(p0[~before], p1[~before]), "the perturbation changed nothing"


def test_legacy_strategies_are_unchanged_by_the_zoo(worlds):
    """The seed's strategies still ignore knobs they never had (random ignores its own state)."""
    w = worlds["1min"]
    (p, a, _, _), coef = dd.simulate("random", 0, 0, w, T_START)
    assert coef == {} and np.allclose(p, RANDOM_PROBS)


def test_cli_writes_a_zoo_trader_and_rejects_bad_families(tmp_path, capsys):
    out, truth = tmp_path / "mt", tmp_path / "truth"
    dd.main(["--out", str(out), "--truth-dir", str(truth), "--days", "1", "--strategy",
             "zoo:profit_taker", "--decision-interval", "1min", "--seed", "2"])
    files = sorted(out.glob("*/btc-updown-15m-*_prices.json"))
    assert len(files) == 96
    fills = [e for f in files for e in orjson.loads(f.read_bytes())["prices"] if e["type"] == "trade"]
    assert {e["outcome"] for e in fills} == {"Up", "Down"} and {e["side"] for e in fills} == {"BUY", "SELL"}
    t = pq.read_table(next(truth.glob("*.parquet")))
    assert t.column("strategy")[0].as_py() == "zoo:profit_taker" and t.num_rows == 96 * 15
    assert orjson.loads(t.schema.metadata[b"coefficients"])["take_profit"] > 0
    for bad, why in ((["--strategy", "zoo:nope"], "zoo:FAMILY"),
                     (["--strategy", "zoo:late_winner", "--decision-interval", "15min"], "decides at 1min")):
        with pytest.raises(SystemExit) as e:
            dd.main(["--out", str(out), "--truth-dir", str(truth), *bad])
        assert e.value.code == 2 and why in capsys.readouterr().err
