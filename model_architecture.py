"""The trader's Decision Transformer: (RTG_t, s_t, a_{t-1}) tokens -> a_t logits and RTG_{t+1}.

Promise: `TraderDecisionTransformer(state_dim=17, action_dim=5)` is the seed architecture of
DESIGN.md "Model". Token t is project(concat(E_rtg(RTG_t), E_s(s_t), E_a(a_{t-1}))), with
a_{-1} = START_ACTION (its own embedding row, so E_a has action_dim + 1 rows), plus a learned
positional embedding, then `n_layers` pre-LN causal blocks, a final LayerNorm, an action head
(action_dim logits, predicting a_t) and an RTG head (predicting RTG_{t+1} in model units, i.e.
fraction x RTG_SCALE). One token per bar (not the three interleaved tokens of the original
Decision Transformer): the trader's action a_t is never an input at position t, so there is
nothing to mask out except the future, which the causal attention does.

No-leakage rule: the output at position t depends only on inputs at positions <= t (causal
attention, position-wise everything else); tests/test_model_architecture.py proves it by
perturbing later positions and the action being predicted.

Run alone (parameter count and a shape smoke test): `python model_architecture.py`.

Decisions where the issue is silent:
- Positional encoding: learned (nn.Embedding(context, d_model)), as nanoGPT and the original
  Decision Transformer's timestep embedding; it is part of the checkpoint.
- No key-padding mask: windows are right-padded, so with causal attention a real position never
  attends to a padding position; padding outputs are ignored by the loss (mask / -100).
- The attention is one fused `F.scaled_dot_product_attention(is_causal=True)` call per block
  (nanoGPT style); there is no Python loop over time steps. Exception, for speed: training on
  CPU with dropout, where SDPA would fall back to its math path and draw the attention-weight
  dropout with bernoulli_ (40 % of a step), `causal_attention_dropout` computes the same thing
  with a cheaper mask (`keep_mask`: 16-bit lanes of 64-bit draws, p on a 1/65536 grid); the
  residual/embedding dropouts use it too. Same seed => same masks; CUDA keeps SDPA/F.dropout.
- RTG scale: DESIGN's RTG x 100 is O(100) when per-bar returns are O(1) of capital (binary
  markets settling at 0/1), which would swamp the embedding and the MSE; a `rtg_norm` buffer
  (the train std of the RTG targets, see train_model.py) rescales inside the model only.
- Init as nanoGPT: N(0, 0.02) weights, zero biases, residual projections scaled by
  1/sqrt(2 n_layers).
- State embedding: the seed's Linear(state_dim, d) by default; `state_bins=N` encodes each feature
  piecewise-linearly over N bins first (edges = train quantiles, `set_state_bins`, a buffer of
  the state dict), so a threshold rule is one weight away (the zoo ablation in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import add_config_args

log = logging.getLogger("model_architecture")


@dataclass(frozen=True)
class ModelConfig:
    """Arguments that rebuild a TraderDecisionTransformer (stored in checkpoints as a dict)."""

    state_dim: int = 17
    """Features per state vector (seed set 17; extended 32 at 15min, 39 at 1min; +2 market-clock)."""
    action_dim: int = 5
    """Action classes predicted by the action head (STRONG_BUY .. STRONG_SELL)."""
    d_model: int = 128
    """Width of every token and block."""
    n_layers: int = 6
    """Number of causal transformer blocks."""
    n_heads: int = 8
    """Attention heads per block (d_model must be divisible by it)."""
    context: int = 128
    """Longest sequence (bars) the model accepts; size of the positional table."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    state_bins: int = 0
    """0 = the seed's linear state embedding; N > 0 = each feature piecewise-linearly encoded
    over N bins whose edges (the `bin_edges` buffer) are train quantiles (set_state_bins)."""


@torch.library.custom_op("trader_twin::keep_mask", mutates_args=(),
                         tags=(torch.Tag.nondeterministic_seeded,))
def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout keep mask shaped like x (contiguous, x's dtype): 1 w.p. 1 - p, else 0.

    p is rounded to a 1/65536 grid: each full-range 64-bit draw of the default generator gives
    four uniform 16-bit lanes, compared with p's threshold (the seed and the RNG state still
    decide the mask). On CPU this is ~4x cheaper than bernoulli_ (one draw per element), which
    took 40 % of a training step; the comparison writes x's dtype directly (out=), one pass
    instead of a bool mask and a conversion (25 % cheaper per mask; bool -> float is 3x slower).
    A custom op (never recomputed: nondeterministic_seeded) so torch.compile keeps one graph.
    x must not require grad (pass x.detach()): the mask has no gradient."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:n].view(x.shape)  # uniform on -32768..32767
    return torch.ge(lanes, -32768 + round(p * 65536), out=torch.empty_like(x, memory_format=torch.contiguous_format))


@keep_mask.register_fake
def _keep_mask_fake(x: torch.Tensor, p: float) -> torch.Tensor:
    return x.new_empty(x.shape)


class Dropout(nn.Dropout):
    """nn.Dropout that draws its mask with keep_mask on CPU (same distribution: 0 w.p. p,
    else x / (1 - p)); F.dropout elsewhere (CUDA's bernoulli is fast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or self.p >= 1:
            return F.dropout(x, self.p, True)
        return (x * keep_mask(x.detach(), self.p)).mul_(1.0 / (1.0 - self.p))


def causal_attention_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + causal -inf) with dropout p on the weights, times v.

    q, k, v (B, H, T, hd) -> (B, H, T, hd): what F.scaled_dot_product_attention(is_causal=True,
    dropout_p=p) computes. On CPU a dropout_p > 0 sends SDPA to its math path (bernoulli_ on the
    (B, H, T, T) weights plus -inf checks and masking passes); here the mask is keep_mask's, the
    causal mask an additive bias inside one baddbmm, and 1/(1-p) scales the 8x smaller output."""
    B, H, T, hd = q.shape
    bias = torch.full((T, T), float("-inf"), device=q.device, dtype=q.dtype).triu_(1)  # (T, T)
    q, k, v = (z.reshape(B * H, T, hd) for z in (q, k, v))
    att = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=hd**-0.5).softmax(-1)  # (BH, T, T)
    y = torch.bmm(att * keep_mask(att.detach(), p), v).mul_(1.0 / (1.0 - p))  # (BH, T, hd)
    return y.view(B, H, T, hd)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t only."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # fused q, k, v projection
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, H, T, C/H)
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        if p > 0 and p < 1 and x.device.type == "cpu":
            y = causal_attention_dropout(q, k, v, p)
        else:  # fused kernel (flash on CPU without dropout; flash/efficient on CUDA)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: d_model -> 4 d_model -> GELU -> d_model."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class KVCache:
    """Keys and values of the bars seen so far, for TraderDecisionTransformer.step.

    One preallocated buffer `kv` (n_layers, B, 2, H, capacity, d_model / H) (2 = key, value),
    written in place at the newest bar and attended over as a [:length] view, so a step copies
    one bar's K/V instead of the whole history (torch.cat). It is allocated by the first step,
    starts at min(context, 32) bars and doubles when full (a copy of the bars so far), up to
    the model's context; the step after that raises (learned absolute positions: a window
    that slides would change every cached key, so the caller starts a new cache).
    """

    def __init__(self) -> None:
        self.kv: torch.Tensor | None = None
        self.length = 0
        """Bars cached (the position of the next step)."""

    def truncate(self, n: int) -> None:
        """Forget the bars after the first n (the next step is bar n again, e.g. a revised bar)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"truncate({n}): the cache holds {self.length} bars")
        self.length = n

    def reserve(self, n: int, shape: tuple, context: int, device, dtype) -> torch.Tensor:
        """The buffer, (re)allocated to hold >= n bars; shape = (n_layers, B, 2, H, hd)."""
        L, B, two, H, hd = shape
        if self.kv is not None and self.kv.shape[1] != B:
            raise ValueError(f"KV cache holds batch size {self.kv.shape[1]}, this step has {B}")
        cap = 0 if self.kv is None else self.kv.shape[4]
        if n > cap:
            new = torch.empty(L, B, two, H, min(context, max(32, 2 * cap, n)), hd, device=device, dtype=dtype)
            if self.length:  # growth: keep the bars so far
                new[:, :, :, :, : self.length] = self.kv[:, :, :, :, : self.length]
            self.kv = new
        return self.kv


class TraderDecisionTransformer(nn.Module):
    """Decision Transformer over bars: forward(rtg, states, prev_actions) -> (logits, rtg_pred).

    The keyword arguments are ModelConfig's fields; `self.config` holds them and
    `asdict(self.config)` is what checkpoints store as `model_config`.
    """

    def __init__(
        self,
        state_dim: int = ModelConfig.state_dim,
        action_dim: int = ModelConfig.action_dim,
        d_model: int = ModelConfig.d_model,
        n_layers: int = ModelConfig.n_layers,
        n_heads: int = ModelConfig.n_heads,
        context: int = ModelConfig.context,
        dropout: float = ModelConfig.dropout,
        state_bins: int = ModelConfig.state_bins,
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if state_bins < 0 or state_bins == 1:
            raise ValueError(f"state_bins must be 0 (linear) or >= 2, got {state_bins}")
        cfg = ModelConfig(state_dim, action_dim, d_model, n_layers, n_heads, context, dropout, state_bins)
        self.config = cfg
        self.embed_rtg = nn.Linear(1, d_model)  # E_rtg: scalar RTG_t (x RTG_SCALE)
        self.embed_state = nn.Linear(state_dim * max(1, state_bins), d_model)  # E_s
        if state_bins:
            # (S, N + 1) increasing edges per feature; placeholder -1..1 until set_state_bins
            # (a persistent buffer, so a checkpoint alone reproduces the encoding)
            self.register_buffer("bin_edges", torch.linspace(-1, 1, state_bins + 1).repeat(state_dim, 1))
        self.embed_action = nn.Embedding(action_dim + 1, d_model)  # E_a; row action_dim = START
        self.project = nn.Linear(3 * d_model, d_model)  # concat(3 d) -> d
        self.pos = nn.Embedding(context, d_model)  # learned positional encoding
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.action_head = nn.Linear(d_model, action_dim)
        self.rtg_head = nn.Linear(d_model, 1)
        # RTG normaliser (train std of RTG_{t+1} in model units, set by train_model; 1 = off): the
        # network sees rtg / rtg_norm and its RTG head output is scaled back, so the interface
        # stays in model units whatever the capital scale makes RTG x 100 (a persistent buffer:
        # it travels in model_state_dict, so the default constructor still loads a checkpoint).
        self.register_buffer("rtg_norm", torch.ones(()))
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") and ".blocks." in f".{name}":
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> TraderDecisionTransformer:
        """Build a model from a ModelConfig or the `model_config` dict of a checkpoint."""
        kwargs = asdict(config) if isinstance(config, ModelConfig) else dict(config)
        unknown = set(kwargs) - set(ModelConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"model_config has unknown fields {sorted(unknown)}")
        return cls(**kwargs)

    @classmethod
    def from_checkpoint(cls, path, map_location: str | torch.device = "cpu") -> TraderDecisionTransformer:
        """The model of a train_model.py checkpoint, built from its own model_config (any state
        set: state_dim comes from the file) with its weights, in eval mode. `path` is a file
        (plain torch.load, weights_only: tensors and plain values only) or its loaded dict."""
        ckpt = path if isinstance(path, dict) else torch.load(path, map_location=map_location)
        if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model_state_dict" not in ckpt:
            raise ValueError(f"{path} is not a train_model.py checkpoint (no model_config / model_state_dict)")
        model = cls.from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model_state_dict"])
        return model.eval()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_rtg_norm(self, value: float) -> None:
        """Set the RTG normaliser (must be finite and > 0)."""
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"rtg_norm must be finite and > 0, got {value}")
        self.rtg_norm.fill_(float(value))

    def set_state_bins(self, states) -> None:
        """Fit the piecewise-linear encoding's edges on train states (n, state_dim): per feature,
        the quantiles 0, 1/N, .., 1 (ties make zero-width bins, which encode as a step)."""
        n_bins = self.config.state_bins
        if not n_bins:
            raise ValueError("set_state_bins: this model has a linear state embedding (state_bins=0)")
        x = torch.as_tensor(states, dtype=torch.float64)
        if x.dim() != 2 or x.shape[1] != self.config.state_dim or len(x) < 2:
            raise ValueError(f"set_state_bins needs (n >= 2, {self.config.state_dim}) states, got {tuple(x.shape)}")
        q = torch.quantile(x, torch.linspace(0, 1, n_bins + 1, dtype=torch.float64), dim=0)  # (N+1, S)
        self.bin_edges.copy_(q.T.cummax(dim=1).values)

    def encode_states(self, states: torch.Tensor) -> torch.Tensor:
        """(..., S) -> (..., S) unchanged (linear embedding) or (..., S x N) piecewise-linear
        encoding: bin k of feature j is clamp((x_j - e_jk) / (e_j,k+1 - e_jk), 0, 1), so a
        threshold at an edge is one weight of the embedding (Gorishniy et al. 2022, "PLE")."""
        if not self.config.state_bins:
            return states
        lo, hi = self.bin_edges[:, :-1], self.bin_edges[:, 1:]  # (S, N)
        width = (hi - lo).clamp_min(1e-6)
        enc = ((states.unsqueeze(-1) - lo) / width).clamp(0.0, 1.0)  # (..., S, N)
        return enc.flatten(-2)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def check_inputs(self, rtg: torch.Tensor, states: torch.Tensor, prev_actions: torch.Tensor,
                     one_bar: bool = False) -> None:
        """Raise ValueError naming the tensor when a shape or dtype does not match the contract.

        rtg (B, T) floating, states (B, T, state_dim) floating, prev_actions (B, T) integer,
        1 <= T <= context; one_bar (step's inputs): rtg (B,), states (B, state_dim), prev_actions
        (B,). Values are not inspected here (no device sync in the hot path).
        """
        cfg = self.config
        lead_dims = "B" if one_bar else "B, T"
        if states.dim() != 3 - one_bar or states.shape[-1] != cfg.state_dim:
            raise ValueError(f"states must be ({lead_dims}, {cfg.state_dim}), got {tuple(states.shape)}")
        lead = states.shape[:-1]  # (B, T) or (B,)
        if not one_bar and not 1 <= lead[1] <= cfg.context:
            raise ValueError(f"sequence length T={lead[1]} must be in 1..context={cfg.context}")
        if rtg.shape != lead:
            raise ValueError(f"rtg must be ({lead_dims}) = {tuple(lead)}, got {tuple(rtg.shape)}")
        if prev_actions.shape != lead:
            raise ValueError(f"prev_actions must be ({lead_dims}) = {tuple(lead)}, got {tuple(prev_actions.shape)}")
        if not (rtg.is_floating_point() and states.is_floating_point()):
            raise ValueError(f"rtg and states must be floating tensors, got {rtg.dtype}, {states.dtype}")
        if prev_actions.is_floating_point() or prev_actions.dtype == torch.bool:
            raise ValueError(f"prev_actions must be an integer tensor, got {prev_actions.dtype}")

    def forward(
        self, rtg: torch.Tensor, states: torch.Tensor, prev_actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rtg (B,T), states (B,T,S), prev_actions (B,T)) -> (logits (B,T,A), rtg_pred (B,T)).

        rtg is RTG_t x RTG_SCALE; prev_actions holds a_{t-1} in 0..action_dim (action_dim =
        START). logits[:, t] predicts a_t, rtg_pred[:, t] predicts RTG_{t+1} x RTG_SCALE.
        """
        self.check_inputs(rtg, states, prev_actions)
        T = states.shape[1]
        x = self._embed(rtg, states, prev_actions, self.pos(torch.arange(T, device=states.device)))  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self._head(x)

    @torch.inference_mode()
    def step(self, rtg: torch.Tensor, states: torch.Tensor, prev_actions: torch.Tensor,
             cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor, KVCache]:
        """One new bar per sequence with a KV cache: (rtg (B,), states (B,S), prev_actions (B,),
        cache from the previous step or None) -> (logits (B,A), rtg_pred (B,), cache).

        Equal to forward() on the whole prefix at its last position (tested); the cost of one
        decision is one token instead of T. Eval mode, under inference_mode; at most `context`
        bars per cache, whose buffer this writes in place (`cache.truncate(n)` re-decides bar n).
        The blocks' modules are called as their functional ops here: a live bot's decision is
        ~80 tiny ops (B=1), where nn.Module dispatch was a fifth of the time and the per-layer
        KV torch.cat another (bench/bench_training.py, BENCHMARKS.md "Training").
        """
        cfg = self.config
        cache = KVCache() if cache is None else cache
        t = cache.length
        if t >= cfg.context:
            raise ValueError(f"KV cache is full (context={cfg.context}): start a new cache")
        self.check_inputs(rtg, states, prev_actions, one_bar=True)
        B, C, H = states.shape[0], cfg.d_model, cfg.n_heads
        x = self._embed(rtg, states, prev_actions, self.pos.weight[t])  # (B, C)
        dtype = (torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type)
                 else x.dtype)  # what the qkv Linear returns, so the buffer matches forward's K/V
        kv = cache.reserve(t + 1, (cfg.n_layers, B, 2, H, C // H), cfg.context, x.device, dtype)
        for blk, kv_l in zip(self.blocks, kv.unbind(0), strict=True):  # kv_l (B, 2, H, capacity, C/H)
            att, mlp = blk.attn, blk.mlp
            h = torch.layer_norm(x, (C,), blk.ln1.weight, blk.ln1.bias, blk.ln1.eps)
            # (B, 3, H, 1, C/H): q / k / v of this bar, already in the cache's (.., H, bar, C/H) order
            qkv = F.linear(h, att.qkv.weight, att.qkv.bias).view(B, 3, H, 1, C // H)
            kv_l.narrow(3, t, 1).copy_(qkv.narrow(1, 1, 2))  # write this bar's K, V in place
            k, v = kv_l.narrow(3, 0, t + 1).unbind(1)  # (B, H, t+1, C/H) views
            # one query sees every cached key: no causal mask (forward's row t of the causal one)
            y = F.scaled_dot_product_attention(qkv.select(1, 0), k, v)  # (B, H, 1, C/H)
            x = x + F.linear(y.view(B, C), att.proj.weight, att.proj.bias)
            h = torch.layer_norm(x, (C,), blk.ln2.weight, blk.ln2.bias, blk.ln2.eps)
            x = x + F.linear(F.gelu(F.linear(h, mlp.fc.weight, mlp.fc.bias)), mlp.proj.weight, mlp.proj.bias)
        cache.length = t + 1
        logits, rtg_pred = self._head(x)
        return logits, rtg_pred, cache

    def _embed(self, rtg, states, prev_actions, pos: torch.Tensor) -> torch.Tensor:
        """Tokens plus positional rows: (rtg (...), states (..., S), prev_actions (...), pos
        broadcastable to (..., d)) -> (..., d), with (...) = (B, T) in forward, (B,) in step."""
        dtype = self.embed_state.weight.dtype
        tok = torch.cat(
            (
                self.embed_rtg((rtg / self.rtg_norm).to(dtype).unsqueeze(-1)),  # (..., d)
                self.embed_state(self.encode_states(states.to(dtype))),  # (..., d)
                self.embed_action(prev_actions.long()),  # (..., d)
            ),
            dim=-1,
        )  # (..., 3d)
        x = self.project(tok) + pos
        # Dropout is the identity in eval too; skipping the module call saves its dispatch in
        # step(), a live decision of ~80 tiny ops
        return self.drop(x) if self.training else x

    def _head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., d) -> (action logits (..., A), rtg_pred (...) in model units)."""
        x = self.ln_f(x)
        return self.action_head(x), self.rtg_head(x).squeeze(-1) * self.rtg_norm


def main() -> None:
    """Print the parameter count and run one forward pass on random inputs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, ModelConfig)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = TraderDecisionTransformer.from_config(vars(args)).eval()
    B, T = 2, args.context
    with torch.inference_mode():
        logits, rtg = model(
            torch.zeros(B, T), torch.randn(B, T, args.state_dim), torch.full((B, T), args.action_dim)
        )
    log.info("params=%d logits=%s rtg_pred=%s", model.num_parameters(), tuple(logits.shape), tuple(rtg.shape))


if __name__ == "__main__":
    main()
