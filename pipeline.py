"""Pipeline: the six preprocessing stages as one command -> the processed parquet + its meta.

Promise: `python pipeline.py` reads `downloads/merged_trades/{address}/btc-*_prices.json` and
writes `data/processed_trader_data.parquet` (one row per address x bar; columns in
docs/INTERFACES.md) and `data/pipeline_meta.json` next to it (config + hash, fitted thresholds,
d, barrier calibration, scales, capital, feature names, rows and class counts per split,
warnings). Stage order: ingestion -> split -> features (d fitted on train) -> labels (calibrated
on train) -> state -> actions (thresholds on train) -> returns -> write (atomic).

No-leakage rule: the split is assigned on the bar table before any fitting, and every fitted
quantity (d, barriers, scales, capital, thresholds) sees train rows only; with the split pinned
by --train_end/--val_end, cutting the events after a time T after them leaves every input
column (state features, prev_action) of every row with bar_start < T unchanged (tested).

Run alone: `python pipeline.py [--data_dir DIR] [--output PATH] [--force] ...` (see --help).
The run is skipped when the parquet is newer than every input file, the input set is unchanged
and the config hash matches (`is_stale(cfg)`), unless --force.

Decisions where the issue is silent: each parquet has its own meta, `pipeline_meta.json` beside
the default name and `{stem}.pipeline_meta.json` beside any other (seq.meta_path_for); the
parquet's schema metadata carries the config hash and the meta lists the parquet's columns, so
readers detect a meta from another config or a file with missing or extra columns; the ingestion report goes to the output's folder; the config hash covers every field
except `force` and `workers` (they do not change the output); the input fingerprint is the
number, total size and newest mtime of the price files; prev_action is the row's actual
previous action (START_ACTION at a trader's first bar), also across split boundaries, since it
is an observed input, not a label.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

import action_discretization as actions_mod
import data_ingestion
import labeling
import sequence_preparation as seq
import state_features as state_mod
from action_discretization import ACTIONS, START_ACTION
from common import UserError, atomic_write
from labeling import LABEL_COLUMNS

log = logging.getLogger("pipeline")
HINT = "run `python demo_data.py` for demo data or `python download_bucket.py` to sync the bucket"
# Bar-table columns carried into the parquet as they are. The raw bar-end inventory and
# unrealized_pnl are NOT carried: the state features of those names own the columns (the raw
# bar-end value would leak bar t's action into its state); the raw position is inv_up - inv_down.
CARRIED_COLUMNS = ["inv_up", "inv_down", "cost_basis", "exposure_usdc", "realized_pnl", "close",
                   "u_close", "has_data", "settle_up"]


@dataclass(frozen=True)
class PipelineConfig:
    data_dir: str = "downloads/merged_trades"
    """Folder of {address}/btc-updown-15m-{start}_prices.json files."""
    output: str = seq.PROCESSED_PATH
    """Processed parquet; pipeline_meta.json and ingestion_report.json go next to it."""
    bar_interval: str = "15min"
    """Bar length (pandas offset, UTC-aligned), e.g. 15min or 1min."""
    price_source: str = "auto"
    """Market-feature price: auto | underlying (BTC/USD OHLCV) | token (Up-token mid)."""
    window: int = seq.SequenceConfig.window
    """Bars per sequence; also the embargo length between splits."""
    stride: int = seq.SequenceConfig.stride
    """Step between train window starts."""
    train_frac: float = seq.SequenceConfig.train_frac
    """Train fraction of the unique bar times (unless --train_end)."""
    val_frac: float = seq.SequenceConfig.val_frac
    """Val fraction of the unique bar times (unless --val_end)."""
    train_end: str | None = seq.SequenceConfig.train_end
    """UTC date: bars before it are train (pins the split, with --val_end)."""
    val_end: str | None = seq.SequenceConfig.val_end
    """UTC date: val ends here (needs --train_end)."""
    workers: int = 0
    """Ingestion worker processes (0 = all cores)."""
    capital: float | None = None
    """Capital in USDC for returns and P&L ratios (default: peak train exposure)."""
    extra_features: bool = False
    """Add the market-clock sin/cos features (state_dim + 2)."""
    features: str = "seed"
    """State set: seed (the 17 features) or extended (+ returns, vol, market, resolutions, own activity)."""
    strong_quantile: float = 0.75
    """Quantile of train nets above which a trade is STRONG_BUY / STRONG_SELL."""
    strong_rule: str = "quantile"
    """STRONG threshold rule: quantile (the seed's) or gap (between two size modes, per side)."""
    force: bool = False
    """Rebuild even when the output is up to date."""


class PipelineError(UserError):
    """A user error (missing data, bad config): one line, exit code 2."""


def meta_path(cfg: PipelineConfig) -> Path:
    """pipeline_meta.json next to cfg.output."""
    return seq.meta_path_for(cfg.output)


def config_hash(cfg: PipelineConfig) -> str:
    """sha256 (16 hex) of the config fields that change the output (not force, workers)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in ("force", "workers")}
    return hashlib.sha256(orjson.dumps(d, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def price_files(data_dir: str | Path) -> list[Path]:
    """The input files data_ingestion reads (price files and data-api dumps, any depth), sorted."""
    root = Path(data_dir)
    found = set(root.rglob(data_ingestion.PRICE_FILE_GLOB)) | set(root.rglob(data_ingestion.DATA_API_GLOB))
    return sorted(p for p in found if p.is_file())


def input_fingerprint(files: list[Path]) -> dict:
    """{"n_files", "bytes", "max_mtime_ns"} of the input price files."""
    stats = [f.stat() for f in files]
    return {"n_files": len(stats), "bytes": int(sum(s.st_size for s in stats)),
            "max_mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0))}


def is_stale(cfg: PipelineConfig) -> bool:
    """True when the parquet or meta is missing, older than an input file, built from another
    input set or another config (hash); train_model.py calls this before training."""
    out, meta_file = Path(cfg.output), meta_path(cfg)
    if not out.exists() or not meta_file.exists():
        return True
    try:
        meta = orjson.loads(meta_file.read_bytes())
    except orjson.JSONDecodeError:
        return True
    fp = input_fingerprint(price_files(cfg.data_dir))
    return (meta.get("config_hash") != config_hash(cfg) or meta.get("inputs") != fp
            or fp["max_mtime_ns"] > out.stat().st_mtime_ns)


def validate(cfg: PipelineConfig) -> None:
    """Raise PipelineError naming the first bad field."""
    try:
        if pd.Timedelta(cfg.bar_interval) <= pd.Timedelta(0):
            raise ValueError
    except ValueError:
        raise PipelineError(f"--bar_interval {cfg.bar_interval!r} is not a positive duration "
                            "(e.g. 15min, 1min)") from None
    if cfg.price_source not in ("auto", "underlying", "token"):
        raise PipelineError(f"--price_source {cfg.price_source!r}: use auto, underlying or token")
    if cfg.features not in state_mod.FEATURE_SETS:
        raise PipelineError(f"--features {cfg.features!r}: use one of {', '.join(state_mod.FEATURE_SETS)}")
    if cfg.window < 1 or cfg.stride < 1:
        raise PipelineError(f"--window {cfg.window} and --stride {cfg.stride} must be >= 1")
    if cfg.capital is not None and not cfg.capital > 0:
        raise PipelineError(f"--capital {cfg.capital} must be > 0")
    if not 0 < cfg.strong_quantile < 1:
        raise PipelineError(f"--strong_quantile {cfg.strong_quantile} must be in (0, 1)")
    for name in ("train_end", "val_end"):
        value = getattr(cfg, name)
        if value is not None:
            try:
                pd.Timestamp(value)
            except ValueError:
                raise PipelineError(f"--{name} {value!r} is not a date (e.g. 2026-01-20)") from None
    try:
        seq.split_boundaries(pd.Series(pd.to_datetime(["2026-01-01"], utc=True)), seq_config(cfg))
    except ValueError as e:
        raise PipelineError(f"split: {e}") from None


def seq_config(cfg: PipelineConfig) -> seq.SequenceConfig:
    """The SequenceConfig that the pipeline's split and window fields describe."""
    return seq.SequenceConfig(**{f.name: getattr(cfg, f.name) for f in fields(seq.SequenceConfig)})


def prev_actions(address: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """a_{t-1} per row (int8); START_ACTION at each address's first row (rows sorted)."""
    prev = np.r_[START_ACTION, actions[:-1]].astype(np.int8)
    prev[np.r_[True, address[1:] != address[:-1]]] = START_ACTION
    return prev


def split_class_counts(split: np.ndarray, acts: np.ndarray) -> tuple[dict, dict, list[str]]:
    """(rows_per_split, class_counts_per_split, warnings) for train/val/test (+ embargo rows)."""
    rows = {s: int((split == s).sum()) for s in (*seq.SPLITS, seq.EMBARGO)}
    counts, warns = {}, []
    for s in seq.SPLITS:
        counts[s] = actions_mod.class_counts(acts[split == s])
        if rows[s] == 0:
            warns.append(f"split {s} is empty (more data, a smaller --window or other split dates)")
            continue
        missing = [name for name, n in counts[s].items() if n == 0]
        if missing:
            warns.append(f"split {s} has no {', '.join(missing)} bars")
    # too small to learn from / to select on (the same words train_model.py and the report use)
    warns += seq.data_size_warnings({s: [counts[s][a] for a in ACTIONS] for s in seq.SPLITS if rows[s]})
    return rows, counts, warns


def _jsonable(obj):
    """Plain JSON types: numpy scalars -> Python, Timestamps -> ISO strings, inf/nan -> None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, pd.Timestamp | datetime):
        return obj.isoformat()
    return obj


def write_parquet(df: pd.DataFrame, path: Path, cfg_hash: str) -> None:
    """df -> parquet at path (pyarrow, no index), atomically; the schema metadata carries the
    config hash, so a reader can tell a meta from another config (seq.read_processed)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           seq.CONFIG_HASH_KEY: cfg_hash.encode()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def config_from_meta(meta: dict, output: str) -> PipelineConfig:
    """The PipelineConfig a meta was built with, writing to `output`; PipelineError when the
    meta's config has fields this version does not know (a meta from another version)."""
    known = {f.name for f in fields(PipelineConfig)}
    stored = dict(meta.get("config") or {})
    unknown = sorted(set(stored) - known)
    if not stored or unknown:
        raise PipelineError(f"the meta of {output} has {'no config' if not stored else f'unknown config fields {unknown}'}"
                            f": rebuild with `python pipeline.py --output {output} --force`")
    return PipelineConfig(**(stored | {"output": output, "force": False}))


class _Stage:
    """Context manager that times one stage and logs '[name] message (t s)'."""

    def __init__(self, name: str, timings: dict, bar):
        self.name, self.timings, self.bar, self.msg = name, timings, bar, ""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.bar.set_description(self.name)
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.timings[self.name] = round(time.perf_counter() - self.t0, 3)
            log.info("[%s] %s (%.2fs)", self.name, self.msg, self.timings[self.name])
            self.bar.update(1)


def build(cfg: PipelineConfig) -> tuple[pd.DataFrame, dict]:
    """Run the stages in order on cfg.data_dir; returns (processed frame, meta without config)."""
    import feature_engineering  # here, so --help and flag errors answer without loading scipy

    timings: dict[str, float] = {}
    warns: list[str] = []
    bar = tqdm(total=7, unit="stage", leave=False, disable=None)
    with _Stage("ingestion", timings, bar) as st:
        icfg = data_ingestion.IngestionConfig(data_dir=cfg.data_dir, out_dir=str(Path(cfg.output).parent),
                                              bar_interval=cfg.bar_interval, workers=cfg.workers)
        bars = data_ingestion.run(icfg)
        bars = bars.sort_values(["address", "bar_start"], kind="stable").reset_index(drop=True)
        if bars.empty:
            raise PipelineError(f"no usable bars from {cfg.data_dir}: {HINT}")
        st.msg = f"{len(bars)} bars, {bars['address'].nunique()} addresses, {int(bars['n_trades'].sum())} fills"
    with _Stage("split", timings, bar) as st:
        split = seq.assign_split(bars["bar_start"], cfg.bar_interval, seq_config(cfg))
        train = split == "train"
        b1, b2 = seq.split_boundaries(bars["bar_start"], seq_config(cfg))
        st.msg = ", ".join(f"{s} {int((split == s).sum())}" for s in (*seq.SPLITS, seq.EMBARGO))
        if not train.any():
            raise PipelineError(f"the train split is empty (train ends {b1}): use a later --train_end "
                                "or a larger --train_frac")
    with _Stage("features", timings, bar) as st:
        feats, ffit = feature_engineering.run(
            bars, train, feature_engineering.FeatureConfig(price_source=cfg.price_source))
        st.msg = f"price_source {ffit.get('price_source')}, d {ffit.get('d')}"
    with _Stage("labels", timings, bar) as st:
        price = bars["u_close"] if ffit.get("price_source") == "underlying" else bars["close"]
        calib = labeling.fit(bars, price, train, labeling.LabelConfig())  # barriers from train rows
        labels, counts = labeling.transform(bars, price, calib, split)  # every split, same barriers
        calib = {**calib, **counts}
        st.msg = (f"{int(np.asarray(labels['tbm_event']).sum())} events, pt {calib.get('pt')} "
                  f"sl {calib.get('sl')} horizon {calib.get('horizon')} ({calib.get('source')})")
    with _Stage("state", timings, bar) as st:
        states, sfit = state_mod.run(bars, feats, train, state_mod.StateConfig(
            extra_features=cfg.extra_features, feature_set=cfg.features,
            bar_interval=cfg.bar_interval, capital=cfg.capital))
        warns += sfit["warnings"]
        st.msg = f"{cfg.features} set, state_dim {sfit['state_dim']}, capital {sfit['capital']:.2f} USDC"
    with _Stage("actions", timings, bar) as st:
        acts, afit = actions_mod.run(bars, train, actions_mod.ActionConfig(cfg.strong_quantile,
                                                                           cfg.strong_rule))
        th = afit["thresholds"]
        st.msg = f"strong_buy > {th['strong_buy']}, strong_sell > {th['strong_sell']} shares"
    with _Stage("sequences", timings, bar) as st:
        address = bars["address"].to_numpy()
        df = pd.DataFrame({"address": bars["address"].astype(str), "bar_start": bars["bar_start"],
                           "split": split.astype(str)})
        df = pd.concat([df, states.reset_index(drop=True)], axis=1)
        df["action"] = acts.astype(np.int8)
        df["prev_action"] = prev_actions(address, acts)
        df["net_shares"] = bars["net_shares"].astype(float)
        df["return"] = seq.returns(bars["pnl"].to_numpy(float), sfit["capital"])
        df["pnl"] = bars["pnl"].astype(float)
        labels = labels.reset_index(drop=True)
        for col in LABEL_COLUMNS:
            df[col] = labels[col].to_numpy()
        for col in CARRIED_COLUMNS:
            df[col] = bars[col].to_numpy()
        df["slug"] = bars["slug"].astype(object).where(bars["slug"].notna(), None)
        df["open"] = bars["open"].to_numpy(float)  # the backtest values untraded bars from it
        rows, counts, split_warns = split_class_counts(df["split"].to_numpy(), acts)
        warns += split_warns
        n_win = {}
        for s in seq.SPLITS:  # a handful of runs per split, not a loop over bars
            n_win[s] = sum(len(seq.window_starts(n, cfg.window, cfg.stride, s == "train"))
                           for _, n in seq.split_runs(address, df["split"].to_numpy(), s))
        st.msg = "windows " + ", ".join(f"{s} {n}" for s, n in n_win.items())
    bar.close()
    log.info("class counts per split:\n%s", pd.DataFrame(counts).T[list(ACTIONS)].to_string())
    meta = {
        "state_features": sfit["state_features"], "state_dim": sfit["state_dim"],
        "bar_interval": cfg.bar_interval, "window": cfg.window, "stride": cfg.stride,
        "rtg_scale": seq.RTG_SCALE, "capital": sfit["capital"], "features": ffit,
        "actions": {"thresholds": afit["thresholds"], "class_sizes": afit["class_sizes"],
                    "strong_quantile": afit["strong_quantile"], "eps": afit["eps"],
                    "strong_rule": afit["strong_rule"], "rule_agreement_train": afit["rule_agreement_train"],
                    "thresholds_by_rule": afit["thresholds_by_rule"],
                    "action_names": list(ACTIONS), "start_action": START_ACTION},
        "labels": calib, "scales": sfit["scales"], "clip": sfit["clip"],
        "feature_set": sfit["feature_set"],
        "split_boundaries": {"train_end": b1.isoformat(), "val_end": b2.isoformat()},
        "rows_per_split": rows, "class_counts_per_split": counts, "windows_per_split": n_win,
        "warnings": warns, "timings": timings,
    }
    return df, meta


def run(cfg: PipelineConfig) -> dict:
    """Run (or skip) the pipeline; returns a summary dict (rows, splits, timings, warnings)."""
    validate(cfg)
    files = price_files(cfg.data_dir)
    if not files:
        raise PipelineError(f"no price files ({data_ingestion.PRICE_FILE_GLOB}) under {cfg.data_dir}: {HINT}")
    if not cfg.force and not is_stale(cfg):
        meta = orjson.loads(meta_path(cfg).read_bytes())
        log.info("up to date: %s (config %s); use --force to rebuild", cfg.output, meta["config_hash"])
        return {"skipped": True, "output": cfg.output, "rows": sum(meta["rows_per_split"].values()),
                "rows_per_split": meta["rows_per_split"], "warnings": meta["warnings"]}
    t0 = time.perf_counter()
    df, meta = build(cfg)
    meta.update(config=_jsonable(asdict(cfg)), config_hash=config_hash(cfg),
                inputs=input_fingerprint(files), created=datetime.now(UTC).isoformat())
    meta["columns"] = list(df.columns)
    out = Path(cfg.output)
    write_parquet(df, out, meta["config_hash"])
    atomic_write(meta_path(cfg), orjson.dumps(_jsonable(meta), option=orjson.OPT_INDENT_2))
    for w in meta["warnings"]:
        log.warning("warning: %s", w)
    log.info("wrote %s (%d rows, state_dim %d) and %s in %.1fs", out, len(df), meta["state_dim"],
             meta_path(cfg), time.perf_counter() - t0)
    return {"skipped": False, "output": str(out), "rows": len(df),
            "rows_per_split": meta["rows_per_split"],
            "class_counts_per_split": meta["class_counts_per_split"],
            "timings": meta["timings"], "warnings": meta["warnings"]}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints usage too)
        self.exit(2, f"pipeline.py: error: {message} (see `python pipeline.py --help`)\n")


def main(argv: list[str] | None = None) -> None:
    d = PipelineConfig
    p = _Parser(description="Six preprocessing stages -> processed parquet + its meta.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # every flag shows its default
    p.add_argument("--data_dir", default=d.data_dir, help="folder of {address}/btc-*_prices.json")
    p.add_argument("--output", default=d.output, help="processed parquet (meta goes next to it)")
    p.add_argument("--bar_interval", default=d.bar_interval, help="bar length, e.g. 15min or 1min")
    p.add_argument("--price_source", default=d.price_source, choices=["auto", "underlying", "token"],
                   help="market-feature price series")
    p.add_argument("--window", type=int, default=d.window, help="bars per sequence and embargo")
    p.add_argument("--stride", type=int, default=d.stride, help="step between train windows")
    p.add_argument("--train_frac", type=float, default=d.train_frac, help="train fraction of bar times")
    p.add_argument("--val_frac", type=float, default=d.val_frac, help="val fraction of bar times")
    p.add_argument("--train_end", default=d.train_end, help="UTC date ending train (pins the split)")
    p.add_argument("--val_end", default=d.val_end, help="UTC date ending val (needs --train_end)")
    p.add_argument("--workers", type=int, default=d.workers, help="ingestion processes (0 = all cores)")
    p.add_argument("--capital", type=float, default=d.capital,
                   help="capital in USDC (default: peak train exposure)")
    p.add_argument("--extra-features", "--extra_features", dest="extra_features",
                   action="store_true", default=d.extra_features,
                   help="add market-clock sin/cos (state_dim + 2)")
    p.add_argument("--features", default=d.features, choices=state_mod.FEATURE_SETS,
                   help="state set: seed (17 features) or extended (see docs/DESIGN.md)")
    p.add_argument("--strong_quantile", type=float, default=d.strong_quantile,
                   help="train quantile of nets above which a trade is STRONG")
    p.add_argument("--strong_rule", default=d.strong_rule, choices=actions_mod.STRONG_RULES,
                   help="STRONG threshold: train quantile, or the gap between two size modes")
    p.add_argument("--force", action="store_true", default=d.force, help="rebuild even if up to date")
    assert {f.name for f in fields(d)} == {a.dest for a in p._actions} - {"help"}, "flags must be 1:1 with fields"
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = PipelineConfig(**vars(args))
    try:
        summary = run(cfg)
    except data_ingestion.IngestionError as e:
        print(f"pipeline.py: error: {e}; {HINT}", file=sys.stderr)
        raise SystemExit(2) from None
    except (UserError, FileNotFoundError) as e:  # every stage's user error is a common.UserError
        print(f"pipeline.py: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    splits = ", ".join(f"{k} {v}" for k, v in summary["rows_per_split"].items())
    print(f"{'skipped' if summary['skipped'] else 'done'}: {summary['rows']} rows ({splits}) "
          f"-> {summary['output']}")


if __name__ == "__main__":
    main()
