"""train_model.py trains on the parquet the user built: never another config, its own meta,
one-line errors for bad parquets, and a data-size check (issue 23, first bullets).

Built on the session's 6-day demo set (conftest.demo_tree), copied so mtimes can be touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

import pipeline
import sequence_preparation as seq
from train_model import TrainConfig, TrainError, run

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_model=16, n_layers=1, n_heads=2, batch_size=8, epochs=1, device="cpu")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.fixture
def data(demo_tree, tmp_path) -> Path:
    d = tmp_path / "trades"
    shutil.copytree(demo_tree["data_dir"], d)
    return d


def _build(data: Path, out: Path, **kw) -> Path:
    pipeline.run(pipeline.PipelineConfig(data_dir=str(data), output=str(out), window=16, stride=8,
                                         workers=1, **kw))
    return out


def test_train_keeps_the_parquets_own_config_and_rebuilds_with_it(data, tmp_path):
    p = _build(data, tmp_path / "d" / "one_minute.parquet", bar_interval="1min")
    meta0 = seq.read_meta(p)
    mtime0 = p.stat().st_mtime_ns
    models = tmp_path / "m"
    run(TrainConfig(processed=str(p), data_dir=str(data), output_dir=str(models), **TINY))
    assert p.stat().st_mtime_ns == mtime0, "an up-to-date parquet was rebuilt"
    assert seq.read_meta(p)["config"]["bar_interval"] == "1min"
    # a newer price file: rebuilt, with the parquet's own config (1min, window 16), not defaults
    f = next(data.rglob("*_prices.json"))
    os.utime(f, ns=(mtime0 + 10**9, mtime0 + 10**9))
    run(TrainConfig(processed=str(p), output_dir=str(models), **TINY))
    meta1 = seq.read_meta(p)
    assert p.stat().st_mtime_ns != mtime0
    assert meta1["config_hash"] == meta0["config_hash"]
    assert meta1["config"]["bar_interval"] == "1min" and meta1["window"] == 16


def test_another_data_dir_is_refused_in_one_line(data, tmp_path):
    p = _build(data, tmp_path / "p.parquet")
    other = tmp_path / "other"
    shutil.copytree(data, other)
    with pytest.raises(TrainError, match="was built from"):
        run(TrainConfig(processed=str(p), data_dir=str(other), output_dir=str(tmp_path / "m"), **TINY))
    r = _cli("train_model.py", "--processed", str(p), "--data_dir", str(other),
             "--output_dir", str(tmp_path / "m"), "--epochs", "1")
    assert r.returncode == 2 and "was built from" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_two_parquets_in_one_folder_keep_their_own_meta(data, tmp_path):
    a = _build(data, tmp_path / "d" / "a.parquet")
    b = _build(data, tmp_path / "d" / "b.parquet", bar_interval="1min")
    assert seq.meta_path_for(a) != seq.meta_path_for(b)
    assert seq.read_meta(a)["config"]["bar_interval"] == "15min"
    assert seq.read_meta(b)["config"]["bar_interval"] == "1min"
    assert seq.meta_path_for(REPO / "data" / "processed_trader_data.parquet").name == "pipeline_meta.json"
    df_a, _ = seq.read_processed(a)
    assert len(df_a) < len(seq.read_processed(b)[0])  # 15min has fewer bars than 1min
    # a meta from another config beside a parquet: named, not a pyarrow traceback
    shutil.copy(seq.meta_path_for(b), seq.meta_path_for(a))
    with pytest.raises(seq.ProcessedDataError, match="another config"):
        seq.read_processed(a)
    r = _cli("train_model.py", "--processed", str(a), "--output_dir", str(tmp_path / "m"), "--epochs", "1")
    assert r.returncode == 2 and "another config" in r.stderr and "Traceback" not in r.stderr


def test_missing_or_extra_columns_are_one_line_errors(data, tmp_path):
    p = _build(data, tmp_path / "p.parquet")
    table = pq.read_table(p)
    pq.write_table(table.drop(["rsi"]).replace_schema_metadata(table.schema.metadata), p)
    with pytest.raises(seq.ProcessedDataError, match=r"lacks columns \['rsi'\]"):
        seq.read_processed(p)
    r = _cli("train_model.py", "--processed", str(p), "--output_dir", str(tmp_path / "m"), "--epochs", "1")
    assert r.returncode == 2 and "lacks columns" in r.stderr and "Traceback" not in r.stderr
    p2 = _build(data, tmp_path / "q.parquet")
    t2 = pq.read_table(p2)
    pq.write_table(t2.append_column("mystery", t2.column("rsi")).replace_schema_metadata(t2.schema.metadata), p2)
    with pytest.raises(seq.ProcessedDataError, match=r"does not list \['mystery'\]"):
        seq.read_processed(p2)


def test_an_empty_val_split_stops_training_before_any_file(data, tmp_path):
    p = _build(data, tmp_path / "p.parquet", train_frac=0.8, val_frac=0.0)
    with pytest.raises(TrainError, match="0 val windows"):
        run(TrainConfig(processed=str(p), output_dir=str(tmp_path / "m"), **TINY))
    assert not (tmp_path / "m" / "best_model.pt").exists()


def test_data_size_warnings_say_what_is_too_small():
    w = seq.data_size_warnings({"train": [0, 3, 500, 4, 0], "val": [0, 0, 80, 0, 0],
                                "test": [1, 2, 3, 4, 5]}, {"train": 3, "val": 2})
    text = " | ".join(w)
    assert "7 non-HOLD train actions" in text and "3 train windows" in text
    assert "val split holds one class only (HOLD x 80)" in text and "test" not in text
    assert seq.data_size_warnings({"train": [30, 30, 300, 30, 30], "val": [5, 5, 50, 5, 5],
                                   "test": [5, 5, 50, 5, 5]}, {"train": 20, "val": 4}) == []


def test_the_checkpoint_records_its_parquet_and_evaluate_defaults_to_it(data, tmp_path):
    import torch

    import evaluate

    p = _build(data, tmp_path / "elsewhere" / "mine.parquet")
    models = tmp_path / "m"
    run(TrainConfig(processed=str(p), output_dir=str(models), **TINY))
    ck = torch.load(models / "best_model.pt")
    assert ck["train_config"]["processed"] == str(p)
    h = evaluate.run(evaluate.EvalConfig(model=str(models / "best_model.pt"), out=str(tmp_path / "r"),
                                         leaky_reference=False, sweep_steps=2))
    m = orjson.loads((tmp_path / "r" / "metrics.json").read_bytes())
    assert m["config"]["processed"] == str(p) and h["rows"] > 0
