"""Regression: the bar tables of the real fixtures equal those the pre-rewrite ingestion (commit
0a8a3c2, seven modules) built, committed in tests/fixtures/ingestion/expected_bars.json; and on
the demo, independent invariants that hold whatever the implementation."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
from conftest import FIXTURES

from data_ingestion import BAR_COLUMNS, IngestionConfig, run

EXPECTED = orjson.loads((FIXTURES / "ingestion" / "expected_bars.json").read_bytes())
SETS = {"gaba": FIXTURES / "ingestion" / "gabagool22", "dump": FIXTURES / "ingestion" / "data_api"}


def expected(name: str) -> pd.DataFrame:
    e = EXPECTED[name]
    df = pd.DataFrame(e["rows"], columns=e["columns"])
    df["bar_start"] = pd.to_datetime(df["bar_start"], unit="ms", utc=True)
    for col, dtype in zip(e["columns"], e["dtypes"], strict=True):
        if col != "bar_start":
            df[col] = df[col].astype(dtype) if dtype != "object" else df[col].astype(object)
    return df


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_bars_equal_the_pre_rewrite_tables(tmp_path, name):
    data, interval = name.split("_")
    bars = run(IngestionConfig(data_dir=str(SETS[data]), out_dir=str(tmp_path), workers=1,
                               bar_interval=interval))
    want = expected(name)
    assert list(bars.columns) == BAR_COLUMNS == list(want.columns) and len(want) > 0
    pd.testing.assert_frame_equal(bars, want, check_exact=False, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("interval", ["15min", "1min"])
def test_demo_bars_keep_their_invariants(demo_tree, tmp_path, interval):
    bars = run(IngestionConfig(data_dir=str(demo_tree["data_dir"]), out_dir=str(tmp_path),
                               bar_interval=interval, workers=1))
    rep = orjson.loads((tmp_path / "ingestion_report.json").read_bytes())
    iv = pd.Timedelta(interval)
    steps = bars.groupby("address")["bar_start"].diff().dropna()
    assert (steps == iv).all() and (bars["bar_start"].dt.floor(interval) == bars["bar_start"]).all()
    # every demo market is settled, so P&L adds up to the realised P&L and nothing stays open
    last = bars.groupby("address").tail(1)
    assert bars["pnl"].sum() == pytest.approx(last["realized_pnl"].sum(), abs=1e-6)
    assert rep["positions"]["settled_pnl"] == pytest.approx(last["realized_pnl"].sum())
    assert np.allclose(last[["inv_up", "inv_down", "cost_basis"]], 0.0)
    assert bars["inventory"].equals(bars["inv_up"] - bars["inv_down"])
    # net Up-equivalent shares per bar add up to the fills' signed sizes
    assert bars["n_trades"].sum() == demo_tree["summary"]["trades"]
    assert rep["totals"]["used"] == rep["totals"]["read"] == demo_tree["summary"]["events"]
    # the bars cover exactly the demo's markets: no bar outside their span
    first = pd.Timestamp(bars["slug"].dropna().str.rsplit("-", n=1).str[1].astype(int).min(),
                         unit="s", tz="UTC")
    assert bars["bar_start"].min() == first
    assert len(bars) == rep["bars"]["rows"] == len(set(zip(bars["address"], bars["bar_start"],
                                                           strict=True)))
