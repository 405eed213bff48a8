"""TraderDecisionTransformer: shapes, the seed defaults, input checks, the causal no-leak rule
(eval and training mode), and the CPU dropout path (keep_mask, Dropout, causal_attention_dropout)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from action_discretization import N_ACTIONS, START_ACTION
from model_architecture import (
    Dropout,
    ModelConfig,
    TraderDecisionTransformer,
    causal_attention_dropout,
    keep_mask,
)


def tiny(**kw) -> TraderDecisionTransformer:
    torch.manual_seed(0)
    cfg = dict(state_dim=17, action_dim=5, d_model=32, n_layers=2, n_heads=4, context=24, dropout=0.1)
    return TraderDecisionTransformer(**(cfg | kw)).eval()


def inputs(B=3, T=24, S=17, seed=1):
    g = torch.Generator().manual_seed(seed)
    rtg = torch.randn(B, T, generator=g) * 5
    states = torch.randn(B, T, S, generator=g)
    prev = torch.randint(0, N_ACTIONS, (B, T), generator=g)
    prev[:, 0] = START_ACTION
    return rtg, states, prev


def test_default_constructor_is_the_seed_architecture():
    model = TraderDecisionTransformer(state_dim=17, action_dim=5)
    assert asdict(model.config) == asdict(ModelConfig())
    assert model.config == ModelConfig(17, 5, 128, 6, 8, 128, 0.1)
    assert len(model.blocks) == 6
    assert model.embed_action.num_embeddings == N_ACTIONS + 1  # the START row
    assert model.pos.num_embeddings == 128
    logits, rtg = model.eval()(*inputs(B=1, T=128))
    assert logits.shape == (1, 128, 5) and rtg.shape == (1, 128)
    assert torch.isfinite(logits).all() and torch.isfinite(rtg).all()


def test_from_config_round_trip_loads_state_dict():
    a = tiny()
    b = TraderDecisionTransformer.from_config(asdict(a.config))
    b.load_state_dict(a.state_dict())
    x = inputs()
    torch.testing.assert_close(a(*x)[0], b.eval()(*x)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown fields"):
        TraderDecisionTransformer.from_config(asdict(a.config) | {"bogus": 1})


@pytest.mark.parametrize("t", [0, 5, 17, 22])
def test_outputs_at_t_ignore_every_input_after_t(t):
    model = tiny()
    rtg, states, prev = inputs()
    ref_logits, ref_rtg = model(rtg, states, prev)
    g = torch.Generator().manual_seed(t)
    rtg2, states2, prev2 = rtg.clone(), states.clone(), prev.clone()
    rtg2[:, t + 1:] += 100 * torch.randn(rtg2[:, t + 1:].shape, generator=g)
    states2[:, t + 1:] = torch.randn(states2[:, t + 1:].shape, generator=g) * 10
    prev2[:, t + 1:] = (prev2[:, t + 1:] + 1 + t % 4) % N_ACTIONS
    logits, rtg_pred = model(rtg2, states2, prev2)
    torch.testing.assert_close(logits[:, : t + 1], ref_logits[:, : t + 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(rtg_pred[:, : t + 1], ref_rtg[:, : t + 1], rtol=0, atol=1e-6)
    # positive control: the perturbation does reach position t + 1
    assert (logits[:, t + 1] - ref_logits[:, t + 1]).abs().max() > 1e-4


def test_changing_the_predicted_action_a_t_leaves_logits_at_t_unchanged():
    model = tiny()
    rtg, states, prev = inputs()
    ref, _ = model(rtg, states, prev)
    for t in (0, 10, 22):
        # a_t enters the model only as prev_actions[t + 1]
        alt = prev.clone()
        alt[:, t + 1] = (alt[:, t + 1] + 2) % N_ACTIONS
        out, _ = model(rtg, states, alt)
        torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], rtol=0, atol=1e-6)
        assert (out[:, t + 1] - ref[:, t + 1]).abs().max() > 1e-5


def test_every_input_at_t_reaches_the_output_at_t():
    model = tiny()
    rtg, states, prev = inputs()
    ref, _ = model(rtg, states, prev)
    for name, idx in (("rtg", 0), ("states", 1), ("prev", 2)):
        x = [rtg.clone(), states.clone(), prev.clone()]
        if name == "prev":
            x[2][:, 7] = (x[2][:, 7] + 1) % N_ACTIONS
        else:
            x[idx][:, 7] += 3.0
        out, _ = model(*x)
        assert (out[:, 7] - ref[:, 7]).abs().max() > 1e-5, name


def test_training_mode_backward_reaches_every_parameter():
    model = tiny().train()
    logits, rtg = model(*inputs())
    (logits.square().mean() + rtg.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_shorter_sequences_and_batch_one():
    model = tiny()
    logits, rtg = model(*inputs(B=1, T=5))
    assert logits.shape == (1, 5, 5) and rtg.shape == (1, 5)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r, s, p: (r, s[..., :16], p), "states must be"),
        (lambda r, s, p: (r, s[0], p), "states must be"),
        (lambda r, s, p: (r[:, :-1], s, p), "rtg must be"),
        (lambda r, s, p: (r, s, p.float()), "integer"),
        (lambda r, s, p: (r, s, p[:, :3]), "prev_actions must be"),
        (lambda r, s, p: (r.long(), s, p), "floating"),
    ],
)
def test_bad_inputs_raise_value_error(mutate, match):
    with pytest.raises(ValueError, match=match):
        tiny()(*mutate(*inputs()))


def test_sequence_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="context=24"):
        tiny()(*inputs(T=25))


def test_d_model_must_divide_heads():
    with pytest.raises(ValueError, match="divisible"):
        TraderDecisionTransformer(d_model=30, n_heads=4)


def test_rtg_norm_rescales_inside_the_model_only():
    a, b = tiny(), tiny()
    b.set_rtg_norm(50.0)
    rtg, states, prev = inputs()
    la, ra = a(rtg, states, prev)
    lb, rb = b(rtg * 50.0, states, prev)  # same network input after the normaliser
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rb, ra * 50.0, rtol=1e-5, atol=1e-4)  # output back in model units
    assert "rtg_norm" in b.state_dict()
    with pytest.raises(ValueError, match="rtg_norm"):
        b.set_rtg_norm(0.0)


@pytest.mark.parametrize("context", [24, 80])  # 80: the buffer grows 32 -> 64 -> 80 bars
def test_kv_cached_steps_equal_the_full_forward(context):
    model = tiny(context=context)
    rtg, states, prev = inputs(T=context)
    ref_logits, ref_rtg = model(rtg, states, prev)
    cache, capacities = None, set()
    for t in range(rtg.shape[1]):
        logits, rtg_pred, cache = model.step(rtg[:, t], states[:, t], prev[:, t], cache)
        capacities.add(cache.kv.shape[4])
        assert cache.length == t + 1
        torch.testing.assert_close(logits, ref_logits[:, t], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(rtg_pred, ref_rtg[:, t], rtol=1e-5, atol=1e-5)
    assert capacities == ({24} if context == 24 else {32, 64, 80})
    with pytest.raises(ValueError, match="cache is full"):
        model.step(rtg[:, 0], states[:, 0], prev[:, 0], cache)


def test_kv_cache_truncate_re_decides_a_bar_like_the_forward_of_the_new_prefix():
    model = tiny()
    rtg, states, prev = inputs(T=12)
    cache = None
    for t in range(12):
        *_, cache = model.step(rtg[:, t], states[:, t], prev[:, t], cache)
    states2, prev2 = states.clone(), prev.clone()
    states2[:, 7], prev2[:, 7] = -states[:, 7], (prev[:, 7] + 1) % N_ACTIONS  # a revised bar 7
    cache.truncate(7)
    logits, rtg_pred, cache = model.step(rtg[:, 7], states2[:, 7], prev2[:, 7], cache)
    ref_logits, ref_rtg = model(rtg[:, :8], states2[:, :8], prev2[:, :8])
    torch.testing.assert_close(logits, ref_logits[:, 7], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rtg_pred, ref_rtg[:, 7], rtol=1e-5, atol=1e-5)
    assert cache.length == 8 and not logits.requires_grad  # step runs under inference_mode
    with pytest.raises(ValueError, match="holds 8 bars"):
        cache.truncate(9)
    with pytest.raises(ValueError, match="batch size 3"):
        model.step(rtg[:2, 8], states[:2, 8], prev[:2, 8], cache)


@pytest.mark.parametrize("bad, match", [
    (dict(states=torch.zeros(3, 16)), r"states must be \(B, 17\)"),
    (dict(rtg=torch.zeros(3, 1)), r"rtg must be \(B\) = \(3,\)"),
    (dict(prev=torch.zeros(2, dtype=torch.long)), "prev_actions must be"),
    (dict(prev=torch.zeros(3)), "integer"),
])
def test_step_rejects_wrong_one_bar_shapes_and_dtypes(bad, match):
    rtg, states, prev = inputs()
    args = dict(rtg=rtg[:, 0], states=states[:, 0], prev=prev[:, 0]) | bad
    with pytest.raises(ValueError, match=match):
        tiny().step(args["rtg"], args["states"], args["prev"], None)


# ------------------------------------------------------------------ CPU dropout path
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_mask_is_a_seeded_bernoulli_mask(p):
    x = torch.zeros(256, 1024)
    torch.manual_seed(3)
    a = keep_mask(x, p)
    torch.manual_seed(3)
    b = keep_mask(x, p)
    assert torch.equal(a, b) and a.dtype == x.dtype and a.shape == x.shape
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a.mean()) - (1 - p)) < 0.004  # 262144 draws: sd 0.001
    flat = a.reshape(-1)  # lanes of one 64-bit word are independent
    lanes = torch.stack([flat[i::4] for i in range(4)])
    assert torch.corrcoef(lanes).fill_diagonal_(0).abs().max() < 0.02
    assert not torch.equal(keep_mask(x, p), a)  # the generator moved on
    odd = keep_mask(torch.zeros(3, 5, 7, dtype=torch.float64), p)  # numel not a multiple of 4
    assert odd.shape == (3, 5, 7) and odd.dtype == torch.float64
    assert bool((keep_mask(x, 0.0) == 1).all())


def test_dropout_zeroes_with_probability_p_and_rescales_the_rest():
    drop = Dropout(0.25)
    x = torch.rand(200, 500) + 1.0
    y = drop.train()(x)
    zero = y == 0
    assert abs(float(zero.float().mean()) - 0.25) < 0.01
    torch.testing.assert_close(y[~zero], x[~zero] / 0.75)
    x.requires_grad_(True)
    torch.manual_seed(0)
    drop(x).sum().backward()
    torch.manual_seed(0)
    torch.testing.assert_close(x.grad, keep_mask(x.detach(), 0.25) / 0.75)
    assert drop.eval()(x) is x


def test_causal_attention_dropout_equals_sdpa_math_with_the_same_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 8, generator=g, requires_grad=True) for _ in range(3))
    torch.manual_seed(5)
    y = causal_attention_dropout(q, k, v, 0.2)
    torch.manual_seed(5)  # the same draw: the mask of the (B*H, T, T) weights
    keep = keep_mask(torch.zeros(8, 24, 24), 0.2).view(2, 4, 24, 24)
    causal = torch.ones(24, 24, dtype=torch.bool).tril()
    att = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~causal, float("-inf")).softmax(-1)
    ref = (att * keep / 0.8) @ v
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(y.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # without dropout it is the fused causal SDPA
    torch.testing.assert_close(causal_attention_dropout(q, k, v, 1e-9),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-5, atol=1e-6)


def test_training_mode_outputs_at_t_ignore_inputs_after_t():
    """The CPU dropout attention path is causal too (same seed = same dropout masks)."""
    model, t = tiny().train(), 9
    rtg, states, prev = inputs()
    torch.manual_seed(1)
    ref, _ = model(rtg, states, prev)
    states2 = states.clone()
    states2[:, t + 1:] += 10.0
    torch.manual_seed(1)
    out, _ = model(rtg, states2, prev)
    torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], rtol=0, atol=1e-6)
    assert (out[:, t + 1] - ref[:, t + 1]).abs().max() > 1e-4
    torch.manual_seed(2)  # and dropout is on: another seed, other masks
    assert (model(rtg, states, prev)[0] - ref).abs().max() > 1e-4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, imported by inductor
def test_compiled_model_equals_eager_with_dropout_on():
    """torch.compile keeps the CPU dropout path in one graph and draws the same masks in the
    same order (no_grad: forward only; the trainer test covers the backward)."""
    model = tiny().train()
    compiled = torch.compile(model)
    x = inputs()
    with torch.no_grad():
        torch.manual_seed(4)
        ref_logits, ref_rtg = model(*x)
        torch.manual_seed(4)
        logits, rtg = compiled(*x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rtg, ref_rtg, rtol=1e-4, atol=1e-4)
    assert (ref_logits - model.eval()(*x)[0]).abs().max() > 1e-4  # dropout was on


def test_state_bins_encode_each_feature_piecewise_linearly_on_train_quantiles():
    model = tiny(state_bins=4)
    train = torch.randn(400, 17, generator=torch.Generator().manual_seed(3))
    train[:, 5] = 0.0  # a constant feature: every edge ties, its bins become steps at 0
    model.set_state_bins(train)
    edges = model.bin_edges
    assert edges.shape == (17, 5) and (edges[:, 1:] >= edges[:, :-1]).all()
    torch.testing.assert_close(edges[0].double(), torch.quantile(train[:, 0].double(), torch.linspace(0, 1, 5).double()))
    x = torch.stack([edges[:, 0] - 1, (edges[:, 1] + edges[:, 2]) / 2, edges[:, 4] + 1])  # (3, 17)
    enc = model.encode_states(x).view(3, 17, 4)
    assert enc[0, 0].tolist() == [0, 0, 0, 0] and enc[2, 0].tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(enc[1, 0], torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert enc[2, 5].tolist() == [1, 1, 1, 1] and enc[0, 5].tolist() == [0, 0, 0, 0]  # steps
    assert model.embed_state.in_features == 17 * 4
    # the edges travel in the state dict, and causality and the KV cache hold with the encoding
    other = TraderDecisionTransformer.from_config(asdict(model.config))
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other.bin_edges, edges, rtol=0, atol=0)
    rtg, states, prev = inputs()
    ref, _ = model(rtg, states, prev)
    cut = states.clone()
    cut[:, 10:] += 3.0
    torch.testing.assert_close(model(rtg, cut, prev)[0][:, :10], ref[:, :10])
    cache = None
    for t in range(states.shape[1]):
        logits, _, cache = model.step(rtg[:, t], states[:, t], prev[:, t], cache)
    torch.testing.assert_close(logits, ref[:, -1], rtol=1e-5, atol=1e-5)


def test_state_bins_are_optional_and_validated():
    assert "bin_edges" not in TraderDecisionTransformer(state_dim=17, action_dim=5).state_dict()
    with pytest.raises(ValueError, match="state_bins"):
        tiny(state_bins=1)
    with pytest.raises(ValueError, match="linear state embedding"):
        tiny().set_state_bins(torch.randn(10, 17))
    with pytest.raises(ValueError, match="states"):
        tiny(state_bins=3).set_state_bins(torch.randn(10, 16))
