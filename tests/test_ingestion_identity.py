"""Hostile identity: addresses in any case are one trader, a file naming another trader is
reported, overlapping files of one market are one market, and a fill in a price file and in a
data-api dump is counted once when it has an id."""

from __future__ import annotations

import orjson
import pytest

from data_ingestion import IngestionConfig, load_events, run

START = 1768904100
T0 = START * 1000
SLUG = f"btc-updown-15m-{START}"


def put(path, document):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document))
    return path


def market(folder, start=START, events=(), **top):
    return put(folder / f"btc-updown-15m-{start}_prices.json",
               {"slug": f"btc-updown-15m-{start}", "prices": list(events), **top})


def quote(dt_ms, start=START):
    return {"type": "price_change", "t": start * 1000 + dt_ms, "best_bid": 0.4, "best_ask": 0.6}


def fill(dt_ms, size, start=START, **kw):
    return {"type": "trade", "t": start * 1000 + dt_ms, "price": 0.5, "side": "BUY",
            "size": size, "outcome": "Up", **kw}


def record(wallet, dt_s, size, **kw):
    """A data-api /trades record (timestamp in seconds)."""
    return {"proxyWallet": wallet, "slug": SLUG, "timestamp": START + dt_s, "price": 0.5,
            "side": "BUY", "size": size, "outcome": "Up", **kw}


def ingest(root, out):
    bars = run(IngestionConfig(data_dir=str(root), out_dir=str(out), workers=1))
    return bars, orjson.loads((out / "ingestion_report.json").read_bytes())


def test_addresses_in_any_case_are_one_trader(tmp_path):
    market(tmp_path / "d" / "0xABCdef", START, [quote(1), fill(2, 1)])
    market(tmp_path / "d" / "0xabcdef", START + 900, [quote(1, START + 900)])
    put(tmp_path / "d" / "dumps" / "w_trades.json", [{**record("0xABCDEF", 1800, 2),
                                                       "slug": f"btc-updown-15m-{START + 1800}"}])
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert bars["address"].unique().tolist() == ["0xabcdef"]
    assert bars["slug"].nunique() == 3 and bars["n_trades"].sum() == 2
    assert list(rep["addresses"]) == ["0xabcdef"] and rep["addresses"]["0xabcdef"]["markets"] == 3


def test_a_file_naming_another_trader_is_reported_and_keeps_its_folder(tmp_path):
    path = market(tmp_path / "d" / "0xaaa", START, [quote(1), fill(2, 1)], address="0xBBB")
    market(tmp_path / "d" / "0xaaa", START + 900, [quote(1, START + 900)], address="0xAAA")
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert rep["address_mismatches"] == [{"path": str(path), "folder": "0xaaa",
                                          "file_address": "0xBBB"}]
    assert bars["address"].unique().tolist() == ["0xaaa"] and bars["n_trades"].sum() == 1


def test_overlapping_files_of_one_market_are_one_market_and_reported(tmp_path):
    first = market(tmp_path / "d" / "0xAAA", START, [quote(1), fill(2, 1), fill(3, 2)])
    second = market(tmp_path / "d" / "0xaaa", START, [quote(4), fill(5, 4), fill(6, 8)],
                    resolution="Down")
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert rep["overlapping_markets"] == [{"address": "0xaaa", "slug": SLUG,
                                           "owner": str(first), "paths": [str(first), str(second)]}]
    f = {r["path"]: r for r in rep["files"]}
    assert f[str(first)]["used"] == 3
    # fills without ids cannot be told apart: the owner's stand, the other file adds nothing
    assert f[str(second)]["used"] == 0 and f[str(second)]["dropped"] == {"duplicate_market": 3}
    assert bars["n_trades"].sum() == 2 and bars["net_shares"].sum() == 3
    assert rep["positions"]["settlement_source"] == {"resolution": 1}  # the later file's
    assert rep["reconciles"] and f[str(second)]["reconciles"]


@pytest.mark.parametrize("dump_name", ["0_first_trades.json", "z_last_trades.json"])
def test_a_fill_in_a_price_file_and_a_dump_is_counted_once_by_its_id(tmp_path, dump_name):
    price = market(tmp_path / "d" / "0xaaa", START, [quote(1), fill(1000, 1, id="a"),
                                                     fill(2000, 2, id="b")])
    dump = put(tmp_path / "d" / dump_name, [record("0xAAA", 1, 1, id="a"),   # the same fill
                                            record("0xaaa", 3, 4, id="c"),   # a fill it lacks
                                            record("0xaaa", 4, 8, id="c")])  # a repeat in it
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    f = {r["path"]: r for r in rep["files"]}
    assert rep["overlapping_markets"][0]["owner"] == str(price)  # the price file, either order
    assert f[str(price)]["used"] == 3 and f[str(price)]["dropped"] == {}
    assert f[str(dump)]["used"] == 1 and f[str(dump)]["dropped"] == {"duplicate_id": 2}
    assert f[str(dump)]["duplicate_id"] == 2 and rep["totals"]["duplicate_id"] == 2
    assert bars["n_trades"].sum() == 3 and bars["net_shares"].sum() == 1 + 2 + 4
    assert bars["has_data"].all()  # the price file's quotes stay the market's book
    events = load_events(IngestionConfig(data_dir=str(tmp_path / "d"), workers=1))[0]
    assert events["market"].nunique() == 1 and rep["reconciles"]


def test_a_dump_fill_without_an_id_is_not_counted_twice(tmp_path):
    market(tmp_path / "d" / "0xaaa", START, [quote(1), fill(1000, 1, id="a")])
    dump = put(tmp_path / "d" / "w_trades.json", [  # a transaction hash alone is no id
        record("0xaaa", 1, 1, transactionHash="0xt1"), record("0xaaa", 2, 5, transactionHash="0xt1")])
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    f = {r["path"]: r for r in rep["files"]}
    assert f[str(dump)]["dropped"] == {"duplicate_market": 2}
    assert bars["n_trades"].sum() == 1 and bars["net_shares"].sum() == 1


def test_dump_records_of_two_wallets_are_two_traders(tmp_path):
    put(tmp_path / "d" / "w_trades.json", [record("0xA1", 1, 1), record("0xB2", 2, 2),
                                           record("0xa1", 3, 4, transactionHash="0x1",
                                                  logIndex=7)])
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert sorted(bars["address"].unique()) == ["0xa1", "0xb2"]
    assert bars.groupby("address")["net_shares"].sum().to_dict() == {"0xa1": 5.0, "0xb2": 2.0}
    assert rep["overlapping_markets"] == [] and rep["address_mismatches"] == []
