"""Benchmark: training throughput, achieved FLOP/s and decision latency of the Decision Transformer.

Prints, in one run, at the seed config (B=32, T=128, d_model=128, 6 layers, 8 heads):
- windows/s of one train step (forward + backward + AdamW step, fused AdamW for both models) for
  TraderDecisionTransformer, eager and under torch.compile (the opt-in `--compile` of
  train_model.py; compile time not timed), and for HF transformers' DecisionTransformerModel
  (eager) at the same width/depth/heads/context (state_dim 17, act_dim 5; it interleaves 3
  tokens per bar, so it attends over 3T = 384 tokens);
- achieved GFLOP/s of both, counted analytically (6 x matmul params x tokens + 12 x layers x
  d_model x T^2 per window for attention, nanoGPT's estimate, the causal half not discounted),
  against a matmul peak (torch.mm of two n x n matrices; fp32 on CPU, bf16 on CUDA) measured
  interleaved with the steps (peak, step, peak, step, ...) and reported with one statistic for
  both: the median of the per-pair ratios, and the best step against the best peak;
- one-decision latency p50/p90 for B=1, K=128 under torch.inference_mode (raw forward,
  through TraderInference.predict_with_target_rtg with the observed actions, and one
  KV-cached model.step with the 127 previous bars cached, as a live bot would run it), the
  three timed round-robin.

Run: `python bench/bench_training.py [--device cpu|cuda] [--steps 4] [--hf_steps 2] [--threads N]
[--skip_compile]` (1-2 minutes on 2 CPU cores, +45 s of compiling on a cold inductor cache). On CUDA both models
train under bf16 autocast. The load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_architecture import TraderDecisionTransformer  # noqa: E402
from training import TraderInference  # noqa: E402

B, T, S, A, D, L, H = 32, 128, 17, 5, 128, 6, 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls (Linear weights; embeddings/LN/biases excluded)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def train_flops(n_matmul: int, tokens: int, layers: int, d: int, seq: int, windows: int) -> float:
    """FLOPs of one train step: 6 N per token + 12 L d seq^2 per window for attention."""
    return 6.0 * n_matmul * tokens + 12.0 * layers * d * seq * seq * windows


def matmul_peak(device: torch.device, n: int):
    """Closure: seconds of one torch.mm(n x n, n x n) (fp32 on CPU, bf16 on CUDA), 2 n^3 FLOPs."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)

    def once() -> float:
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        return time.perf_counter() - t0

    return once


def time_interleaved(step, peak, device: torch.device, warmup: int, steps: int) -> tuple[list, list]:
    """(seconds per step() call, seconds per peak() mm) for `steps` pairs, after warmup calls.

    peak, step, peak, step, ...: on a host whose speed drifts (shared cores, steal time) each
    pair sees about the same machine, so the per-pair utilisation step / peak compares like
    with like, which a best-of-3 peak taken once before a median of 4 steps did not."""
    for _ in range(warmup):
        step()
    step_s, peak_s = [], []
    for _ in range(steps):
        peak_s.append(peak())
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        step_s.append(time.perf_counter() - t0)
    return step_s, peak_s


def utilisation(flops: float, peak_flops: float, step_s: list, peak_s: list) -> tuple[float, float]:
    """(median of the per-pair ratios, best step vs best peak) of achieved / peak FLOP/s."""
    pairs = [(flops / s) / (peak_flops / p) for s, p in zip(step_s, peak_s, strict=True)]
    return statistics.median(pairs), (flops / min(step_s)) / (peak_flops / min(peak_s))


def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The same AdamW for both models (fused, as TraderTrainer's)."""
    return torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)


def ours_step(device: torch.device, compile: bool = False):
    """Train-step closure for TraderDecisionTransformer at the seed config (compiled: the
    forward and its backward through torch.compile, as TraderTrainer(compile=True))."""
    torch.manual_seed(0)
    model = TraderDecisionTransformer(state_dim=S, action_dim=A, d_model=D, n_layers=L, n_heads=H,
                                      context=T).to(device).train()
    opt = optimizer(model)
    fwd = torch.compile(model) if compile else model
    rtg, states = torch.randn(B, T, device=device), torch.randn(B, T, S, device=device)
    prev, y = torch.randint(0, A + 1, (B, T), device=device), torch.randint(0, A, (B, T), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, rtg_pred = fwd(rtg, states, prev)
        loss = F.cross_entropy(logits.float().reshape(-1, A), y.reshape(-1)) + 0.1 * F.mse_loss(rtg_pred.float(), rtg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def hf_step(device: torch.device):
    """Train-step closure for HF DecisionTransformerModel at the same width/depth/heads/context."""
    from transformers import DecisionTransformerConfig, DecisionTransformerModel

    torch.manual_seed(0)
    cfg = DecisionTransformerConfig(state_dim=S, act_dim=A, hidden_size=D, n_layer=L, n_head=H,
                                    max_ep_len=T, n_positions=3 * T, resid_pdrop=0.1, embd_pdrop=0.1,
                                    attn_pdrop=0.1)
    model = DecisionTransformerModel(cfg).to(device).train()
    opt = optimizer(model)
    states, rtg = torch.randn(B, T, S, device=device), torch.randn(B, T, 1, device=device)
    y = torch.randint(0, A, (B, T), device=device)
    actions = F.one_hot(y, A).float()
    timesteps = torch.arange(T, device=device).expand(B, T)
    mask = torch.ones(B, T, device=device, dtype=torch.long)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(states=states, actions=actions, returns_to_go=rtg, timesteps=timesteps,
                        attention_mask=mask, return_dict=True)
        loss = F.cross_entropy(out.action_preds.float().reshape(-1, A), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, step


def latency(model, device: torch.device, reps: int) -> dict:
    """p50/p90 ms of one decision (B=1, K=128): raw forward, via TraderInference, KV-cached step.

    The three are timed round-robin (one call of each per round), so a slow phase of the host
    hits all three alike instead of whichever ran during it."""
    model.eval()
    inf = TraderInference(model, device=device)
    rtg, states = torch.full((1, T), 2.0, device=device), torch.randn(1, T, S, device=device)
    prev, acts = torch.full((1, T), A, device=device), torch.randint(0, A, (1, T), device=device)
    with torch.inference_mode():  # a live bot's cache after 127 bars; each decision adds bar 128
        cache = None
        for t in range(T - 1):
            _, _, cache = model.step(rtg[:, t], states[:, t], prev[:, t], cache)

    def one_step():  # truncate: re-decide bar 128 on the same 127 cached bars (in-place buffer)
        cache.truncate(T - 1)
        model.step(rtg[:, -1], states[:, -1], prev[:, -1], cache)

    fns = {"forward": lambda: model(rtg, states, prev),
           "predict_with_target_rtg": lambda: inf.predict_with_target_rtg(states, 0.02, actions=acts),
           "KV-cached step, 127 bars cached": one_step}
    ts = {name: [] for name in fns}
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(reps + 5):
            for name, fn in fns.items():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                if i >= 5:
                    ts[name].append((time.perf_counter() - t0) * 1e3)
    return {name: (statistics.median(v), statistics.quantiles(v, n=10)[8]) for name, v in ts.items()}


def load() -> str:
    """The 1/5/15-minute load averages, for the record next to the figures."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_cores() -> int:
    """CPU cores minus the 1-minute load average (>= 1): OpenMP threads on busy cores stall."""
    n = os.cpu_count() or 1
    return max(1, min(n, round(n - os.getloadavg()[0])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=4, help="timed train steps per model (median)")
    p.add_argument("--threads", type=int, default=free_cores(),
                   help="torch CPU threads (default: cores not busy with other jobs, by load average)")
    p.add_argument("--hf_steps", type=int, default=2, help="timed train steps of the HF model")
    p.add_argument("--latency_reps", type=int, default=100, help="timed rounds of the three decisions")
    p.add_argument("--skip_compile", action="store_true", help="no torch.compile row")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_training: --device cuda requested but no CUDA device is available", file=sys.stderr)
        raise SystemExit(2)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{args.threads} threads'})"
          f", torch {torch.__version__}, B={B} T={T} d={D} L={L} H={H}, load average {load()}")
    n = 8192 if device.type == "cuda" else 2048
    peak, peak_flops = matmul_peak(device, n), 2.0 * n**3
    first = [peak() for _ in range(3)]
    print(f"matmul peak ({'bf16' if device.type == 'cuda' else 'fp32'} torch.mm {n}^2), 3 calls before the "
          f"models: best {peak_flops / min(first) / 1e9:.1f} GFLOP/s, median {peak_flops / statistics.median(first) / 1e9:.1f}")
    runs = [("TraderDecisionTransformer", ours_step, T, args.steps, 1),
            ("TraderDT torch.compile", lambda d: ours_step(d, compile=True), T, args.steps, 2),
            ("HF DecisionTransformerModel", hf_step, 3 * T, args.hf_steps, 1)]
    rows = {}
    for name, build, seq, n_steps, warmup in runs[::2] if args.skip_compile else runs:
        model, step = build(device)
        t0 = time.perf_counter()
        step_s, peak_s = time_interleaved(step, peak, device, warmup=warmup, steps=n_steps)
        sec = statistics.median(step_s)
        compiling = (f"  (compile + warmup {time.perf_counter() - t0 - sum(step_s) - sum(peak_s):.0f} s)"
                     if warmup > 1 else "")
        flops = train_flops(matmul_params(model), B * seq, L, D, seq, B)
        pair_med, best_best = utilisation(flops, peak_flops, step_s, peak_s)
        rows[name] = (B / sec, flops / sec / 1e9, model)
        print(f"{name:28s} params {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M  "
              f"{B / sec:8.1f} windows/s  {sec * 1e3:8.1f} ms/step (median of {n_steps})  "
              f"{flops / sec / 1e9:7.1f} GFLOP/s{compiling}")
        print(f"{'':28s} % of the interleaved matmul peak (median {peak_flops / statistics.median(peak_s) / 1e9:.1f}, "
              f"best {peak_flops / min(peak_s) / 1e9:.1f} GFLOP/s): median of per-pair ratios "
              f"{100 * pair_med:.0f} %, best step vs best peak {100 * best_best:.0f} %"
              f"{'' if name.startswith('HF') else ' (goal >= 40 %)'}")
    hf = rows["HF DecisionTransformerModel"]
    for name in ("TraderDecisionTransformer", "TraderDT torch.compile")[: 2 - args.skip_compile]:
        print(f"speed-up vs HF (windows/s), {name}: {rows[name][0] / hf[0]:.1f}x (goal >= 15x)")
    for name, (p50, p90) in latency(rows["TraderDecisionTransformer"][2], device, args.latency_reps).items():
        print(f"one-decision latency B=1 K={T} ({name}): p50 {p50:.2f} ms, p90 {p90:.2f} ms (goal p50 <= 3 ms)")
    print(f"load average at the end {load()}")


if __name__ == "__main__":
    main()
