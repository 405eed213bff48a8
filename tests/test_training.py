"""TraderTrainer, TraderInference and the checkpoint/RNG helpers on a synthetic in-test Dataset."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader, Dataset

from action_discretization import ACTIONS, N_ACTIONS, START_ACTION
from model_architecture import TraderDecisionTransformer
from sequence_preparation import RTG_SCALE
from training import (
    TraderInference,
    TraderTrainer,
    TrainingDiverged,
    WarmupCosine,
    capture_rng_state,
    class_weights_from_counts,
    param_groups,
    restore_rng_state,
    rtg_targets,
    save_checkpoint,
)

S, T = 6, 16


class Synthetic(Dataset):
    """Windows whose action is a function of the current state (learnable), right-padded tails."""

    def __init__(self, n=48, seed=0, pad_every=4, nan=False):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            states = rng.normal(size=(T, S)).astype(np.float32)
            acts = np.where(states[:, 0] > 0.6, 1, np.where(states[:, 0] < -0.6, 3, 2))
            rets = (rng.normal(size=T) * 0.01).astype(np.float32)
            n_real = T - 5 if i % pad_every == 0 else T
            mask = np.arange(T) < n_real
            rets[~mask] = 0
            if nan:
                states[0, 0] = np.nan
            rtg = np.cumsum(rets[::-1])[::-1] * RTG_SCALE
            prev = np.concatenate([[START_ACTION], acts[:-1]])
            prev[~mask] = START_ACTION
            acts = np.where(mask, acts, -100)
            self.items.append({
                "rtg": torch.tensor(rtg, dtype=torch.float32), "states": torch.from_numpy(states),
                "prev_actions": torch.tensor(prev, dtype=torch.int64),
                "actions": torch.tensor(acts, dtype=torch.int64),
                "returns": torch.from_numpy(rets), "mask": torch.from_numpy(mask),
                "row_index": torch.where(torch.from_numpy(mask), torch.arange(T), -1),
            })

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TraderDecisionTransformer(state_dim=S, action_dim=5, d_model=32, n_layers=2, n_heads=4,
                                     context=T, dropout=0.0)


def test_class_weights_are_balanced_inverse_frequency():
    counts = np.array([10, 40, 300, 50, 0])
    w = class_weights_from_counts(counts).numpy()
    present = counts > 0
    # mean weight per train sample is 1 and w_c * n_c is equal across present classes
    assert np.isclose((w * counts).sum() / counts.sum(), 1.0)
    assert np.allclose(w[present] * counts[present], (w[present] * counts[present])[0])
    assert w[4] == w[present].max()
    with pytest.raises(ValueError, match="class counts"):
        class_weights_from_counts([1, 2, 3])


def test_warmup_then_cosine_to_min_ratio():
    f = WarmupCosine(warmup=10, total=110, min_ratio=0.1)
    ramp = [f(s) for s in range(10)]
    assert all(a < b for a, b in zip(ramp, ramp[1:], strict=False)) and ramp[-1] < 1
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert WarmupCosine(5, None, 0.1)(1000) == 1.0


def test_param_groups_decay_only_linear_weights_and_cover_everything_once():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.1)
    ids_d, ids_n = {id(p) for p in decay["params"]}, {id(p) for p in no_decay["params"]}
    assert not ids_d & ids_n
    assert ids_d | ids_n == {id(p) for p in model.parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[i].endswith("weight") and "ln" not in names[i] for i in ids_d)
    assert id(model.embed_action.weight) in ids_n and id(model.pos.weight) in ids_n
    assert id(model.ln_f.weight) in ids_n and id(model.project.bias) in ids_n


def test_rtg_target_is_next_rtg_and_zero_after_window_end():
    item = Synthetic(n=1, pad_every=1)[0]
    tgt = rtg_targets(item["rtg"], item["returns"])
    n_real = int(item["mask"].sum())
    torch.testing.assert_close(tgt[: n_real - 1], item["rtg"][1:n_real], rtol=0, atol=1e-4)
    assert abs(float(tgt[n_real - 1])) < 1e-4


def test_trainer_learns_and_validate_matches_an_independent_computation():
    train, val = Synthetic(64, seed=0), Synthetic(16, seed=1)
    model = tiny_model()
    trainer = TraderTrainer(model, device="cpu", lr=3e-3, warmup_steps=2, total_steps=80)
    loader = DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    first = trainer.train_epoch(loader, epoch=1)
    for e in range(2, 21):
        last = trainer.train_epoch(loader, epoch=e)
    assert last["loss"] < first["loss"] * 0.7 and last["steps"] == 4
    m = trainer.validate(DataLoader(val, batch_size=8))
    for key in ("loss", "accuracy", "balanced_accuracy", "macro_f1", "rtg_mae", "class_counts", "pred_counts"):
        assert key in m
    # recompute accuracy / macro-F1 / rtg_mae from raw model outputs
    model.eval()
    ys, ps, errs = [], [], []
    with torch.no_grad():
        for it in val:
            logits, rtg = model(it["rtg"][None], it["states"][None], it["prev_actions"][None])
            mk = it["mask"]
            ys.append(it["actions"][mk].numpy())
            ps.append(logits[0][mk].argmax(-1).numpy())
            tgt = it["rtg"] - it["returns"] * RTG_SCALE
            errs.append(((rtg[0] - tgt)[mk].abs() / RTG_SCALE).numpy())
    y, p = np.concatenate(ys), np.concatenate(ps)
    assert m["n"] == y.size == sum(m["class_counts"].values())
    assert m["accuracy"] == pytest.approx((y == p).mean())
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["rtg_mae"] == pytest.approx(np.concatenate(errs).mean(), rel=1e-4)
    assert m["macro_f1"] > m["baseline_macro_f1"] + 0.2  # learned the state -> action rule


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by inductor
def test_compiled_trainer_follows_the_eager_trainer_and_saves_plain_weights():
    train = Synthetic(32, seed=0)  # 2 steps of 16
    runs = {}
    for compile in (False, True):
        torch.manual_seed(0)  # dropout on: the compiled graph draws the same masks in the same order
        model = TraderDecisionTransformer(state_dim=S, action_dim=5, d_model=32, n_layers=2,
                                          n_heads=4, context=T, dropout=0.1)
        trainer = TraderTrainer(model, device="cpu", lr=3e-3, warmup_steps=1, compile=compile)
        torch.manual_seed(7)
        out = [trainer.train_epoch(DataLoader(train, batch_size=16), epoch=1)]
        runs[compile] = (out, model.state_dict())
    (eager, w_eager), (comp, w_comp) = runs[False], runs[True]
    assert [o["steps"] for o in comp] == [2]
    for a, b in zip(eager, comp, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert w_comp.keys() == w_eager.keys()  # no "_orig_mod." prefix: checkpoints stay loadable
    for k, v in w_eager.items():
        torch.testing.assert_close(w_comp[k], v, rtol=1e-3, atol=1e-4)


def test_validate_needs_only_model_and_device_and_ignores_padding():
    val = Synthetic(8, seed=2, pad_every=1)
    trainer = TraderTrainer(tiny_model(), device="cpu")
    a = trainer.validate(DataLoader(val, batch_size=4))
    for it in val.items:  # padding positions: scramble every field
        pad = ~it["mask"]
        it["states"][pad] = 1e3
        it["rtg"][pad] = -7.0
    b = trainer.validate(DataLoader(val, batch_size=4))
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["accuracy"] == b["accuracy"]


def test_honest_validate_ignores_the_realised_rtg_and_the_current_return():
    val = Synthetic(8, seed=3, pad_every=2)
    trainer = TraderTrainer(tiny_model(), device="cpu")
    loader = DataLoader(val, batch_size=4)
    honest = trainer.validate(loader, target_rtg=0.05)
    leaky = trainer.validate(loader)
    # the realised RTG (which contains r_t) and the last bar's return never reach the inputs
    for it in val.items:
        it["rtg"] = it["rtg"] * -3.0 + 11.0
        it["returns"][-1] = 0.5
    again = trainer.validate(loader, target_rtg=0.05)
    for k in ("accuracy", "macro_f1", "balanced_accuracy"):
        assert again[k] == honest[k]
    # and the conditioning really differs from the realised one (control)
    assert trainer.validate(loader)["loss"] != pytest.approx(leaky["loss"], rel=1e-9)


def test_nan_loss_raises_naming_epoch_and_step():
    trainer = TraderTrainer(tiny_model(), device="cpu")
    with pytest.raises(TrainingDiverged, match="epoch 3 step 0"):
        trainer.train_epoch(DataLoader(Synthetic(4, nan=True), batch_size=2), epoch=3)


def test_early_stopping_counts_epochs_without_macro_f1_gain():
    trainer = TraderTrainer(tiny_model(), device="cpu", patience=2)
    assert trainer.update_early_stopping({"macro_f1": 0.3})
    assert not trainer.update_early_stopping({"macro_f1": 0.3}) and not trainer.should_stop
    assert not trainer.update_early_stopping({"macro_f1": 0.1}) and trainer.should_stop
    assert trainer.update_early_stopping({"macro_f1": 0.4}) and not trainer.should_stop


def test_checkpoint_opens_with_plain_torch_load_and_rng_restores(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002
    random.seed(3)
    model = tiny_model()
    trainer = TraderTrainer(model, device="cpu", warmup_steps=1, total_steps=5)
    trainer.train_epoch(DataLoader(Synthetic(4), batch_size=2))
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, {"model_state_dict": model.state_dict(), "rng_state": state,
                           "pipeline_meta": {"state_features": ["a"], "x": None}, **trainer.state_dict()})
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]  # no temp file left
    ck = torch.load(path)  # weights_only=True default
    restore_rng_state(ck["rng_state"])
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    t2 = TraderTrainer(tiny_model(seed=1), device="cpu", warmup_steps=1, total_steps=5)
    t2.load_state_dict(ck)
    assert t2.global_step == trainer.global_step == 2
    assert t2.scheduler.get_last_lr() == trainer.scheduler.get_last_lr()


# ------------------------------------------------------------------ inference
def test_predict_with_target_rtg_shapes_units_and_constant_target():
    model = tiny_model().eval()
    inf = TraderInference(model, device="cpu")
    states = torch.randn(2, T, S)
    logits, rtg = inf.predict_with_target_rtg(states=states, target_rtg=0.02)
    assert logits.shape == (2, T, 5) and rtg.shape == (2, T)
    # explicit actions: prev = shift right with START; RTG input = 0.02 x RTG_SCALE everywhere
    acts = torch.randint(0, 5, (2, T))
    logits, rtg = inf.predict_with_target_rtg(states, 0.02, actions=acts)
    prev = torch.cat([torch.full((2, 1), START_ACTION), acts[:, :-1]], dim=1)
    ref_logits, ref_rtg = model(torch.full((2, T), 0.02 * RTG_SCALE), states, prev)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(rtg, ref_rtg / RTG_SCALE, rtol=0, atol=1e-7)


def test_observed_returns_decrement_the_target():
    model = tiny_model().eval()
    inf = TraderInference(model)
    states, acts = torch.randn(1, T, S), torch.randint(0, 5, (1, T))
    r = torch.randn(1, T) * 0.01
    logits, _ = inf.predict_with_target_rtg(states, 0.05, actions=acts, returns=r)
    rtg_in = torch.tensor([0.05 - float(r[0, :t].sum()) for t in range(T)])[None] * RTG_SCALE
    prev = torch.cat([torch.full((1, 1), START_ACTION), acts[:, :-1]], dim=1)
    torch.testing.assert_close(logits, model(rtg_in, states, prev)[0], rtol=0, atol=1e-5)
    # the last return never enters (it is observed after the last decision)
    r2 = r.clone()
    r2[0, -1] = 5.0
    torch.testing.assert_close(inf.predict_with_target_rtg(states, 0.05, acts, r2)[0], logits, rtol=0, atol=0)


def test_greedy_autoregressive_feeds_each_argmax_as_next_previous_action():
    model = tiny_model().eval()
    inf = TraderInference(model)
    states = torch.randn(3, T, S)
    logits, _ = inf.predict_with_target_rtg(states, 0.01)
    greedy = logits.argmax(-1)  # (B, T)
    # with those actions as the observed history the model must give the same logits
    again, _ = inf.predict_with_target_rtg(states, 0.01, actions=greedy)
    torch.testing.assert_close(again, logits, rtol=0, atol=1e-6)


def test_act_returns_last_bar_name_and_probabilities():
    inf = TraderInference(tiny_model())
    name, probs = inf.act(torch.randn(T, S), 0.02)
    assert list(probs) == list(ACTIONS) and sum(probs.values()) == pytest.approx(1.0)
    assert name == max(probs, key=probs.get)
    with pytest.raises(ValueError, match="one sequence"):
        inf.act(torch.randn(2, T, S), 0.02)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(states=torch.randn(1, T, S + 1)), "states must be"),
        (dict(states=torch.randn(T, S)), "states must be"),
        (dict(states=torch.randn(1, T + 1, S)), "context"),
        (dict(states=torch.ones(1, T, S, dtype=torch.int64)), "floating"),
        (dict(states=torch.full((1, T, S), float("nan"))), "NaN"),
        (dict(states=torch.randn(1, T, S), target_rtg=float("inf")), "target_rtg"),
        (dict(states=torch.randn(1, T, S), actions=torch.ones(1, T)), "actions must be a integer"),
        (dict(states=torch.randn(1, T, S), actions=torch.full((1, T), 7)), "actions must be in"),
        (dict(states=torch.randn(1, T, S), returns=torch.zeros(1, T - 1)), "returns must have shape"),
    ],
)
def test_inference_input_errors(kwargs, match):
    inf = TraderInference(tiny_model())
    kwargs.setdefault("target_rtg", 0.02)
    with pytest.raises(ValueError, match=match):
        inf.predict_with_target_rtg(**kwargs)


def test_from_checkpoint_rebuilds_model_and_keeps_pipeline_meta(tmp_path):
    from dataclasses import asdict

    model = tiny_model()
    meta = {"state_features": [f"f{i}" for i in range(S)], "window": T}
    save_checkpoint(tmp_path / "m.pt", {"model_state_dict": model.state_dict(),
                                        "model_config": asdict(model.config), "pipeline_meta": meta})
    inf = TraderInference.from_checkpoint(tmp_path / "m.pt", device="cpu")
    assert inf.pipeline_meta == meta and inf.model.config == model.config
    x = torch.randn(1, T, S)
    torch.testing.assert_close(inf.predict_with_target_rtg(x, 0.02)[0],
                               TraderInference(model).predict_with_target_rtg(x, 0.02)[0], rtol=0, atol=0)
    assert N_ACTIONS == inf.model.config.action_dim


def test_bf16_autocast_path_trains_with_fp32_weights():
    """The CUDA bf16 path (TraderTrainer.amp) forced on for CPU autocast: the model runs in
    bf16, losses and metrics come back fp32 and finite, weights stay fp32, and it still learns.
    (No GPU is lent to most runs; the gpu-marked test covers CUDA itself.)"""
    train = Synthetic(64, seed=0)
    torch.manual_seed(0)
    model = TraderDecisionTransformer(state_dim=S, action_dim=5, d_model=32, n_layers=2,
                                      n_heads=4, context=T, dropout=0.1)
    trainer = TraderTrainer(model, device="cpu", lr=3e-3, warmup_steps=2, total_steps=80)
    trainer.amp = True
    seen = []
    model.action_head.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    loader = DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    first = trainer.train_epoch(loader, epoch=1)
    for e in range(2, 16):
        last = trainer.train_epoch(loader, epoch=e)
    assert set(seen) == {torch.bfloat16}  # autocast really ran the model in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert np.isfinite(first["loss"]) and last["loss"] < first["loss"] * 0.8
    m = trainer.validate(DataLoader(Synthetic(16, seed=1), batch_size=8))
    assert np.isfinite(m["loss"]) and m["macro_f1"] > m["baseline_macro_f1"]
    # the KV-cached step under the same autocast equals the forward at every bar
    it = train[0]
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        full, _ = model(it["rtg"][None], it["states"][None], it["prev_actions"][None])
        cache = None
        for t in range(T):
            logits, _, cache = model.step(it["rtg"][None, t], it["states"][None, t],
                                          it["prev_actions"][None, t], cache)
            assert torch.allclose(logits.float(), full[0, t].float(), atol=0.05), t
    assert cache.kv.dtype == torch.bfloat16


def test_model_from_checkpoint_loads_any_state_set_in_one_line(tmp_path):
    """Issue 21: an `extended` checkpoint (state_dim 32) loads with one call, no state_dim given."""
    from dataclasses import asdict

    from model_architecture import TraderDecisionTransformer

    model = TraderDecisionTransformer(state_dim=32, action_dim=5, d_model=32, n_layers=1,
                                      n_heads=2, context=T).eval()
    save_checkpoint(tmp_path / "ext.pt", {"model_state_dict": model.state_dict(),
                                          "model_config": asdict(model.config)})
    loaded = TraderDecisionTransformer.from_checkpoint(tmp_path / "ext.pt")
    assert loaded.config.state_dim == 32 and not loaded.training
    rtg, s, a = torch.zeros(1, T), torch.randn(1, T, 32), torch.full((1, T), 5)
    torch.testing.assert_close(loaded(rtg, s, a)[0], model(rtg, s, a)[0], rtol=0, atol=0)
    (tmp_path / "bad.pt").write_bytes(b"")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a train_model.py checkpoint"):
        TraderDecisionTransformer.from_checkpoint(tmp_path / "bad.pt")
