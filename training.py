"""Trainer, inference wrapper and checkpoint helpers for the TraderDecisionTransformer.

Promise: `TraderTrainer(model, device)` trains on batches of sequence_preparation's Dataset
(dicts of `rtg, states, prev_actions, actions, returns, mask`) with AdamW (decay on Linear
weights only), linear warmup + cosine decay, gradient clipping, loss = class-weighted
CE(actions) + rtg_weight x MSE(RTG_{t+1}) on real (masked) positions, bf16 autocast on CUDA only;
`validate(loader)` returns loss, accuracy, balanced_accuracy, macro_f1, rtg_mae and per-class
counts. `TraderInference(model, device)` answers "what would the trader do, aiming at target
RTG?" (`predict_with_target_rtg`, `act`). Checkpoints are plain dicts that `torch.load(path)`
(weights_only=True) opens, written atomically.

No-leakage rule: the RTG target at t is RTG_{t+1} = rtg_t - returns_t x RTG_SCALE (0 after the
window's last bar), never the input rtg_t itself; at inference the RTG input at t uses only
returns observed before t, and previous actions are shifted right (START at t = 0).

Run alone: library only (DESIGN.md); `python train_model.py` drives it.

Decisions where the issue is silent:
- Class weights: w_c = N / (K n_c) over the K classes present in the train split (sklearn's
  "balanced"; the mean weight per train sample is 1); a class absent from train gets the
  largest present weight.
- The RTG MSE is measured in units of the model's `rtg_norm` buffer (the train std of the RTG
  targets when train_model sets it, else 1 = DESIGN's plain model units), so rtg_weight keeps
  its meaning when returns are large fractions of capital.
- validate's `loss` uses the same weights as training; `rtg_mae` is in fraction units
  (|pred - RTG_{t+1}| / RTG_SCALE); `macro_f1` averages over the classes present in labels or
  predictions (sklearn's default); `baseline_macro_f1` is the majority-class predictor's.
- Early stopping: improvement = val macro_f1 strictly above the best so far; stop after
  `patience` epochs without one.
- AdamW is the fused implementation on every device (CPU: one kernel, 1.9 ms instead of
  8.8 ms a step at the seed config). `compile=True` runs train steps through
  torch.compile(model) (opt-in; validate() and inference stay eager; the state dict is the
  uncompiled model's, so checkpoints do not change).
- Greedy autoregressive inference (no `actions`) runs T-1 KV-cached single-token steps to pick
  the previous actions, then one forward over the whole sequence for the returned outputs.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from action_discretization import ACTIONS, N_ACTIONS, START_ACTION
from common import atomic_write
from model_architecture import TraderDecisionTransformer
from sequence_preparation import RTG_SCALE, honest_rtg

IGNORE_INDEX = -100
"""Action label of padding positions (ignored by the loss)."""


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation settings of TraderTrainer (its keyword arguments default to these)."""

    lr: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on Linear weights (not biases, LayerNorms, embeddings)."""
    warmup_steps: int = 100
    """Optimizer steps of linear warmup from 0 to lr."""
    total_steps: int | None = None
    """Step where the cosine reaches min_lr_ratio x lr; None = constant lr after warmup."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    rtg_weight: float = 0.1
    """Weight of the RTG MSE term next to the action cross-entropy."""
    patience: int = 10
    """Epochs without a val macro_f1 improvement before early stopping."""
    compile: bool = False
    """Train through torch.compile(model) (inductor; needs a C++ compiler on CPU). Opt-in: the
    first steps spend ~45 s compiling (seed config, cold cache), for 0-8 % faster steps on the
    2-core CPU of BENCHMARKS.md (within its run-to-run noise); validate() and inference stay eager."""


class TrainingDiverged(RuntimeError):
    """Raised when the loss becomes NaN or infinite."""


class WarmupCosine:
    """LR multiplier: linear warmup to 1, then cosine to min_ratio at `total` (picklable)."""

    def __init__(self, warmup: int, total: int | None, min_ratio: float):
        self.warmup, self.total, self.min_ratio = int(warmup), total, float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.total is None or self.total <= self.warmup:
            return 1.0
        frac = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


def class_weights_from_counts(counts) -> torch.Tensor:
    """Inverse-frequency weights (N_ACTIONS,) float32 from per-class train counts (module doc)."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64)).reshape(-1)
    if n.numel() != N_ACTIONS or bool((n < 0).any()) or float(n.sum()) <= 0:
        raise ValueError(f"class counts must be {N_ACTIONS} non-negative numbers with a positive sum, got {n.tolist()}")
    present = n > 0
    w = torch.zeros_like(n)
    w[present] = n.sum() / (present.sum() * n[present])
    w[~present] = w[present].max()
    return w.float()


def rtg_targets(rtg: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """RTG_{t+1} in model units: rtg_t - returns_t x RTG_SCALE, (B, T)."""
    return rtg - returns * RTG_SCALE


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: Linear weights decayed; biases, LayerNorm and embedding tables not."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (decay if isinstance(module, torch.nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def unwrap(model: torch.nn.Module) -> TraderDecisionTransformer:
    """The bare model under a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def _metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """accuracy, balanced_accuracy, macro_f1, baseline and per-class counts for labels y."""
    if y.size == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan"),
                "baseline_macro_f1": float("nan"), "n": 0}
    majority = np.full_like(y, np.bincount(y, minlength=N_ACTIONS).argmax())
    with warnings.catch_warnings():  # classes predicted but absent from y: sklearn warns, we report
        warnings.simplefilter("ignore")
        out = {
            "accuracy": float(accuracy_score(y, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "baseline_macro_f1": float(f1_score(y, majority, average="macro", zero_division=0)),
        }
    out["n"] = int(y.size)
    out["class_counts"] = dict(zip(ACTIONS, np.bincount(y, minlength=N_ACTIONS).tolist(), strict=True))
    out["pred_counts"] = dict(zip(ACTIONS, np.bincount(pred, minlength=N_ACTIONS).tolist(), strict=True))
    return out


class TraderTrainer:
    """One model's optimiser, schedule, loss and early-stopping state (see module docstring)."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu",
                 lr: float = TrainerConfig.lr, weight_decay: float = TrainerConfig.weight_decay,
                 warmup_steps: int = TrainerConfig.warmup_steps,
                 total_steps: int | None = TrainerConfig.total_steps,
                 min_lr_ratio: float = TrainerConfig.min_lr_ratio,
                 grad_clip: float = TrainerConfig.grad_clip, class_weights=None,
                 rtg_weight: float = TrainerConfig.rtg_weight, patience: int = TrainerConfig.patience,
                 compile: bool = TrainerConfig.compile, train_target: float | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        # the module train steps run through; self.model (its state_dict) is never the compiled one
        self.train_module = torch.compile(self.model) if compile else self.model
        self.grad_clip, self.rtg_weight, self.patience = grad_clip, rtg_weight, patience
        # None: condition training on the realised RTG (the seed); a float: on target - past returns
        self.train_target = None if train_target is None else float(train_target)
        self.amp = self.device.type == "cuda"  # bf16 autocast on CUDA only
        w = torch.ones(N_ACTIONS) if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.class_weights = w.to(self.device)
        # fused: one kernel over all parameters (CPU too: 1.9 ms instead of 8.8 ms a step here)
        self.optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95),
                                           fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))
        self.best_metric, self.bad_epochs, self.global_step = -math.inf, 0, 0

    # ---------------------------------------------------------------- loss
    def _to_device(self, batch: dict) -> dict:
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) for k, v in batch.items() if torch.is_tensor(v)}

    def _forward(self, model, b: dict, rtg_in: torch.Tensor | None = None):
        """(logits (B,T,A) fp32, rtg_pred (B,T) fp32, ce, mse) for one batch on the device.

        rtg_in replaces the conditioning input (default: the realised b["rtg"]); the RTG head's
        target stays the realised RTG_{t+1}."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits, rtg_pred = model(b["rtg"] if rtg_in is None else rtg_in, b["states"],
                                     b["prev_actions"])
        logits, rtg_pred = logits.float(), rtg_pred.float()
        actions = b["actions"].masked_fill(~b["mask"], IGNORE_INDEX)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), actions.reshape(-1),
                             weight=self.class_weights, ignore_index=IGNORE_INDEX)
        # MSE in units of the model's rtg_norm (1 unless train_model set it), (B, T) masked
        err = (rtg_pred - rtg_targets(b["rtg"], b["returns"])) * b["mask"] / unwrap(model).rtg_norm
        mse = err.square().sum() / b["mask"].sum().clamp(min=1)
        return logits, rtg_pred, ce, mse

    # ---------------------------------------------------------------- train / validate
    def train_epoch(self, loader, epoch: int = 0, progress: bool = False) -> dict:
        """One pass over `loader` with optimizer steps; returns loss, ce, rtg_mse, accuracy, lr,
        steps, windows_per_s. Raises TrainingDiverged naming epoch and step on a NaN/inf loss."""
        from tqdm import tqdm

        self.model.train()
        sums = {"loss": 0.0, "ce": 0.0, "rtg_mse": 0.0}
        correct = total = steps = windows = 0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None if progress else True)
        for step, batch in enumerate(bar):
            b = self._to_device(batch)
            rtg_in = None  # the seed conditions on the realised RTG_t (which contains r_t)
            if self.train_target is not None:  # the honest rule, as at validation and test
                rtg_in = honest_rtg(b["returns"], self.train_target) * RTG_SCALE
            logits, _, ce, mse = self._forward(self.train_module, b, rtg_in)
            loss = ce + self.rtg_weight * mse
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch} step {step} (global step "
                    f"{self.global_step}); lower --lr or check the data for extreme values")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.global_step += 1
            steps += 1
            windows += int(b["states"].shape[0])
            for k, v in (("loss", loss), ("ce", ce), ("rtg_mse", mse)):
                sums[k] += float(v.detach())
            m = b["mask"]
            correct += int(((logits.argmax(-1) == b["actions"]) & m).sum())
            total += int(m.sum())
            bar.set_postfix(loss=f"{sums['loss'] / steps:.4f}")
        dt = time.perf_counter() - t0
        out = {k: v / max(steps, 1) for k, v in sums.items()}
        out.update(accuracy=correct / max(total, 1), lr=self.scheduler.get_last_lr()[0], steps=steps,
                   windows_per_s=windows / dt if dt > 0 else float("nan"))
        return out

    @torch.no_grad()
    def validate(self, loader, target_rtg: float | None = None) -> dict:
        """Metrics over all real positions of `loader` (eval mode, no dropout, no grad).

        By default the model is conditioned on the realised RTG, as in training (the seed's
        validation). With target_rtg (a fraction) it is conditioned honestly, as a live bot would
        be: RTG_t = target - sum_{k<t} r_k, so no return at or after t enters position t; model
        selection uses this, because the realised RTG_t contains r_t, which reveals whether the
        trader traded in bar t."""
        model = unwrap(self.model)  # no DDP collectives: every rank scores the full loader
        was_training = model.training
        model.eval()
        ce_num = ce_den = sse = sae = 0.0
        n_rtg = 0
        ys, preds = [], []
        for batch in loader:
            b = self._to_device(batch)
            rtg_in = None
            if target_rtg is not None:  # (B, T) target minus past returns, model units
                rtg_in = honest_rtg(b["returns"], float(target_rtg)) * RTG_SCALE
            logits, rtg_pred, _, _ = self._forward(model, b, rtg_in)
            m = b["mask"]
            y = b["actions"][m]
            nll = F.cross_entropy(logits[m], y, reduction="none")
            w = self.class_weights[y]
            ce_num += float((w * nll).sum())
            ce_den += float(w.sum())
            err = (rtg_pred - rtg_targets(b["rtg"], b["returns"]))[m]
            sse += float((err / model.rtg_norm).square().sum())
            sae += float(err.abs().sum())
            n_rtg += int(m.sum())
            ys.append(y.cpu().numpy())
            preds.append(logits[m].argmax(-1).cpu().numpy())
        model.train(was_training)
        y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        mse = sse / max(n_rtg, 1)
        out = {"loss": ce_num / max(ce_den, 1e-12) + self.rtg_weight * mse, "rtg_mse": mse,
               "rtg_mae": sae / max(n_rtg, 1) / RTG_SCALE}
        out.update(_metrics(y, pred))
        return out

    def update_early_stopping(self, val_metrics: dict) -> bool:
        """Record one epoch's val metrics; True when macro_f1 improved on the best so far."""
        score = val_metrics["macro_f1"]
        if score > self.best_metric:
            self.best_metric, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True after `patience` epochs without improvement."""
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        """Optimizer, scheduler and early-stopping state (plain tensors and numbers)."""
        return {"optimizer_state_dict": self.optimizer.state_dict(),
                "scheduler_state_dict": self.scheduler.state_dict(),
                "trainer_state": {"best_metric": self.best_metric, "bad_epochs": self.bad_epochs,
                                  "global_step": self.global_step}}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of state_dict (the checkpoint dict itself is accepted)."""
        self.optimizer.load_state_dict(state["optimizer_state_dict"])
        self.scheduler.load_state_dict(state["scheduler_state_dict"])
        t = state["trainer_state"]
        self.best_metric, self.bad_epochs, self.global_step = t["best_metric"], t["bad_epochs"], t["global_step"]


# -------------------------------------------------------------------- checkpoints & RNG
def capture_rng_state() -> dict:
    """torch CPU/CUDA, numpy and python RNG state as weights_only-loadable values."""
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002 (the global state is what we restore)
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": random.getstate()}


def restore_rng_state(state: dict) -> None:
    """Inverse of capture_rng_state."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    s = state["numpy"]
    np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4]))  # noqa: NPY002
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """torch.save `payload` to `path` atomically (temp file in the same dir + os.replace)."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


# -------------------------------------------------------------------- inference
class TraderInference:
    """Eval-mode wrapper that turns states and a target return into the trader's likely actions."""

    def __init__(self, model: TraderDecisionTransformer, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = unwrap(model).to(self.device).eval()
        self.pipeline_meta: dict | None = None
        self.metrics: dict | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> TraderInference:
        """Rebuild the model from a checkpoint's model_config and weights; keep pipeline_meta."""
        ckpt = torch.load(path, map_location=device)
        inf = cls(TraderDecisionTransformer.from_checkpoint(ckpt), device)  # one read of the file
        inf.pipeline_meta, inf.metrics = ckpt.get("pipeline_meta"), ckpt.get("metrics")
        return inf

    def _tensor(self, x, name: str, shape: tuple, floating: bool) -> torch.Tensor:
        t = torch.as_tensor(x)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if floating != t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be a {'floating' if floating else 'integer'} tensor, got {t.dtype}")
        if floating and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
        return t.to(self.device, torch.float32 if floating else torch.long)

    def _inputs(self, states, target_rtg, actions, returns):
        """Validate and build (rtg (B,T) model units, states (B,T,S), actions or None)."""
        cfg = self.model.config
        s = torch.as_tensor(states)
        if s.dim() != 3 or s.shape[-1] != cfg.state_dim or not 1 <= s.shape[1] <= cfg.context:
            raise ValueError(f"states must be (B, T, {cfg.state_dim}) with 1 <= T <= context="
                             f"{cfg.context}, got {tuple(s.shape)}")
        B, T, _ = s.shape
        s = self._tensor(s, "states", (B, T, cfg.state_dim), True)
        tgt = torch.as_tensor(target_rtg, dtype=torch.float64) if not torch.is_tensor(target_rtg) else target_rtg
        tgt = self._tensor(tgt.reshape(-1) if tgt.dim() else tgt.expand(B), "target_rtg", (B,), True)
        rtg = tgt[:, None].expand(B, T)
        if returns is not None:  # rtg_t = target - sum_{k<t} r_k: only returns observed before t
            rtg = honest_rtg(self._tensor(returns, "returns", (B, T), True), tgt[:, None])
        a = None
        if actions is not None:
            a = self._tensor(actions, "actions", (B, T), False)
            if bool(((a < 0) | (a >= cfg.action_dim)).any()):
                raise ValueError(f"actions must be in 0..{cfg.action_dim - 1}")
        return rtg * RTG_SCALE, s, a

    @torch.inference_mode()
    def predict_with_target_rtg(self, states, target_rtg: float = 0.02, actions=None, returns=None):
        """(action logits (B,T,A), predicted RTG_{t+1} (B,T) in fraction units).

        states (B,T,S) float; target_rtg a fraction (0.02 = +2 %), scalar or (B,); actions (B,T)
        the trader's observed actions (prev = shifted right, START at t=0; actions[:, -1] is not
        used) or None for greedy autoregressive previous actions; returns (B,T) observed returns
        that decrement the RTG input, or None to hold the target constant.
        """
        rtg, s, a = self._inputs(states, target_rtg, actions, returns)
        B, T, _ = s.shape
        prev = torch.full((B, T), START_ACTION, dtype=torch.long, device=self.device)
        if a is not None:
            prev[:, 1:] = a[:, :-1]
        else:  # greedy: argmax at t is a_t, the previous action of t+1 (KV cache, one token a step)
            cache = None
            for t in range(T - 1):
                step_logits, _, cache = self.model.step(rtg[:, t], s[:, t], prev[:, t], cache)
                prev[:, t + 1] = step_logits.argmax(-1)
        logits, rtg_pred = self.model(rtg, s, prev)
        return logits.float(), rtg_pred.float() / RTG_SCALE

    def act(self, states, target_rtg: float = 0.02, actions=None, returns=None) -> tuple[str, dict]:
        """The last bar's most likely action name and {action name: probability} (one trader).

        states is (T,S) or (1,T,S); actions / returns are (T,) or (1,T) when given.
        """
        s = torch.as_tensor(states)
        if s.dim() == 2:
            s = s[None]
            actions = None if actions is None else torch.as_tensor(actions)[None]
            returns = None if returns is None else torch.as_tensor(returns)[None]
        if s.dim() != 3 or s.shape[0] != 1:
            raise ValueError(f"act takes one sequence: states (T, S) or (1, T, S), got {tuple(s.shape)}")
        logits, _ = self.predict_with_target_rtg(s, target_rtg, actions, returns)
        p = torch.softmax(logits[0, -1], dim=-1).cpu().tolist()
        return ACTIONS[int(np.argmax(p))], dict(zip(ACTIONS, p, strict=True))
