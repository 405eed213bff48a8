"""Hypothesis fuzz of the loader: whatever a file holds, load_price_file never raises, the counts
reconcile (read = used + dropped) and build_bars accepts what it returns.
"""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings

from data_ingestion import KIND_NAMES, IngestionError, build_bars, load_price_file

TRADE = KIND_NAMES.index("trade")

START = 1768904100
T0 = START * 1000
_ROOT = Path(tempfile.mkdtemp(prefix="fuzz_ingest_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
_DIR = _ROOT / "0xfuzz"
_DIR.mkdir(parents=True)
PATH = _DIR / f"btc-updown-15m-{START}_prices.json"
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)

weird = st.one_of(
    st.none(), st.booleans(), st.just(math.nan), st.just(math.inf), st.just(-math.inf),
    st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6), st.sampled_from(["0.5", "1e3", "abc", "", "BUY", "Up"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))
price = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 1.0, 0.5, 1e-12]), weird)
t_ms = st.one_of(st.integers(T0 - 120_000, T0 + 1_000_000), weird)
size = st.one_of(st.floats(-10, 1e6), st.just(1e300), weird)


def maybe(d: dict) -> st.SearchStrategy:
    """A dict strategy whose every field may be missing."""
    return st.fixed_dictionaries({}, optional=d)


events = st.one_of(
    maybe({"type": st.just("trade"), "t": t_ms, "price": price, "side":
           st.one_of(st.sampled_from(["BUY", "SELL", "buy", "hold"]), weird), "size": size,
           "usdc": st.one_of(st.floats(0, 1e6), weird), "outcome":
           st.one_of(st.sampled_from(["Up", "Down", "down", "Yes"]), weird),
           "id": st.one_of(st.sampled_from(["a", "b", 1]), weird)}),
    maybe({"type": st.sampled_from(["price_change", "PRICE_CHANGE"]), "t": t_ms,
           "best_bid": price, "best_ask": price, "mid": price, "bid": price}),
    maybe({"type": st.sampled_from(["ohlcv", "bar", "candle"]), "t": t_ms, "open": price,
           "high": price, "low": price, "close": price, "o": st.floats(1, 1e5),
           "h": st.floats(1, 1e5), "l": st.floats(1, 1e5), "c": st.floats(1, 1e5),
           "volume": size, "v": size}),
    maybe({"type": weird, "t": t_ms}),
    weird,
)
doc = st.fixed_dictionaries(
    {"prices": st.one_of(st.lists(events, max_size=25), weird)},
    optional={"slug": st.one_of(st.just(f"btc-updown-15m-{START}"),
                                st.just("eth-updown-15m-1768904100"), weird),
              "resolution": st.one_of(st.sampled_from(["Up", "down", "maybe"]), weird),
              "address": weird})


def _check(raw: bytes, expect_read: int | None = None) -> None:
    PATH.write_bytes(raw)
    ev, rep = load_price_file(PATH)  # must not raise
    assert rep["read"] == rep["used"] + sum(rep["dropped"].values()), rep
    assert rep["reconciles"] and rep["status"] in ("used", "skipped", "quarantined")
    assert len(ev) == rep["used"]
    if expect_read is not None:
        assert rep["read"] == expect_read
    if len(ev):
        # sorted by (market, t), as load_price_file promises (a dump of two wallets is two
        # markets)
        key = ev["market"].astype("int64") * 10**13 + ev["t"]
        assert key.is_monotonic_increasing
        markets = _markets(ev, rep)
        bars = build_bars(ev, markets, "1min")
        assert int(bars["n_trades"].sum()) == int((ev["kind"] == TRADE).sum())
        # one row per (address, bar_start), sorted so (a dump of two wallets: two timelines)
        rows = pd.MultiIndex.from_frame(bars[["address", "bar_start"]].astype({"address": str}))
        assert rows.is_monotonic_increasing and rows.is_unique


def _markets(ev, rep: dict):
    """The markets table load_events would pair with `ev`: row i = market code i, with the
    address and slug its events carry (a data-api dump's fills carry their proxyWallet, not the
    folder's name); a market with no used events keeps the folder's address."""
    import pandas as pd

    start_ms, n = START * 1000, int(ev["market"].max()) + 1
    first = ev.drop_duplicates("market").set_index("market")
    return pd.DataFrame({
        "address": [str(first["address"].get(i, rep["address"])) for i in range(n)],
        "slug": [str(first["slug"].get(i, rep["slugs"][0])) for i in range(n)],
        "start_ms": start_ms, "end_ms": start_ms + 900_000, "resolution": None,
        "path": rep["path"], "n_events": ev["market"].value_counts().reindex(range(n), fill_value=0)
        .to_numpy()})


@settings(max_examples=1200, **SETTINGS)
@given(doc, st.booleans())
def test_fuzz_documents_never_raise_and_reconcile(d, shuffle_dups):
    prices = d["prices"]
    if shuffle_dups and isinstance(prices, list) and prices:
        prices = prices[::-1] + prices[:3]  # unsorted and duplicated events
        d = {**d, "prices": prices}
    raw = json.dumps(d, allow_nan=True).encode()  # NaN/Infinity literals and big integers
    btc = d.get("slug") == f"btc-updown-15m-{START}"
    _check(raw, len(prices) if btc and isinstance(prices, list) else None)


@settings(max_examples=600, **SETTINGS)
@given(doc, st.floats(0, 1), st.binary(max_size=8))
def test_fuzz_truncated_and_corrupt_bytes(d, frac, junk):
    raw = json.dumps(d, allow_nan=True).encode()
    _check(raw[: int(len(raw) * frac)] + junk)


_FILL = {"side": "BUY", "size": 1.0, "price": 0.5, "slug": f"btc-updown-15m-{START}",
         "outcome": "Up"}


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.one_of(maybe({"proxyWallet": st.sampled_from(["0xa", "0xb"]), "side":
                                 st.sampled_from(["BUY", "SELL"]), "size": size, "price": price,
                                 "timestamp": st.one_of(st.integers(START, START + 900), weird),
                                 "slug": st.sampled_from([f"btc-updown-15m-{START}",
                                                          "sol-updown-15m-1768904100"]),
                                 "outcome": st.sampled_from(["Up", "Down"])}), weird),
                max_size=20))
# valid fills always run: a dump's fills carry their proxyWallet, not the folder's address
@example([{"proxyWallet": "0xa", "timestamp": START, **_FILL}])
@example([{"proxyWallet": w, "timestamp": START + dt, **_FILL} for w, dt in
          (("0xa", 0), ("0xb", 60), ("0xa", 900))])
def test_fuzz_data_api_lists(records):
    _check(json.dumps(records, allow_nan=True).encode(), len(records))


def test_build_bars_names_an_address_its_market_does_not_have():
    PATH.write_bytes(json.dumps([{"proxyWallet": "0xa", "timestamp": START, **_FILL}]).encode())
    ev, rep = load_price_file(PATH)
    markets = _markets(ev, rep).assign(address="0xfuzz")  # the folder's name, not the fill's
    with pytest.raises(IngestionError, match=r"btc-updown-15m-\d+.*'0xa'.*'0xfuzz'"):
        build_bars(ev, markets, "1min")


def test_empty_and_degenerate_files():
    for raw in (b"", b"{}", b"[]", b"null", b"[[[[", b'{"slug": 5, "prices": []}',
                b'{"slug": "btc-updown-15m-1768904100", "prices": []}', b"\xff\xfe", b"1e999"):
        _check(raw)
