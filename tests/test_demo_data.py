"""Tests of demo_data.py: the simulated market files keep the DESIGN.md input contract, the run is
deterministic, the simulated policy is non-trivial and state-driven, and the fills agree with the
recorded truth. Small runs (1-2 days) in tmp_path, plus the session's 6-day `demo_tree`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

import demo_data
from demo_data import POLICY_ACTIONS, DemoConfig, run

SLUG = re.compile(r"^btc-updown-15m-(\d+)$")
UP_EQ = {("BUY", "Up"): 1.0, ("SELL", "Down"): 1.0, ("BUY", "Down"): -1.0, ("SELL", "Up"): -1.0}


def _run(tmp_path: Path, name: str = "a", **kw) -> tuple[Path, Path, dict]:
    """Run a small demo into tmp_path/name; return (data_dir, truth_dir, summary)."""
    cfg = DemoConfig(out=str(tmp_path / name / "mt"), truth_dir=str(tmp_path / name / "truth"),
                     **{"days": 1, **kw})
    return Path(cfg.out), Path(cfg.truth_dir), run(cfg)


def _docs(data_dir: Path) -> dict[Path, dict]:
    return {p: orjson.loads(p.read_bytes()) for p in sorted(data_dir.glob("*/btc-*_prices.json"))}


def _truth(truth_dir: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(truth_dir.glob("*.parquet"))])


def _trades(docs: dict[Path, dict]) -> pd.DataFrame:
    rows = [{**e, "address": d["address"], "slug": d["slug"]}
            for d in docs.values() for e in d["prices"] if e["type"] == "trade"]
    return pd.DataFrame(rows)


def _check_contract(path: Path, doc: dict) -> None:
    """Assert one file keeps the DESIGN.md input contract (and the demo's own promises)."""
    m = SLUG.match(doc["slug"])
    assert m and path.name == f"{doc['slug']}_prices.json" and path.parent.name == doc["address"]
    w_ms = int(m.group(1)) * 1000
    assert int(m.group(1)) % 900 == 0 and doc["resolution"] in ("Up", "Down")
    ev = doc["prices"]
    ts = [e["t"] for e in ev]
    assert all(isinstance(t, int) for t in ts) and ts == sorted(ts)
    assert w_ms <= ts[0] and ts[-1] < w_ms + 900_000  # every event inside the market's window
    token, btc = [], []
    for e in ev:
        if e["type"] == "trade":
            assert 0 < e["price"] < 1 and e["size"] > 0 and e["side"] in ("BUY", "SELL")
            assert e["outcome"] in ("Up", "Down")
            assert abs(e["usdc"] - e["price"] * e["size"]) <= 0.01 * e["price"] * e["size"] + 0.01
        elif e["type"] == "price_change":
            assert 0 < e["best_bid"] <= e["best_ask"] < 1
            assert e["mid"] == pytest.approx((e["best_bid"] + e["best_ask"]) / 2)
        else:
            assert e["type"] == "ohlcv" and (e["t"] - w_ms) % 60_000 == 0 and e["volume"] >= 0
            assert e["low"] <= min(e["open"], e["close"]) <= max(e["open"], e["close"]) <= e["high"]
            (token if e["high"] < 1 else btc).append(e)
    assert all(0 < e["low"] for e in token) and all(e["low"] > 1 for e in btc)
    assert len(token) == len(btc) == 15  # 1-minute bars of the Up token and of BTC/USD
    changes = [(e["best_bid"], e["best_ask"]) for e in ev if e["type"] == "price_change"]
    assert 0 < len(changes) <= 400 and all(a != b for a, b in zip(changes, changes[1:], strict=False))


def _net_per_decision(truth: pd.DataFrame, trades: pd.DataFrame, step_ms: int) -> np.ndarray:
    """Up-equivalent net of the fills inside each decision's interval, aligned to truth rows."""
    out = np.zeros(len(truth))
    dt = truth["decision_time"].astype("int64").to_numpy() // 1_000_000
    for addr in truth["address"].unique():
        rows = np.flatnonzero(truth["address"].to_numpy() == addr)
        tr = trades[trades["address"] == addr]
        sign = np.array([UP_EQ[(s, o)] for s, o in zip(tr["side"], tr["outcome"], strict=True)])
        pos = np.searchsorted(dt[rows], tr["t"].to_numpy(), side="right") - 1
        assert (pos >= 0).all() and (tr["t"].to_numpy() < dt[rows][pos] + step_ms).all()
        out[rows] = np.bincount(pos, weights=sign * tr["size"].to_numpy(), minlength=len(rows))
    return out


def test_policy_actions_match_action_discretization():
    ad = pytest.importorskip("action_discretization")
    assert tuple(ad.ACTIONS) == POLICY_ACTIONS


def test_files_keep_the_input_contract(demo_tree):
    docs = _docs(demo_tree["data_dir"])
    assert len(docs) == 6 * 96 == demo_tree["summary"]["files"]
    for path, doc in docs.items():
        _check_contract(path, doc)
    assert sum(len(d["prices"]) for d in docs.values()) == demo_tree["summary"]["events"]


def test_resolution_follows_the_btc_path(demo_tree):
    docs = _docs(demo_tree["data_dir"])
    res = []
    for doc in docs.values():
        btc = [e for e in doc["prices"] if e["type"] == "ohlcv" and e["high"] > 1]
        up = btc[-1]["close"] >= btc[0]["open"]  # close of the last second vs the window's open
        assert doc["resolution"] == ("Up" if up else "Down")
        res.append(up)
    assert 0.3 < np.mean(res) < 0.7
    # consecutive markets chain: a window's BTC open is the previous window's close
    by_start = sorted(docs.values(), key=lambda d: d["slug"])
    for a, b in zip(by_start, by_start[1:], strict=False):
        assert [e for e in a["prices"] if e["type"] == "ohlcv" and e["high"] > 1][-1]["close"] == \
            [e for e in b["prices"] if e["type"] == "ohlcv" and e["high"] > 1][0]["open"]


def test_policy_is_not_trivial(demo_tree):
    truth = _truth(demo_tree["truth_dir"])
    probs = truth[[f"prob_{i}" for i in range(5)]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0) and (probs > 0).all()
    shares = np.bincount(truth["action"], minlength=5) / len(truth)
    assert (shares > 0.03).all() and shares.max() <= 0.70
    oracle = probs.max(1).mean()
    assert oracle > shares.max() + 0.15


def test_default_run_strong_is_a_quarter_of_each_side(tmp_path):
    """Over the default 30 days, STRONG is ~25 % of each side's non-HOLD decisions (the pipeline's
    default threshold is the 75th percentile of the nets), in expectation and as drawn."""
    data, truth_dir, s = _run(tmp_path, "full", days=30)
    assert s["files"] == 2880 == len(list(data.glob("*/*.json")))
    truth = _truth(truth_dir)
    e = truth[[f"prob_{i}" for i in range(5)]].to_numpy().mean(0)
    n = np.bincount(truth["action"], minlength=5)
    for strong, normal in ((0, 1), (4, 3)):
        assert abs(e[strong] / (e[strong] + e[normal]) - 0.25) < 0.03
        assert abs(n[strong] / (n[strong] + n[normal]) - 0.25) < 0.04
    assert n.max() / n.sum() < 0.45 and truth[[f"prob_{i}" for i in range(5)]].max(1).mean() > 0.55


def test_fills_agree_with_the_truth(demo_tree):
    truth = _truth(demo_tree["truth_dir"])
    trades = _trades(_docs(demo_tree["data_dir"]))
    net = _net_per_decision(truth, trades, 900_000)
    np.testing.assert_allclose(net, truth["net_shares"], atol=1e-6)
    a = truth["action"].to_numpy()
    assert (net[a <= 1] > 0).all() and (net[a == 2] == 0).all() and (net[a >= 3] < 0).all()
    size = np.abs(net)
    assert size[(a == 0) | (a == 4)].min() > 2 * size[(a == 1) | (a == 3)].max()
    # every fill is a few seconds after its decision, at the book top in effect (walking <= 3 ticks)
    for doc in list(_docs(demo_tree["data_dir"]).values())[:200]:
        bid = ask = None
        for e in doc["prices"]:
            if e["type"] == "price_change":
                bid, ask = e["best_bid"], e["best_ask"]
            elif e["type"] == "trade":
                ref = {("BUY", "Up"): ask, ("SELL", "Up"): bid,
                       ("BUY", "Down"): 1 - bid, ("SELL", "Down"): 1 - ask}[(e["side"], e["outcome"])]
                slip = (e["price"] - ref) * (1 if e["side"] == "BUY" else -1)
                assert -1e-9 <= slip <= 0.03 + 1e-9 or e["price"] in (0.01, 0.99)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a_dir, a_truth, _ = _run(tmp_path, "a", seed=3)
    b_dir, b_truth, _ = _run(tmp_path, "b", seed=3)
    c_dir, _, _ = _run(tmp_path, "c", seed=4)
    fa = sorted(p.relative_to(a_dir) for p in a_dir.rglob("*.json"))
    assert fa == sorted(p.relative_to(b_dir) for p in b_dir.rglob("*.json")) and len(fa) == 96
    assert all((a_dir / p).read_bytes() == (b_dir / p).read_bytes() for p in fa)
    ta, tb = sorted(a_truth.glob("*.parquet")), sorted(b_truth.glob("*.parquet"))
    assert [p.read_bytes() for p in ta] == [p.read_bytes() for p in tb]
    fc = sorted(c_dir.rglob("*.json"))
    assert fc[0].read_bytes() != (a_dir / fa[0]).read_bytes()


def test_traded_only_writes_only_traded_markets(tmp_path):
    data, truth_dir, s = _run(tmp_path, "t", days=2, traded_only=True)
    docs = _docs(data)
    truth = _truth(truth_dir)
    traded = truth.loc[truth["action"] != 2, "decision_time"].astype("int64") // 10**9
    assert {d["slug"] for d in docs.values()} == {f"btc-updown-15m-{t}" for t in traded}
    assert 0 < len(docs) < 192 == len(truth) and s["files"] == len(docs)
    assert all(any(e["type"] == "trade" for e in d["prices"]) for d in docs.values())


def test_one_minute_decisions_hold_to_settlement(tmp_path):
    data, truth_dir, _ = _run(tmp_path, "m", decision_interval="1min")
    docs, truth = _docs(data), _truth(truth_dir)
    assert len(truth) == 96 * 15 and len(docs) == 96
    for path, doc in list(docs.items())[:20]:
        _check_contract(path, doc)
    trades = _trades(docs)
    np.testing.assert_allclose(_net_per_decision(truth, trades, 60_000), truth["net_shares"], atol=1e-6)
    assert (trades["side"] == "SELL").any()  # it closes inventory inside a market too
    shares = np.bincount(truth["action"], minlength=5) / len(truth)
    assert (shares > 0).all() and shares.max() <= 0.70


def test_strategies_follow_their_signal(tmp_path):
    def tilt_vs_past_return(strategy):
        data, truth_dir, _ = _run(tmp_path, strategy, days=3, strategy=strategy)
        docs = sorted(_docs(data).values(), key=lambda d: d["slug"])
        btc = [[e for e in d["prices"] if e["type"] == "ohlcv" and e["high"] > 1] for d in docs]
        past = np.array([np.log(b[-1]["close"] / b[0]["open"]) for b in btc])[:-1]  # bar k-1
        p = _truth(truth_dir)[[f"prob_{i}" for i in range(5)]].to_numpy()
        tilt = (p[:, 0] + p[:, 1] - p[:, 3] - p[:, 4])[1:]
        return (np.corrcoef(past, tilt)[0, 1] if tilt.std() > 0 else 0.0), p
    assert tilt_vs_past_return("momentum")[0] > 0.2
    assert tilt_vs_past_return("mean_reversion")[0] < -0.2
    _, p = tilt_vs_past_return("random")
    assert np.allclose(p, p[0]) and p[0].max() < 0.5
    _, p = tilt_vs_past_return("time_of_day")
    assert p[:, :2].sum(1).std() > 0.1  # driven by the clock


def test_policy_inputs_use_only_the_past():
    rng = np.random.default_rng(0)
    n_sec, t0 = 3 * 86_400, 1_767_571_200
    price, _ = demo_data.simulate_btc(n_sec, t0, rng)
    dec = np.arange(86_400, n_sec, 900)
    m, hold = demo_data.policy_inputs("momentum", price, dec, t0, 900)
    j = 50
    later = price.copy()
    later[dec[j] + 1:] *= 1.05  # change the future of decision j
    m2, hold2 = demo_data.policy_inputs("momentum", later, dec, t0, 900)
    np.testing.assert_array_equal(m[: j + 1], m2[: j + 1])
    np.testing.assert_array_equal(hold, hold2)
    assert not np.array_equal(m[j + 1:], m2[j + 1:])


def test_several_traders_share_the_market(tmp_path):
    data, truth_dir, s = _run(tmp_path, "x", traders=2)
    assert len(set(s["addresses"])) == 2 and s["files"] == 192
    truth = _truth(truth_dir)
    a, b = (truth[truth["address"] == x]["action"].to_numpy() for x in s["addresses"])
    assert (a != b).any()
    slug = "btc-updown-15m-" + str(int(pd.Timestamp(DemoConfig.start, tz="UTC").timestamp()))
    ev = [[e for e in orjson.loads((data / x / f"{slug}_prices.json").read_bytes())["prices"]
           if e["type"] != "trade"] for x in s["addresses"]]
    assert ev[0] == ev[1]


def test_cli_writes_and_rejects_bad_flags(tmp_path, capsys):
    out, truth = tmp_path / "mt", tmp_path / "truth"
    demo_data.main(["--out", str(out), "--truth-dir", str(truth), "--days", "1", "--seed", "1",
                    "--strategy", "random", "--traded-only"])
    assert list(out.glob("*/btc-updown-15m-*_prices.json")) and len(list(truth.glob("*.parquet"))) == 1
    capsys.readouterr()
    for bad in (["--strategy", "nope"], ["--decision-interval", "5min"], ["--days", "0"],
                ["--start", "not-a-date"], ["--truth-dir", str(out / "truth")]):
        with pytest.raises(SystemExit) as exc:
            demo_data.main(["--out", str(out), "--truth-dir", str(truth), *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("demo_data: ") and "\n" not in err and "Traceback" not in err
