"""Merging and reporting for data_ingestion: parse_files parts -> one result, per-file reports ->
the report's totals.

Promise: `merge_parsed(parts)` concatenates parse results (packed or not) into one, units
renumbered and rows offset, in order; `summarize_reports` totals per-file reports so that
read == used + dropped holds per file and in total. `pack_parsed` is the transfer format of a
pool worker's result: each float64 event array becomes (np.packbits of its non-NaN mask, its
non-NaN values). An event carries only its own kind's fields (a price_change has no price,
size, usdc or OHLCV), so most of the 11 float arrays are NaN per row: the packed result is
~40 % of the bytes to pickle, pipe and unpickle (53 -> ~22 MiB on the 30-day demo), and the
merge writes each value once into the final arrays instead of concatenating full ones.
It imports no project module (it runs in the workers too).
Run alone: no CLI; `python data_ingestion.py --data_dir DIR` runs it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np


def pack_parsed(parsed: dict) -> dict:
    """parse_files' result with each float64 array as (packbits(non-NaN mask), values)."""
    arrays = {}
    for k, a in parsed["arrays"].items():
        if a.dtype == np.float64:
            keep = ~np.isnan(a)
            arrays[k] = (np.packbits(keep), a[keep])
        else:
            arrays[k] = a
    return {**parsed, "arrays": arrays}


def _merged_array(parts: list[dict], key: str, offsets: np.ndarray) -> np.ndarray:
    """One event array over all parts; packed parts are written into a NaN-filled array."""
    cols = [p["arrays"][key] for p in parts]
    if not any(isinstance(c, tuple) for c in cols):
        return np.concatenate(cols)
    out = np.full(int(offsets[-1]), np.nan)
    for c, lo, hi in zip(cols, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
        if isinstance(c, tuple):  # (bits, values): the non-NaN rows of this part get values
            bits, vals = c
            out[lo:hi][np.unpackbits(bits, count=hi - lo).view(bool)] = vals
        else:
            out[lo:hi] = c
    return out


def merge_parsed(parts: list[dict]) -> dict:
    """Concatenate parse_files results, packed (pack_parsed) or not, in order (units
    renumbered, rows offset)."""
    sizes = [len(p["arrays"]["t"]) for p in parts]
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    arrays = {k: _merged_array(parts, k, offsets) for k in parts[0]["arrays"] if k != "unit"}
    markets, units, u = [], [], 0
    for p, off in zip(parts, offsets[:-1].tolist(), strict=True):
        units.append(p["arrays"]["unit"] + u)
        for m in p["markets"]:
            markets.append({**m, "lo": m["lo"] + off, "hi": m["hi"] + off})
        u += len(p["markets"])
    arrays["unit"] = np.concatenate(units).astype(np.int32)
    return {"arrays": arrays, "markets": markets,
            "reports": [r for p in parts for r in p["reports"]]}


def finish_report(rep: dict) -> dict:
    """Plain-dict counts (JSON-ready) and the reconciliation flag."""
    rep["dropped"] = dict(sorted(rep["dropped"].items()))
    rep["unknown_types"] = dict(rep["unknown_types"])
    rep["reconciles"] = rep["read"] == rep["used"] + sum(rep["dropped"].values())
    return rep


def summarize_reports(files: list[dict], config: dict) -> dict:
    """Totals over the per-file reports (finished: finish_report ran after their last change);
    read == used + dropped holds per file and in total."""
    dropped, unknown, skipped_markets = Counter(), Counter(), Counter()
    for f in files:
        for total, part in ((dropped, f["dropped"]), (unknown, f["unknown_types"]),
                            (skipped_markets, f["skipped_markets"])):
            if part:  # most are empty: Counter.update costs ~1.5 us even then
                total.update(part)
    tot = {k: sum(f[k] for f in files) for k in ("read", "used", "duplicate_id",
                                                 "identical_looking")}
    tot.update(dropped=dict(sorted(dropped.items())), dropped_total=sum(dropped.values()),
               unknown_types=dict(unknown), files_found=len(files),
               files_used=sum(f["status"] == "used" for f in files),
               files_quarantined=sum(f["status"] == "quarantined" for f in files),
               files_skipped=sum(f["status"] == "skipped" for f in files))
    return {
        "config": config, "totals": tot,
        "reconciles": tot["read"] == tot["used"] + tot["dropped_total"]
        and all(f["reconciles"] for f in files),
        "quarantined": [{"path": f["path"], "reason": f["reason"]} for f in files
                        if f["status"] == "quarantined"],
        "skipped": [{"path": f["path"], "reason": f["reason"]} for f in files
                    if f["status"] == "skipped"],
        "skipped_markets": dict(sorted(skipped_markets.items())),
        "files": files,
    }
