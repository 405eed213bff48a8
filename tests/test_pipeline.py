"""pipeline: end to end on the demo tree, truncation (no look-ahead), train-only fits, CLI errors."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest

import pipeline
import sequence_preparation as seq
from action_discretization import ACTIONS, START_ACTION
from state_features import STATE_FEATURES

REPO = Path(__file__).resolve().parents[1]

PINNED = {"window": 16, "stride": 4, "train_end": "2026-01-08", "val_end": "2026-01-09 12:00"}
T_CUT = pd.Timestamp("2026-01-10 06:07:30", tz="UTC")  # after val_end + embargo, mid-bar
INPUT_COLUMNS = ["split", *STATE_FEATURES, "prev_action"]
PARQUET_COLUMNS = ["address", "bar_start", "split", *STATE_FEATURES, "action", "prev_action",
                   "net_shares", "return", "pnl", "tbm_event", "tbm_label", "tbm_ret",
                   "tbm_exit_bars", "tbm_both", "inv_up", "inv_down", "cost_basis",
                   "exposure_usdc", "realized_pnl", "close", "u_close", "has_data", "settle_up", "slug",
                   "open"]
META_KEYS = {"config", "state_features", "state_dim", "bar_interval", "window", "stride",
             "rtg_scale", "capital", "features", "actions", "labels", "scales", "rows_per_split",
             "class_counts_per_split", "warnings", "created"}


def build(data_dir: Path, out_dir: Path, **kw) -> tuple[pd.DataFrame, dict, dict]:
    cfg = pipeline.PipelineConfig(data_dir=str(data_dir), output=str(out_dir / "processed.parquet"),
                                  workers=1, **{**PINNED, **kw})
    summary = pipeline.run(cfg)
    df = pq.read_table(cfg.output).to_pandas()
    meta = orjson.loads(seq.meta_path_for(out_dir / "processed.parquet").read_bytes())
    return df, meta, summary


def rewrite_events(src: Path, dst: Path, keep_event, edit_event=None) -> None:
    """Copy a price tree, keeping events where keep_event(ev) and editing them with edit_event."""
    for f in sorted(src.rglob("*_prices.json")):
        doc = orjson.loads(f.read_bytes())
        events = [e for e in doc["prices"] if keep_event(e)]
        if edit_event is not None:
            events = [edit_event(e) for e in events]
        if not events:
            continue  # a market that had not started by the cut has no file yet
        doc["prices"] = events
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(doc))


def pinned_argv(data_dir: Path, out_dir: Path) -> list[str]:
    argv = ["--data_dir", str(data_dir), "--output", str(out_dir / "processed.parquet"),
            "--workers", "1"]
    for k, v in PINNED.items():
        argv += [f"--{k}", str(v)]
    return argv


@pytest.fixture(scope="module")
def full(demo_tree, tmp_path_factory):
    """The pinned demo run, through main() in a fresh interpreter that also checks that the
    whole preprocessing path never imports torch."""
    root = tmp_path_factory.mktemp("pipe_full")
    data = root / "merged_trades"
    shutil.copytree(demo_tree["data_dir"], data)
    code = (f"import sys, pipeline; pipeline.main({pinned_argv(data, root / 'out')!r}); "
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_FREE')")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    df = pq.read_table(root / "out" / "processed.parquet").to_pandas()
    meta = orjson.loads(seq.meta_path_for(root / "out" / "processed.parquet").read_bytes())
    return {"root": root, "data": data, "df": df, "meta": meta, "stdout": res.stdout,
            "stderr": res.stderr}


def test_preprocessing_never_imports_torch(full):
    assert full["stdout"].strip().splitlines()[-1] == "TORCH_FREE"


def test_stage_times_and_class_counts_are_printed(full):
    log = full["stderr"]
    for stage in ("ingestion", "split", "features", "labels", "state", "actions", "sequences"):
        assert f"[{stage}]" in log
    assert "class counts per split" in log and "STRONG_SELL" in log


def test_end_to_end_schema_and_meta(full):
    df, meta = full["df"], full["meta"]
    assert list(df.columns) == PARQUET_COLUMNS
    assert str(df["bar_start"].dtype) == "datetime64[ns, UTC]"
    assert df["action"].dtype == np.int8 and df["prev_action"].dtype == np.int8
    assert set(df["split"]) <= {"train", "val", "test", "embargo"}
    assert {"train", "val", "test"} <= set(df["split"])
    states = df[STATE_FEATURES].to_numpy()
    assert np.isfinite(states).all() and np.abs(states).max() <= 5.0
    assert df["action"].between(0, 4).all()
    assert (df.groupby("address")["prev_action"].head(1) == START_ACTION).all()
    assert META_KEYS <= set(meta)
    assert meta["state_features"] == STATE_FEATURES and meta["state_dim"] == 17
    assert meta["window"] == 16 and meta["rtg_scale"] == 100.0
    assert sum(meta["rows_per_split"].values()) == len(df)
    for s in ("train", "val", "test"):
        counts = meta["class_counts_per_split"][s]
        assert list(counts) == list(ACTIONS)
        assert sum(counts.values()) == (df["split"] == s).sum()
        for name, n in counts.items():  # every missing class is reported, not hidden
            if n == 0:
                assert any(s in w and name in w for w in meta["warnings"])
    # the demo trader trades: all five classes exist in train, thresholds are finite
    assert min(meta["class_counts_per_split"]["train"].values()) > 0
    assert meta["actions"]["thresholds"]["strong_buy"] > 0
    np.testing.assert_allclose(df["return"], df["pnl"] / meta["capital"])


def test_dataloader_over_the_processed_parquet(full):
    pytest.importorskip("torch")
    from sequence_preparation import make_dataloader

    dl = make_dataloader(full["root"] / "out" / "processed.parquet", split="val", batch_size=4)
    batch = next(iter(dl))
    assert batch["states"].shape[1:] == (16, 17)
    rows = np.concatenate([b["row_index"].numpy().ravel() for b in dl])
    assert sorted(rows[rows >= 0].tolist()) == np.flatnonzero(full["df"]["split"] == "val").tolist()


def test_second_run_is_skipped_until_forced_or_changed(full):
    out = full["root"] / "out"
    cfg = pipeline.PipelineConfig(data_dir=str(full["data"]), output=str(out / "processed.parquet"),
                                  workers=1, **PINNED)
    assert not pipeline.is_stale(cfg)
    assert pipeline.run(cfg)["skipped"]
    assert pipeline.is_stale(dataclasses.replace(cfg, stride=8))


def assert_same_scales(a: dict, b: dict) -> None:
    """Equal train-split scales; ffd_price to 1e-12 relative because FFD's overlap-add FFT moves
    a value by rounding (~1e-15, documented in feature_engineering) when later inputs change."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-15) if k == "ffd_price" else a[k] == b[k]


def _fitted_labels(meta: dict) -> dict:
    """The barrier calibration fitted on train (not the event counts, which cover every row)."""
    return {k: meta["labels"][k] for k in ("pt", "sl", "horizon", "n_round_trips", "source")}


def test_truncation_leaves_every_earlier_input_row_identical(full):
    cut_data = full["root"] / "cut_trades"
    t_ms = T_CUT.value // 1_000_000
    rewrite_events(full["data"], cut_data, lambda e: e["t"] < t_ms)
    cut, cut_meta, _ = build(cut_data, full["root"] / "out_cut")
    before = full["df"][full["df"]["bar_start"] < T_CUT].reset_index(drop=True)
    after = cut[cut["bar_start"] < T_CUT].reset_index(drop=True)
    assert len(cut) < len(full["df"]) and len(before) > 0
    pd.testing.assert_frame_equal(before[["address", "bar_start", *INPUT_COLUMNS]],
                                  after[["address", "bar_start", *INPUT_COLUMNS]], check_exact=True)
    assert cut_meta["capital"] == full["meta"]["capital"]
    # the fitted calibration is identical; event counts cover all rows, so they may differ
    assert _fitted_labels(cut_meta) == _fitted_labels(full["meta"])
    assert_same_scales(cut_meta["scales"], full["meta"]["scales"])
    assert cut_meta["actions"]["thresholds"] == full["meta"]["actions"]["thresholds"]
    assert cut_meta["features"]["d"] == full["meta"]["features"]["d"]


def test_changing_val_and_test_data_never_moves_a_fitted_parameter(full):
    val_start_ms = pd.Timestamp(PINNED["train_end"], tz="UTC").value // 1_000_000 + 16 * 900_000

    def edit(e):
        if e["t"] < val_start_ms:
            return e
        e = dict(e)
        if e.get("type") == "trade":  # triple every later fill (and its cash)
            e["size"] = e["size"] * 3
            if "usdc" in e:
                e["usdc"] = e["usdc"] * 3
        return e

    other = full["root"] / "edited_trades"
    rewrite_events(full["data"], other, lambda e: True, edit)
    df2, meta2, _ = build(other, full["root"] / "out_edit")
    meta = full["meta"]
    later = df2["split"].isin(["val", "test"])
    assert not np.allclose(df2.loc[later, "net_shares"], full["df"].loc[later, "net_shares"])
    assert meta2["actions"] == meta["actions"]
    assert meta2["features"]["d"] == meta["features"]["d"]
    assert _fitted_labels(meta2) == _fitted_labels(meta)
    assert_same_scales(meta2["scales"], meta["scales"])
    assert meta2["capital"] == meta["capital"]


def test_missing_class_becomes_a_warning():
    split = np.array(["train"] * 6 + ["val"] * 3 + ["test"] * 2)
    acts = np.array([0, 1, 2, 3, 4, 2, 2, 2, 1, 0, 4])
    rows, counts, warns = pipeline.split_class_counts(split, acts)
    assert rows["train"] == 6 and counts["val"]["HOLD"] == 2 and counts["val"]["SELL"] == 0
    assert not any(w.startswith("split train") for w in warns)
    assert any("val" in w and "STRONG_BUY" in w and "SELL" in w for w in warns)
    # 4 non-HOLD train actions: the data-size check says so, with the numbers
    assert any("too small to learn from: 4 non-HOLD train actions out of 6" in w for w in warns)
    _, _, warns = pipeline.split_class_counts(np.array(["train"] * 11), acts)
    assert any("val is empty" in w for w in warns)


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "pipeline.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_help_documents_every_flag():
    res = cli("--help")
    assert res.returncode == 0
    for f in pipeline.PipelineConfig.__dataclass_fields__:
        flag = "--extra-features" if f == "extra_features" else f"--{f}"
        assert flag in res.stdout


def one_price_file(tmp_path: Path) -> Path:
    (tmp_path / "d" / "0xa").mkdir(parents=True)
    (tmp_path / "d" / "0xa" / "btc-updown-15m-1_prices.json").write_text("{}")
    return tmp_path / "d"


def test_bad_flag_exits_2_with_one_line(tmp_path):
    res = cli("--data_dir", str(one_price_file(tmp_path)), "--window", "ten")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "--window" in res.stderr


@pytest.mark.parametrize("args", [["--no_such_flag"], ["--train_frac", "1.5"],
                                  ["--bar_interval", "soon"], ["--train_end", "2026-01-08"],
                                  ["--capital", "-3"], ["--train_end", "someday", "--val_end", "x"]])
def test_bad_values_exit_2_with_one_line(args, tmp_path, capsys):
    argv = ["--data_dir", str(one_price_file(tmp_path)), "--output", str(tmp_path / "o.parquet")]
    with pytest.raises(SystemExit) as exc:
        pipeline.main([*argv, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.parquet").exists()


def test_missing_or_empty_data_dir_says_what_to_do(tmp_path, capsys):
    res = cli("--data_dir", str(tmp_path / "missing"), "--output", str(tmp_path / "o.parquet"))
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and "demo_data.py" in line and "download_bucket.py" in line
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        pipeline.main(["--data_dir", str(tmp_path / "empty"), "--output", str(tmp_path / "o.parquet")])
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "demo_data.py" in line and "download_bucket.py" in line
    assert not (tmp_path / "o.parquet").exists()


def test_settle_up_is_the_ingestion_payout_of_each_market(full):
    df = full["df"]
    inside = df["slug"].notna()
    # the demo files carry `resolution`, so each market's payout is exactly its resolution
    files = sorted(full["data"].rglob("btc-updown-15m-*_prices.json"))
    paid = {d["slug"]: float(d["resolution"] == "Up")
            for d in (orjson.loads(f.read_bytes()) for f in files)}
    got = df.loc[inside, ["slug", "settle_up"]]
    assert len(got) > 0
    assert (got["settle_up"].to_numpy() == got["slug"].map(paid).to_numpy()).all()
    assert df.loc[~inside, "settle_up"].isna().all()


@pytest.mark.parametrize("interval", ["15min", "1min"])
def test_extended_states_before_a_cut_never_move(full, interval):
    """Issue 21: every `extended` column of a bar before T is the same when all events after T
    are removed (the trader's later fills, quotes, candles and resolutions)."""
    from state_features import state_columns

    cut_data = full["root"] / "cut_trades_ext"
    if not cut_data.exists():
        rewrite_events(full["data"], cut_data, lambda e: e["t"] < T_CUT.value // 1_000_000)
    kw = {"features": "extended", "bar_interval": interval}
    whole, meta, _ = build(full["data"], full["root"] / f"ext_{interval}", **kw)
    cut, cut_meta, _ = build(cut_data, full["root"] / f"ext_cut_{interval}", **kw)
    cols = state_columns(False, "extended", interval)
    assert meta["state_features"] == cols and meta["feature_set"] == "extended"
    assert len(cols) > len(STATE_FEATURES) and meta["state_dim"] == len(cols)
    assert_same_scales(cut_meta["scales"], meta["scales"])  # fitted on train only
    before = whole[whole["bar_start"] < T_CUT].reset_index(drop=True)
    after = cut[cut["bar_start"] < T_CUT].reset_index(drop=True)
    assert len(before) > 0 and len(whole) > len(cut)
    pd.testing.assert_frame_equal(before[["address", "bar_start", *cols]],
                                  after[["address", "bar_start", *cols]], check_exact=True)
    extended = [c for c in cols if c not in STATE_FEATURES]
    assert (whole[extended].std() > 0).all()  # each extended column carries something
