"""Tests of predict.py: states rebuilt from the checkpoint's fitted statistics equal the
pipeline's, the next bar's state uses only the past, and the CLI prints an action."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

import predict
from action_discretization import ACTIONS
from training import TraderInference

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(demo_tree, tmp_path_factory) -> dict:
    """pipeline (window 16) on the demo -> a 1-epoch tiny model; the trader's folder."""
    import pipeline
    import train_model

    root = tmp_path_factory.mktemp("predict")
    processed = root / "processed.parquet"
    pipeline.run(pipeline.PipelineConfig(data_dir=str(demo_tree["data_dir"]), output=str(processed),
                                         window=16, stride=4, workers=1))
    train_model.run(train_model.TrainConfig(
        processed=str(processed), output_dir=str(root / "models"),
        epochs=1, batch_size=16, device="cpu", d_model=32, n_layers=2, n_heads=4))
    model = root / "models" / "best_model.pt"
    if not model.exists():  # no val improvement recorded: last.pt is the same network
        model = root / "models" / "last.pt"
    trader = next(p for p in Path(demo_tree["data_dir"]).iterdir() if p.is_dir())
    return {"processed": processed, "model": model, "trader": trader, "root": root,
            "meta": TraderInference.from_checkpoint(model).pipeline_meta}


def test_states_from_fitted_statistics_equal_the_pipelines(built):
    bars = predict.load_bars(str(built["trader"]), built["meta"]["bar_interval"], 1)
    states = predict.build_states(predict.add_next_bar(bars, "15min"), built["meta"])
    df = pd.read_parquet(built["processed"])
    cols = built["meta"]["state_features"]
    assert len(states) == len(df) + 1  # + the next bar
    np.testing.assert_allclose(states[cols].to_numpy()[:-1], df[cols].to_numpy(), atol=1e-6)


def test_next_bar_state_uses_only_events_before_it(built):
    """Cut the trader's files at a market start T: the next bar is T and its state equals the
    full data's state of bar T (which the pipeline built from events < T)."""
    df = pd.read_parquet(built["processed"])
    files = sorted(built["trader"].glob("btc-*_prices.json"))
    starts = [int(f.name.split("-")[-1].split("_")[0]) for f in files]
    cut_s = starts[len(starts) * 2 // 3]
    short = built["root"] / "cut" / built["trader"].name
    short.mkdir(parents=True)
    for f, s in zip(files, starts, strict=True):
        if s < cut_s:
            shutil.copy(f, short / f.name)
    bars = predict.add_next_bar(predict.load_bars(str(short), "15min", 1), "15min")
    T = pd.Timestamp(cut_s, unit="s", tz="UTC")
    assert bars["bar_start"].iloc[-1] == T
    states = predict.build_states(bars, built["meta"])
    cols = built["meta"]["state_features"]
    full = df.loc[df["bar_start"] == T, cols].to_numpy()[0]
    np.testing.assert_allclose(states[cols].to_numpy()[-1], full, atol=1e-6)


def test_run_returns_a_distribution_for_the_next_bar(built):
    out = predict.run(predict.PredictConfig(model=str(built["model"]), trader=str(built["trader"]),
                                            target_rtg=0.02))
    p = np.array(list(out["probabilities"].values()))
    assert list(out["probabilities"]) == list(ACTIONS)
    assert p.sum() == pytest.approx(1.0, abs=1e-5) and (p >= 0).all()
    assert out["action"] == ACTIONS[int(p.argmax())]
    assert pd.Timestamp(out["next_bar"]) - pd.Timestamp(out["last_bar"]) == pd.Timedelta("15min")
    assert out["history_bars"] == 15  # window 16 = 15 observed bars + the next one


def test_run_prices_the_suggested_trades_taker_fee_at_the_latest_quote(built):
    out = predict.run(predict.PredictConfig(model=str(built["model"]), trader=str(built["trader"]),
                                            target_rtg=0.02))
    last = max(built["trader"].glob("btc-*_prices.json"))  # the latest market's file
    pc = [e for e in orjson.loads(last.read_bytes())["prices"] if e["type"] == "price_change"]
    quote = max(pc, key=lambda e: e["t"])
    size = built["meta"]["actions"]["class_sizes"][out["action"]]
    price = quote["best_ask"] if size >= 0 else 1.0 - quote["best_bid"]
    f = out["fee"]
    assert f["shares"] == pytest.approx(abs(size)) and f["price"] == pytest.approx(price)
    assert f["fee_tokens"] == pytest.approx(abs(size) * 0.25 * (price * (1 - price)) ** 2)
    assert f["fee_usdc"] == pytest.approx(f["fee_tokens"] * price)
    doubled = predict.suggested_fee(out["action"], built["meta"]["actions"]["class_sizes"],
                                    f["quote"], rate=0.5)
    assert doubled["fee_usdc"] == pytest.approx(2 * f["fee_usdc"])
    assert predict.suggested_fee("HOLD", {"HOLD": 0.0}, f["quote"])["fee_usdc"] == 0.0
    assert predict.suggested_fee("BUY", {"BUY": 10.0}, None) is None


def test_cli_prints_the_action_and_json(built):
    cmd = [sys.executable, str(REPO / "predict.py"), "--model", str(built["model"]),
           "--trader", str(built["trader"]), "--target_rtg", "0.02", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert out["action"] in ACTIONS and out["target_rtg"] == 0.02 and "fee" in out
    proc = subprocess.run(cmd[:-1], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "taker fee" in proc.stdout and "Traceback" not in proc.stderr


def test_cli_missing_trader_folder_is_one_line_exit_2(built, tmp_path):
    cmd = [sys.executable, str(REPO / "predict.py"), "--model", str(built["model"]),
           "--trader", str(tmp_path / "0xnobody")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and "0xnobody" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_a_wrong_trader_lists_the_trader_folders_it_found(built, tmp_path):
    data_dir = Path(built["trader"]).parent
    real = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    cmd = [sys.executable, str(REPO / "predict.py"), "--model", str(built["model"]),
           "--trader", str(data_dir / "0xtypo")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "0xtypo" in proc.stderr and f"trader folders under {data_dir}" in proc.stderr
    assert all(name in proc.stderr for name in real)
    # the data dir itself (several traders, or one): never the placeholder, the folders found
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(predict.PredictError, match="no trader folders"):
        predict.run(predict.PredictConfig(model=str(built["model"]), trader=str(empty / "0xabc")))


def _uncached(built, history: pd.DataFrame, history_bars: int, remaining: float) -> np.ndarray:
    """The next bar's probabilities from one full forward (no KV cache) over the follower's
    window (the last history_bars observed bars + the next) with the rollout RTG."""
    import torch

    from sequence_preparation import RTG_SCALE, honest_rtg

    inf = TraderInference.from_checkpoint(built["model"])
    x = predict.model_inputs(history, built["meta"])
    w = len(x["r"]) - 1 - history_bars
    r = x["r"][w:]
    rtg = honest_rtg(r[None], remaining + float(r[:-1].sum())) * RTG_SCALE
    with torch.inference_mode():
        logits, _ = inf.model(torch.tensor(rtg, dtype=torch.float32), torch.tensor(x["states"][w:][None]),
                              torch.tensor(x["prev"][w:][None]))
    return torch.softmax(logits[0, -1], -1).numpy()


def test_follow_decides_once_per_new_price_file_with_one_cached_step_per_bar(built, tmp_path):
    files = sorted(built["trader"].glob("btc-*_prices.json"))
    live = tmp_path / built["trader"].name
    live.mkdir()
    n0 = len(files) * 2 // 3
    for f in files[:n0]:
        shutil.copy(f, live / f.name)
    arrivals, looks = iter(files[n0:]), []

    def wait(seconds):  # every other look finds one new market's price file, the others nothing
        looks.append(seconds)
        if len(looks) % 2 == 0:
            f = next(arrivals)
            shutil.copy(f, live / f.name)

    cfg = predict.PredictConfig(model=str(built["model"]), trader=str(live), target_rtg=0.02,
                                follow=True, poll_s=0.25, max_decisions=11)
    first = predict.run(cfg)
    outs, begin = [], None
    for out in predict.follow(cfg, wait=wait):
        history = predict.load_bars(str(live), "15min", 1)
        x = predict.model_inputs(history, built["meta"])
        begin = pd.Timestamp(out["next_bar"]) if begin is None else begin
        seen = x["bar_start"][:-1] >= begin
        remaining = 0.02 - float(x["r"][:-1][seen].sum())  # the target less the returns since it began
        assert out["remaining_target_rtg"] == pytest.approx(remaining, abs=1e-12)
        p = np.array(list(out["probabilities"].values()))
        np.testing.assert_allclose(p, _uncached(built, history, out["history_bars"], remaining), atol=1e-5)
        outs.append(out)
    assert len(outs) == 11 and looks == [0.25] * 20  # no decision for a look that found no change
    # the first decision is run()'s (16 tokens = the window); the next market overflows it: a
    # restart keeps 8 tokens, then each new market is one cached step for its bar plus one for
    # the next bar, until the window is full again
    np.testing.assert_allclose(list(outs[0]["probabilities"].values()),
                               list(first["probabilities"].values()), atol=1e-5)
    assert [o["steps"] for o in outs] == [16, 8] + [2] * 8 + [8]
    assert [o["history_bars"] for o in outs] == [15, *range(7, 16), 7]
    nxt = [pd.Timestamp(o["next_bar"]) for o in outs]
    assert all(b > a for a, b in zip(nxt, nxt[1:], strict=False))


def test_follow_re_steps_from_the_first_revised_bar_and_skips_unchanged_folders(built):
    cfg = predict.PredictConfig(model=str(built["model"]), trader=str(built["trader"]), target_rtg=0.01)
    inf, meta, device = predict.load_model(cfg)
    history = predict.load_bars(str(built["trader"]), "15min", 1).iloc[:-3].reset_index(drop=True)
    bot = predict.Follower(inf, meta, cfg, device)
    assert bot.update(history, None)["steps"] == 16
    assert bot.update(history, None) is None  # same inputs: no new decision
    revised = history.copy()
    j = len(revised) - 4  # a late fill flips bar j's action: a_j is bar j + 1's input
    net = float(revised.at[j, "net_shares"])
    revised.at[j, "net_shares"] = -1e6 if net > 0 else 1e6
    out = bot.update(revised, None)
    assert out["steps"] == 4  # bars j + 1 .. the last observed (3) + the next bar
    np.testing.assert_allclose(list(out["probabilities"].values()),
                               _uncached(built, revised, out["history_bars"], 0.01), atol=1e-5)


def test_cli_follow_prints_json_lines_and_refuses_bad_flags(built):
    cmd = [sys.executable, str(REPO / "predict.py"), "--model", str(built["model"]),
           "--trader", str(built["trader"]), "--target_rtg", "0.03", "--json", "--follow",
           "--max_decisions", "1", "--poll_s", "0.1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    out = orjson.loads(lines[-1])
    assert len(lines) == 1 and out["remaining_target_rtg"] == 0.03 and out["action"] in ACTIONS
    for flag, value in (("--max_decisions", "0"), ("--poll_s", "0")):
        bad = [*cmd[:-4], flag, value]
        proc = subprocess.run(bad, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 2 and flag in proc.stderr and "Traceback" not in proc.stderr
