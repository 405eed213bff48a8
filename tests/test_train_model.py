"""train_model.py: artifacts, exact resume, DDP (2-process gloo), the DESIGN.md notebook snippet, CLI errors.

The processed parquet is synthetic (written here in the INTERFACES.md schema), so these tests
do not depend on the data pipeline; the demo-data test at the end runs the real pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from action_discretization import START_ACTION
from model_architecture import TraderDecisionTransformer
from state_features import STATE_FEATURES
from train_model import TrainConfig, TrainError, run

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_model=16, n_layers=1, n_heads=2)


def make_processed(root: Path, n_train: int, n_val: int, window: int, stride: int, seed: int = 0) -> Path:
    """A one-trader processed parquet + pipeline_meta.json whose action follows state feature 0."""
    rng = np.random.default_rng(seed)
    split = ["train"] * n_train + ["embargo"] * window + ["val"] * n_val + ["embargo"] * window + ["test"] * window
    n = len(split)
    states = rng.normal(size=(n, len(STATE_FEATURES))).astype(np.float32)
    action = np.where(states[:, 0] > 0.6, 1, np.where(states[:, 0] < -0.6, 3, 2)).astype(np.int8)
    df = pd.DataFrame(states, columns=STATE_FEATURES)
    df.insert(0, "split", split)
    df.insert(0, "bar_start", pd.date_range("2026-01-05", periods=n, freq="15min", tz="UTC"))
    df.insert(0, "address", "0xabc")
    df["action"] = action
    df["prev_action"] = np.concatenate([[START_ACTION], action[:-1]]).astype(np.int8)
    df["return"] = rng.normal(scale=0.002, size=n)
    out = root / "data"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out / "processed_trader_data.parquet")
    counts = {s: np.bincount(action[np.array(split) == s], minlength=5).tolist() for s in ("train", "val", "test")}
    meta = {"state_features": STATE_FEATURES, "state_dim": len(STATE_FEATURES), "window": window,
            "stride": stride, "rtg_scale": 100.0, "bar_interval": "15min", "class_counts_per_split": counts,
            "actions": {"thresholds": {"strong_buy": 10.0, "strong_sell": 10.0}}}
    (out / "pipeline_meta.json").write_bytes(orjson.dumps(meta))
    return out / "processed_trader_data.parquet"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_processed(tmp_path_factory.mktemp("small"), n_train=96, n_val=32, window=16, stride=4)


def cfg(processed: Path, out: Path, **kw) -> TrainConfig:
    base = dict(processed=str(processed), output_dir=str(out),
                batch_size=8, epochs=3, device="cpu", **TINY)
    return TrainConfig(**(base | kw))


def test_run_writes_checkpoints_metrics_and_curve(small, tmp_path):
    summary = run(cfg(small, tmp_path, epochs=3))
    lines = (tmp_path / "metrics.jsonl").read_bytes().splitlines()
    assert [orjson.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    for name in ("last.pt", "best_model.pt"):
        ck = torch.load(tmp_path / name)  # plain torch.load, weights_only=True default
        for key in ("model_state_dict", "model_config", "optimizer_state_dict", "scheduler_state_dict",
                    "rng_state", "epoch", "metrics", "pipeline_meta", "train_config"):
            assert key in ck, (name, key)
        assert ck["pipeline_meta"]["state_features"] == STATE_FEATURES
        norm = float(ck["model_state_dict"]["rtg_norm"])  # train std of RTG_{t+1}, model units
        assert 0.05 < norm < 5 and norm != 1.0  # returns ~N(0, 0.002) over <= 16 bars, x100
        assert ck["model_config"]["d_model"] == 16 and ck["model_config"]["context"] == 16
    assert torch.load(tmp_path / "last.pt")["epoch"] == 3
    best = torch.load(tmp_path / "best_model.pt")
    assert best["epoch"] == summary["best_epoch"]
    assert best["metrics"]["val"]["macro_f1"] == pytest.approx(summary["best_macro_f1"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_killed_and_resumed_run_equals_uninterrupted_run(small, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(cfg(small, a, epochs=4, dropout=0.1))
    run(cfg(small, b, epochs=4, dropout=0.1, stop_after_epoch=2))
    assert torch.load(b / "last.pt")["epoch"] == 2
    run(cfg(small, b, epochs=4, dropout=0.1, resume=True))
    ca, cb = torch.load(a / "last.pt"), torch.load(b / "last.pt")
    assert cb["epoch"] == 4
    for k, v in ca["model_state_dict"].items():
        assert torch.equal(v, cb["model_state_dict"][k]), k
    sa, sb = ca["optimizer_state_dict"]["state"], cb["optimizer_state_dict"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    va = [orjson.loads(x)["val"] for x in (a / "metrics.jsonl").read_bytes().splitlines()]
    vb = [orjson.loads(x)["val"] for x in (b / "metrics.jsonl").read_bytes().splitlines()]
    assert va == vb and len(va) == 4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by inductor
def test_compile_flag_trains_and_writes_an_eager_loadable_checkpoint(small, tmp_path):
    from train_model import main

    # 21 train windows = 3 batches of 7: one shape, one compilation
    main(["--compile", "--processed", str(small), "--output_dir", str(tmp_path), "--epochs", "1", "--batch_size", "7", "--device", "cpu",
          "--d_model", "16", "--n_layers", "1", "--n_heads", "2"])
    ck = torch.load(tmp_path / "last.pt")
    assert ck["train_config"]["compile"] is True and ck["epoch"] == 1
    assert np.isfinite(ck["metrics"]["train"]["loss"]) and ck["metrics"]["train"]["steps"] == 3
    from model_architecture import TraderDecisionTransformer

    TraderDecisionTransformer.from_config(ck["model_config"]).load_state_dict(ck["model_state_dict"])


def test_resume_without_checkpoint_is_a_user_error(small, tmp_path):
    from train_model import TrainError

    with pytest.raises(TrainError, match="last.pt not found"):
        run(cfg(small, tmp_path, resume=True))


def _cli(args, cwd=REPO, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cli_cuda_unavailable_is_one_line_exit_2(small, tmp_path):
    r = _cli([sys.executable, "train_model.py", "--device", "cuda", "--processed", str(small),
              "--output_dir", str(tmp_path)])
    assert r.returncode == 2 and "--device cuda" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_bad_flag_values_exit_2(small, tmp_path):
    r = _cli([sys.executable, "train_model.py", "--epochs", "0", "--processed", str(small),
              "--output_dir", str(tmp_path), "--device", "cpu"])
    assert r.returncode == 2 and "--epochs" in r.stderr and "Traceback" not in r.stderr


def test_ddp_two_process_gloo_run_writes_one_checkpoint(small, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    r = _cli([str(torchrun), "--standalone", "--nproc_per_node", "2", "train_model.py",
              "--processed", str(small), "--output_dir", str(tmp_path),
              "--epochs", "1", "--batch_size", "8", "--device", "cpu", "--d_model", "16",
              "--n_layers", "1", "--n_heads", "2"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["best_model.pt", "last.pt"]
    ck = torch.load(tmp_path / "last.pt")
    assert ck["train_config"]["world_size"] == 2 and ck["epoch"] == 1
    assert len((tmp_path / "metrics.jsonl").read_bytes().splitlines()) == 1  # rank 0 only
    assert not any(k.startswith("module.") for k in ck["model_state_dict"])  # unwrapped weights


NOTEBOOK = """
from training import TraderInference, TraderTrainer
from model_architecture import TraderDecisionTransformer
model = TraderDecisionTransformer(state_dim=17, action_dim=5)
checkpoint = torch.load('models/best_model.pt')          # plain torch.load, weights_only default
model.load_state_dict(checkpoint['model_state_dict'])
inference = TraderInference(model, device='cpu')
predicted_actions, predicted_rtg = inference.predict_with_target_rtg(states=torch.randn(1, 128, 17), target_rtg=0.02)
val_metrics = TraderTrainer(model, device='cpu').validate(val_loader)   # keys: loss, accuracy, ...
"""
"""DESIGN.md "The notebook API", verbatim."""


def test_design_notebook_snippet_runs_verbatim_on_a_train_model_checkpoint(tmp_path, monkeypatch):
    from sequence_preparation import make_dataloader

    processed = make_processed(tmp_path, n_train=128 + 96, n_val=128, window=128, stride=32)
    run(TrainConfig(processed=str(processed), output_dir=str(tmp_path / "models"), epochs=1, device="cpu"))  # default architecture
    val_loader = make_dataloader(processed, split="val", batch_size=32)
    monkeypatch.chdir(tmp_path)
    ns = {"torch": torch, "val_loader": val_loader}
    exec(compile(NOTEBOOK, "notebook", "exec"), ns)
    assert ns["predicted_actions"].shape == (1, 128, 5) and ns["predicted_rtg"].shape == (1, 128)
    vm = ns["val_metrics"]
    assert {"loss", "accuracy", "balanced_accuracy", "macro_f1", "rtg_mae"} <= set(vm)
    assert vm["n"] == 128 and np.isfinite(vm["loss"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_training_runs(small, tmp_path):
    summary = run(cfg(small, tmp_path, epochs=2, device="cuda"))
    assert summary["epochs_run"] == 2 and np.isfinite(torch.load(tmp_path / "last.pt")["metrics"]["train"]["loss"])


@pytest.mark.slow
def test_demo_data_beats_majority_baseline_on_val_macro_f1(tmp_path):
    """Acceptance: pipeline + training on a 30-day momentum demo; the twin beats the majority class."""
    from demo_data import DemoConfig
    from demo_data import run as demo_run

    demo_run(DemoConfig(out=str(tmp_path / "merged_trades"), days=30, truth_dir=str(tmp_path / "truth")))
    summary = run(TrainConfig(data_dir=str(tmp_path / "merged_trades"), output_dir=str(tmp_path / "models"),
                              processed=str(tmp_path / "data" / "processed_trader_data.parquet"),
                              epochs=8, patience=8, batch_size=8, device="cpu", d_model=64, n_layers=2,
                              n_heads=4, lr=1e-3))
    best = torch.load(tmp_path / "models" / "best_model.pt")["metrics"]["val"]
    assert summary["best_macro_f1"] > best["baseline_macro_f1"] + 0.15, best
    shutil.rmtree(tmp_path / "merged_trades")


def test_state_bins_flag_fits_the_edges_on_train_rows_and_the_checkpoint_rebuilds_them(small, tmp_path):
    run(cfg(small, tmp_path, epochs=1, state_bins=6))
    ck = torch.load(tmp_path / "best_model.pt")
    assert ck["model_config"]["state_bins"] == 6
    df = pd.read_parquet(small)
    train = df.loc[df["split"] == "train", STATE_FEATURES].to_numpy(np.float64)
    expect = np.quantile(train, np.linspace(0, 1, 7), axis=0).T  # (S, 7), train rows only
    np.testing.assert_allclose(ck["model_state_dict"]["bin_edges"].numpy(), expect, rtol=1e-6, atol=1e-6)
    model = TraderDecisionTransformer.from_checkpoint(tmp_path / "best_model.pt")
    assert model.config.state_bins == 6
    with pytest.raises(TrainError, match="state_bins"):
        run(cfg(small, tmp_path / "bad", epochs=1, state_bins=1))
