"""Files and documents for data_ingestion's parser: read one JSON file, check its top level,
and turn a Polymarket data-api /trades dump into seed-format documents.

Promise: `read_document(path)` returns (document, None) or (None, quarantine reason), never
raising; `document_units(doc, address, rep)` returns the markets (units) of a document and
counts what it leaves out in `rep` (read, dropped by reason, skipped markets, notes), so the
per-file counts still reconcile; `convert_data_api_trades` maps dump records to documents.
It runs in the pool's workers and imports no project module.
No-leakage rule: per file; nothing here looks across time.
Run alone: no CLI; `python data_ingestion.py --data_dir DIR` runs it for every file.

Decisions where the issue is silent:
- A file orjson rejects is retried with the stdlib json (NaN, Infinity, integers beyond 64
  bits) before it is quarantined as invalid JSON; non-finite values are then dropped per event.
- A top-level JSON list is a data-api dump (`convert_data_api_trades`); records that are not
  objects or have no str slug are dropped as `not_a_trade_record`.
- A slug that is not `btc-updown-15m-<start>` makes the market skipped (its events are counted as
  dropped `not_btc_15m`); a file with no slug, no `prices` list or unreadable JSON is quarantined.
  A valid file whose events are all invalid is kept as a market with no events (so dropping
  events never changes which market a bar belongs to).
"""

from __future__ import annotations

import json
import re

import orjson

SLUG_RE = re.compile(r"^btc-updown-15m-(\d{9,11})$")
"""The BTC 15-minute market slugs this product ingests; the number is the window start (s)."""


# ---------------------------------------------------------------- data-api dumps
def convert_data_api_trades(records: list) -> list[dict]:
    """Polymarket data-api /trades records -> seed-format file dicts {"slug", "address",
    "prices": [trade events]}, one per (proxyWallet, slug) in order of first appearance (no
    resolution: the data-api has none). `timestamp` is seconds (>= 1e11 taken as ms); fields are
    copied as they are and validated when parsed. Records that are not objects or have no str
    slug are left out (the loader counts them)."""
    files: dict[tuple, dict] = {}
    for r in records:  # one pass over records: a dump is at most thousands of rows
        if type(r) is not dict or type(r.get("slug")) is not str:
            continue
        ts = r.get("timestamp")
        t = ts * (1 if abs(ts) >= 1e11 else 1000) if type(ts) in (int, float) else ts
        ev = {"type": "trade", "t": t, "price": r.get("price"), "side": r.get("side"),
              "size": r.get("size"), "outcome": r.get("outcome"),
              "transactionHash": r.get("transactionHash"), "asset": r.get("asset")}
        if r.get("usdcSize") is not None:
            ev["usdc"] = r["usdcSize"]
        addr = r.get("proxyWallet") if type(r.get("proxyWallet")) is str else None
        key = (addr, r["slug"])
        files.setdefault(key, {"slug": r["slug"], "address": addr, "prices": []})
        files[key]["prices"].append(ev)
    return list(files.values())


# ---------------------------------------------------------------- files
def read_document(path: str) -> tuple[object, str | None]:
    """(JSON document, None) or (None, quarantine reason)."""
    try:
        with open(path, "rb") as f:  # cheaper than pathlib for many small files
            raw = f.read()
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError:
        try:  # stdlib json accepts NaN/Infinity and big integers that orjson refuses
            return json.loads(raw.decode("utf-8")), None
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            return None, f"invalid_json: {str(e)[:120]}"


def document_units(doc: object, address: str, rep: dict) -> list[tuple]:
    """Top-level checks of one document -> units (address, slug, start_s, resolution, events)."""
    if isinstance(doc, list):  # a data-api /trades dump
        good = [r for r in doc if type(r) is dict and type(r.get("slug")) is str]
        rep["read"] += len(doc) - len(good)
        if len(doc) > len(good):
            rep["dropped"]["not_a_trade_record"] += len(doc) - len(good)
        files = convert_data_api_trades(good)
        return [u for f in files for u in document_units(f, f["address"] or address, rep)]
    if not isinstance(doc, dict):
        rep["status"], rep["reason"] = "quarantined", "not_a_json_object"
        return []
    prices, slug = doc.get("prices"), doc.get("slug")
    n = len(prices) if isinstance(prices, list) else 0
    rep["read"] += n
    if type(slug) is not str or not isinstance(prices, list):
        why = "missing_slug" if type(slug) is not str else "prices_not_a_list"
        rep["dropped"][why] += n
        rep["status"], rep["reason"] = "quarantined", why
        return []
    m = SLUG_RE.match(slug)
    if m is None:
        rep["dropped"]["not_btc_15m"] += n
        rep["skipped_markets"][slug] = rep["skipped_markets"].get(slug, 0) + n
        return []
    events = prices if set(map(type, prices)) <= {dict} else [e for e in prices if type(e) is dict]
    if len(events) < n:
        rep["dropped"]["not_object"] += n - len(events)
    res = doc.get("resolution")
    res_ok = res.capitalize() if type(res) is str and res.lower() in ("up", "down") else None
    if res is not None and res_ok is None:
        rep["notes"].append(f"{slug}: resolution {str(res)[:40]!r} ignored")
    if type(doc.get("address")) is str and doc["address"].lower() != address.lower():
        rep["notes"].append(f"{slug}: file address {doc['address'][:60]} differs, folder used")
    return [(address, slug, int(m.group(1)), res_ok, events)]
