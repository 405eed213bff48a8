"""Hostile files: symlinks (inside, outside, dangling, loops), byte-order marks and UTF-16, huge
and deeply nested files, and a report that is written whatever happens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import orjson
import pandas as pd
import pytest
from conftest import REPO

import data_ingestion
from data_ingestion import IngestionConfig, IngestionError, run

START = 1768904100
ADDR = "0xfiles"


def doc(start=START, n=3):
    return {"slug": f"btc-updown-15m-{start}", "prices": [
        {"type": "price_change", "t": start * 1000 + 40 * k, "best_bid": 0.4, "best_ask": 0.6}
        for k in range(n)] + [{"type": "trade", "t": start * 1000 + 500, "price": 0.45,
                               "side": "BUY", "size": 3, "outcome": "Up"}]}


def put(root, raw, start=START, folder=ADDR):
    path = root / folder / f"btc-updown-15m-{start}_prices.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return path


def ingest(root, out, **kw):
    bars = run(IngestionConfig(data_dir=str(root), out_dir=str(out), workers=1, **kw))
    return bars, orjson.loads((out / "ingestion_report.json").read_bytes())


def reasons(rep):
    return {os.path.basename(r["path"]): r["reason"] for r in rep["quarantined"] + rep["skipped"]}


def test_symlinks_inside_are_read_once_others_are_reported(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    put(data, orjson.dumps(doc()))
    store = data / "store"
    store.mkdir()
    (store / "m.json").write_bytes(orjson.dumps(doc(START + 900)))  # a name no glob reads
    folder = data / ADDR
    os.symlink(store / "m.json", folder / f"btc-updown-15m-{START + 900}_prices.json")
    put(outside, orjson.dumps(doc(START + 1800)), START + 1800)  # valid, but outside data_dir
    os.symlink(outside / ADDR / f"btc-updown-15m-{START + 1800}_prices.json",
               folder / f"btc-updown-15m-{START + 1800}_prices.json")
    os.symlink(outside / ADDR, data / "0xlinked")  # a folder outside
    os.symlink(folder, data / "0xalias")  # a folder inside: read under its own name only
    os.symlink(data, folder / "up")  # a loop back to the root
    os.symlink(tmp_path / "missing.json", folder / "btc-dangling_prices.json")
    os.symlink("btc-b_prices.json", folder / "btc-a_prices.json")  # a -> b -> a
    os.symlink("btc-a_prices.json", folder / "btc-b_prices.json")
    bars, rep = ingest(data, tmp_path / "out")
    assert reasons(rep) == {
        f"btc-updown-15m-{START + 1800}_prices.json": "symlink_outside_data_dir",
        "0xlinked": "symlink_outside_data_dir", "0xalias": "linked_folder",
        "up": "symlink_loop", "btc-dangling_prices.json": "dangling_symlink",
        "btc-a_prices.json": "symlink_loop", "btc-b_prices.json": "symlink_loop"}
    assert bars["address"].unique().tolist() == [ADDR]  # no 0xalias / 0xlinked trader
    assert set(bars["slug"].dropna()) == {f"btc-updown-15m-{START}",
                                          f"btc-updown-15m-{START + 900}"}
    assert rep["totals"]["files_used"] == 2 and rep["reconciles"]


def test_a_second_path_to_one_file_is_read_once(tmp_path):
    data = tmp_path / "data"
    real = put(data, orjson.dumps(doc()))
    os.symlink(real, data / ADDR / "btc-updown-15m-copy_prices.json")
    bars, rep = ingest(data, tmp_path / "out")
    assert reasons(rep) == {"btc-updown-15m-copy_prices.json": f"duplicate_path: {real}"}
    assert bars["n_trades"].sum() == 1


@pytest.mark.parametrize("encode", [
    lambda s: b"\xef\xbb\xbf" + s.encode(), lambda s: s.encode("utf-16"),
    lambda s: s.encode("utf-16-le"), lambda s: s.encode("utf-16-be"),
    lambda s: s.encode("utf-32")], ids=["utf8-bom", "utf16-bom", "utf16le", "utf16be", "utf32"])
def test_bom_and_utf16_files_are_decoded(tmp_path, encode):
    text = json.dumps(doc())
    plain, _ = ingest(put(tmp_path / "plain", text.encode()).parent, tmp_path / "o1")
    bars, rep = ingest(put(tmp_path / "enc", encode(text)).parent, tmp_path / "o2")
    pd.testing.assert_frame_equal(plain, bars)
    assert rep["files"][0]["status"] == "used" and rep["files"][0]["encoding"]


@pytest.mark.parametrize("raw, why", [
    (b"\xff\xfe{\x00\x22", "bad_encoding"),  # UTF-16 cut in the middle of a character
    (json.dumps(doc()).encode("latin-1").replace(b"BUY", b"B\xe9Y"), "invalid_json"),
    (b"[" * 3000 + b"]" * 3000, "too_deeply_nested"),
    (b'{"slug": "btc-updown-15m-1768904100", "prices": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "too_deeply_nested"),
    (b"", "invalid_json"), (b"\x00\x00\x00\x00", "invalid_json")])
def test_undecodable_and_deep_files_are_quarantined_with_a_reason(tmp_path, raw, why):
    put(tmp_path / "d", orjson.dumps(doc(START + 900)), START + 900)
    bad = put(tmp_path / "d", raw)
    bars, rep = ingest(tmp_path / "d", tmp_path / "o")
    assert rep["quarantined"][0]["path"] == str(bad)
    assert rep["quarantined"][0]["reason"].startswith(why)
    assert len(bars) == 1 and rep["reconciles"]


def test_a_huge_file_is_quarantined_unread_and_deep_values_are_bad_values(tmp_path):
    big = doc(n=20_000)
    big["prices"][0]["best_bid"] = json.loads("[" * 500 + "]" * 500)  # deep, within the limit
    path = put(tmp_path / "d", json.dumps(big).encode())
    put(tmp_path / "d", orjson.dumps(doc(START + 900)), START + 900)
    mb = path.stat().st_size / 2**20
    bars, rep = ingest(tmp_path / "d", tmp_path / "o", max_file_mb=mb / 2)
    assert rep["quarantined"] == [{"path": str(path),
                                   "reason": f"too_large: {path.stat().st_size} bytes > "
                                             f"{int(mb / 2 * 2**20)}"}]
    assert rep["totals"]["read"] == 4  # the big file's events were never parsed
    bars, rep = ingest(tmp_path / "d", tmp_path / "o2", max_file_mb=2 * mb)
    assert rep["totals"]["dropped"] == {"bad_quote": 1}
    assert "best_bid = '[[[[" in rep["examples"]["bad_quote"]


def test_the_report_is_written_when_no_file_is_usable(tmp_path):
    put(tmp_path / "d", b"{not json")
    put(tmp_path / "d", orjson.dumps({"slug": "eth-updown-15m-1768904100", "prices": [1]}),
        START + 900)
    out = tmp_path / "o"
    with pytest.raises(IngestionError) as e:
        run(IngestionConfig(data_dir=str(tmp_path / "d"), out_dir=str(out), workers=1))
    msg = str(e.value)
    assert "\n" not in msg and str(out / "ingestion_report.json") in msg
    rep = orjson.loads((out / "ingestion_report.json").read_bytes())
    assert rep["totals"]["files_quarantined"] == 1 and rep["totals"]["files_skipped"] == 1
    assert rep["reconciles"] and rep["error"].startswith("no usable price file")
    res = subprocess.run([sys.executable, str(REPO / "data_ingestion.py"), "--data_dir",
                          str(tmp_path / "d"), "--out_dir", str(tmp_path / "cli")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "ingestion_report.json" in res.stderr
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["ingestion_report.json"]


def test_the_report_is_written_when_barring_fails(tmp_path, monkeypatch):
    put(tmp_path / "d", orjson.dumps(doc()))

    def broken(*a, **k):
        raise RuntimeError("a bug")
    monkeypatch.setattr(data_ingestion, "build_bars", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        run(IngestionConfig(data_dir=str(tmp_path / "d"), out_dir=str(tmp_path / "o"), workers=1))
    rep = orjson.loads((tmp_path / "o" / "ingestion_report.json").read_bytes())
    assert rep["error"] == "RuntimeError: a bug" and rep["totals"]["used"] == 4
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp file


def test_a_bad_flag_is_one_line_and_reads_nothing(tmp_path):
    put(tmp_path / "d", orjson.dumps(doc()))
    for kw in ({"bar_interval": "W"}, {"workers": -1}, {"max_file_mb": 0.0},
               {"data_dir": str(tmp_path / "missing")}):
        cfg = {"data_dir": str(tmp_path / "d"), "out_dir": str(tmp_path / "o"), **kw}
        with pytest.raises(IngestionError) as e:
            run(IngestionConfig(**cfg))
        assert "\n" not in str(e.value) and next(iter(kw)) in str(e.value)
    assert not (tmp_path / "o").exists()
