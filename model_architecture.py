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
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from data_ingestion import add_config_args

log = logging.getLogger("model_architecture")


@dataclass(frozen=True)
class ModelConfig:
    """Arguments that rebuild a TraderDecisionTransformer (stored in checkpoints as a dict)."""

    state_dim: int = 17
    """Features per state vector (17, or 19 with the extra market-clock features)."""
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


@torch.library.custom_op("trader_twin::keep_mask", mutates_args=(),
                         tags=(torch.Tag.nondeterministic_seeded,))
def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout keep mask shaped like x (contiguous, x's dtype): 1 w.p. 1 - p, else 0.

    p is rounded to a 1/65536 grid: each full-range 64-bit draw of the default generator gives
    four uniform 16-bit lanes, compared with p's threshold (the seed and the RNG state still
    decide the mask). On CPU this is ~4x cheaper than bernoulli_ (one draw per element), which
    took 40 % of a training step; uint8 -> float is used because bool -> float is 3x slower.
    A custom op (never recomputed: nondeterministic_seeded) so torch.compile keeps one graph.
    x must not require grad (pass x.detach()): the mask has no gradient."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:n].view(x.shape)  # uniform on -32768..32767
    return (lanes >= -32768 + round(p * 65536)).view(torch.uint8).to(x.dtype)


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

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, H, T, C/H)
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for z in (q, k, v))
        if cache is not None:  # incremental decoding: x is the newest token(s) after the cached ones
            if cache:
                k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
            cache[:] = [k, v]
        p = self.dropout if self.training else 0.0
        if p > 0 and p < 1 and cache is None and x.device.type == "cpu":
            y = causal_attention_dropout(q, k, v, p)
        else:  # fused kernel (flash on CPU without dropout; flash/efficient on CUDA)
            causal = cache is None or T > 1  # one new query may see every cached key
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
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

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


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
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        cfg = ModelConfig(state_dim, action_dim, d_model, n_layers, n_heads, context, dropout)
        self.config = cfg
        self.embed_rtg = nn.Linear(1, d_model)  # E_rtg: scalar RTG_t (x RTG_SCALE)
        self.embed_state = nn.Linear(state_dim, d_model)  # E_s
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

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def check_inputs(self, rtg: torch.Tensor, states: torch.Tensor, prev_actions: torch.Tensor) -> None:
        """Raise ValueError naming the tensor when a shape or dtype does not match the contract.

        rtg (B, T) floating, states (B, T, state_dim) floating, prev_actions (B, T) integer,
        1 <= T <= context. Values are not inspected here (no device sync in the hot path).
        """
        cfg = self.config
        if states.dim() != 3 or states.shape[-1] != cfg.state_dim:
            raise ValueError(f"states must be (B, T, {cfg.state_dim}), got {tuple(states.shape)}")
        B, T, _ = states.shape
        if T < 1 or T > cfg.context:
            raise ValueError(f"sequence length T={T} must be in 1..context={cfg.context}")
        if tuple(rtg.shape) != (B, T):
            raise ValueError(f"rtg must be (B, T) = {(B, T)}, got {tuple(rtg.shape)}")
        if tuple(prev_actions.shape) != (B, T):
            raise ValueError(f"prev_actions must be (B, T) = {(B, T)}, got {tuple(prev_actions.shape)}")
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
        return self._run(rtg, states, prev_actions, 0, None)

    def step(self, rtg: torch.Tensor, states: torch.Tensor, prev_actions: torch.Tensor,
             cache: list[list] | None) -> tuple[torch.Tensor, torch.Tensor, list[list]]:
        """One new bar per sequence with a KV cache: (rtg (B,), states (B,S), prev_actions (B,),
        cache from the previous step or None) -> (logits (B,A), rtg_pred (B,), cache).

        Equal to forward() on the whole prefix at its last position (tested); the cost of one
        decision is one token instead of T. Eval mode; at most `context` steps per cache.
        """
        cache = [[] for _ in self.blocks] if cache is None else cache
        pos = cache[0][0].shape[2] if cache[0] else 0
        if pos >= self.config.context:
            raise ValueError(f"KV cache is full (context={self.config.context}): start a new cache")
        self.check_inputs(rtg[:, None], states[:, None], prev_actions[:, None])
        logits, rtg_pred = self._run(rtg[:, None], states[:, None], prev_actions[:, None], pos, cache)
        return logits[:, 0], rtg_pred[:, 0], cache

    def _run(self, rtg, states, prev_actions, pos0: int, cache: list | None):
        T = states.shape[1]
        dtype = self.embed_state.weight.dtype
        tok = torch.cat(
            (
                self.embed_rtg((rtg / self.rtg_norm).to(dtype).unsqueeze(-1)),  # (B, T, d)
                self.embed_state(states.to(dtype)),  # (B, T, d)
                self.embed_action(prev_actions.long()),  # (B, T, d)
            ),
            dim=-1,
        )  # (B, T, 3d)
        pos = self.pos(torch.arange(pos0, pos0 + T, device=states.device))  # (T, d)
        x = self.drop(self.project(tok) + pos)  # (B, T, d)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
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
