"""Train the trader's Decision Transformer on the processed parquet -> models/.

Promise: `python train_model.py` trains on the parquet the user built (`--processed`, default
`data/processed_trader_data.parquet`): it builds it with the pipeline's defaults only when it is
missing, rebuilds it with its own config (from its meta) when its price files changed, and
never with another config; then it trains TraderDecisionTransformer on the train split,
validates on val every epoch, and writes `models/last.pt` (every epoch), `models/best_model.pt`
(best val macro-F1), `models/metrics.jsonl` (one JSON line per epoch) and
`models/learning_curve.png`. Checkpoints hold model_state_dict, model_config, optimizer,
scheduler, trainer and RNG state, epoch, metrics, pipeline_meta and train_config, open with
plain `torch.load(path)` and are written atomically. `--resume` continues from last.pt exactly
(same weights as an uninterrupted run on CPU). Under `torchrun --nproc_per_node N` it trains
with DDP (NCCL on CUDA, gloo on CPU) and a DistributedSampler; only rank 0 writes.

No-leakage rule: class weights come from train-split action counts; the model is fitted on
train windows only; val only selects the checkpoint and stops training (the test split is
evaluate.py's).

Run alone: `python train_model.py [--epochs 50] [--batch_size 32] [--device auto] [--compile] ...`;
multi-GPU: `torchrun --nproc_per_node 4 train_model.py --device cuda`.

Decisions where the issue is silent:
- Shuffling: a DistributedSampler (also with one process) whose permutation is seeded with
  seed + epoch, so a resumed run sees the same batches. The parquet is read once
  (sequence_preparation.read_processed, which checks its columns and its meta's config).
- `--data_dir` defaults to the parquet's own folder of price files (its meta's config); another
  folder is a one-line error naming the command that builds a parquet from it. A parquet whose
  price files are gone is used as it is. No train or val windows, or one train class, is a
  one-line error; too little data and a one-class val split are logged as warnings (with the
  numbers) and stored in the checkpoint's train_config["data_size_warnings"].
- rtg_norm = the train std of RTG_{t+1} (model units), stored in the model's state dict; with
  --state_bins N the encoding's edges are the train rows' quantiles, stored there too.
- model context = the data's window; state_dim from pipeline_meta.json. `--resume` rebuilds the
  model from the checkpoint's model_config and keeps its LR schedule (total steps).
- warmup_steps None = 5 % of the total steps, at most 100. `--stop_after_epoch K` ends the
  process after epoch K as if pre-empted (the schedule still spans --epochs); `--resume` goes on.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import orjson
import torch

from action_discretization import ACTIONS, N_ACTIONS
from common import UserError, add_config_args, atomic_write
from common import resolve_device as common_resolve_device
from model_architecture import ModelConfig, TraderDecisionTransformer
from sequence_preparation import (
    PROCESSED_PATH,
    ProcessedDataError,
    TraderSequenceDataset,
    data_size_warnings,
    honest_target,
    make_dataloader,
    parquet_schema,
    read_meta,
    read_processed,
    split_class_counts,
)
from training import (
    TraderTrainer,
    TrainerConfig,
    TrainingDiverged,
    capture_rng_state,
    class_weights_from_counts,
    restore_rng_state,
    save_checkpoint,
    unwrap,
)

log = logging.getLogger("train_model")
DEFAULT_DATA_DIR = "downloads/merged_trades"
"""Where a missing parquet is built from when --data_dir is not given."""


@dataclass(frozen=True)
class TrainConfig:
    """Flags of train_model.py (one field per flag, same names)."""

    data_dir: str | None = None
    """Price files of the parquet (None = the parquet's own, from its meta; downloads/merged_trades
    when the parquet is missing). Another folder than the parquet's own is an error."""
    output_dir: str = "models"
    """Where best_model.pt, last.pt, metrics.jsonl and learning_curve.png go."""
    epochs: int = 50
    """Maximum training epochs."""
    batch_size: int = 32
    """Windows per optimizer step (per process under torchrun)."""
    device: str = "auto"
    """cuda | cpu | auto (cuda when available)."""
    processed: str = PROCESSED_PATH
    """Processed parquet (its meta beside it: sequence_preparation.meta_path_for)."""
    lr: float = TrainerConfig.lr
    """Peak learning rate (AdamW, warmup + cosine)."""
    seed: int = 0
    """Seed of model init, dropout and shuffling."""
    resume: bool = False
    """Continue from output_dir/last.pt."""
    patience: int = TrainerConfig.patience
    """Early stopping: epochs without val macro-F1 improvement."""
    d_model: int = ModelConfig.d_model
    """Model width."""
    n_layers: int = ModelConfig.n_layers
    """Transformer blocks."""
    n_heads: int = ModelConfig.n_heads
    """Attention heads."""
    dropout: float = ModelConfig.dropout
    """Dropout rate."""
    state_bins: int = ModelConfig.state_bins
    """0 = linear state embedding (the seed); N >= 2 = piecewise-linear encoding over N train-quantile bins."""
    weight_decay: float = TrainerConfig.weight_decay
    """AdamW weight decay on Linear weights."""
    warmup_steps: int | None = None
    """LR warmup steps (None = 5 % of total steps, at most 100)."""
    grad_clip: float = TrainerConfig.grad_clip
    """Gradient-norm clip (0 = off)."""
    rtg_weight: float = TrainerConfig.rtg_weight
    """Weight of the RTG MSE in the loss."""
    num_workers: int = 0
    """DataLoader worker processes."""
    compile: bool = TrainerConfig.compile
    """Train steps through torch.compile (opt-in; see TrainerConfig.compile and BENCHMARKS.md)."""
    stop_after_epoch: int | None = None
    """End this process after that epoch (simulated pre-emption; continue with --resume)."""
    steps: int | None = None
    """Optimizer-step budget: epochs = ceil(steps / batches per epoch), replacing --epochs (None = --epochs)."""
    rtg_input: str = "realised"
    """Training's RTG input: realised (the seed; contains r_t) or honest (target - past returns, as at test)."""


class TrainError(UserError):
    """A user error (bad flag, missing data): one line, exit code 2."""


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """cuda | cpu | auto -> torch.device (common.resolve_device; cuda:local_rank under
    torchrun); its one-line UserError when cuda is requested but absent."""
    kind = common_resolve_device(requested)
    return torch.device(f"cuda:{local_rank}") if kind == "cuda" else torch.device("cpu")


def _run_pipeline(pcfg) -> None:
    import pipeline

    try:
        pipeline.run(pcfg)
    except pipeline.PipelineError as e:
        raise TrainError(f"pipeline: {e}") from None


def ensure_processed(cfg: TrainConfig) -> None:
    """Build cfg.processed when missing, refresh it when its inputs changed, never change its
    config (module doc). TrainError (one line) when --data_dir is not the parquet's own."""
    import pipeline  # lazy: below us in the module chain, and heavy

    out = Path(cfg.processed)
    if not out.exists():
        data_dir = cfg.data_dir or DEFAULT_DATA_DIR
        if not pipeline.price_files(data_dir):
            raise TrainError(f"{out} not found and {data_dir} holds no price files: build it with "
                             f"`python pipeline.py --data_dir DIR --output {out}`")
        log.info("%s not found: building it from %s with the pipeline's defaults", out, data_dir)
        _run_pipeline(pipeline.PipelineConfig(data_dir=data_dir, output=str(out)))
        return
    try:
        meta = read_meta(out)
        parquet_schema(out, meta)  # the meta must be this parquet's own
        if not meta.get("config"):  # a parquet built by other means: nothing to rebuild it with
            log.info("%s: its meta holds no pipeline config; using it as it is", out)
            return
        pcfg = pipeline.config_from_meta(meta, str(out))
    except (ProcessedDataError, pipeline.PipelineError) as e:
        raise TrainError(str(e)) from None
    if cfg.data_dir is not None and Path(cfg.data_dir).resolve() != Path(pcfg.data_dir).resolve():
        raise TrainError(
            f"{out} was built from {pcfg.data_dir}, not --data_dir {cfg.data_dir}: drop --data_dir to "
            f"train on it, or build another parquet first: `python pipeline.py --data_dir "
            f"{cfg.data_dir} --output OTHER.parquet` and train with --processed OTHER.parquet")
    if not pipeline.price_files(pcfg.data_dir):
        return  # nothing to rebuild from: use the parquet as it is
    if pipeline.is_stale(pcfg):
        log.info("%s is older than its inputs in %s: rebuilding it with its own config (%s bars, "
                 "features from %s)", out, pcfg.data_dir, pcfg.bar_interval, pcfg.price_source)
        _run_pipeline(pcfg)


def rtg_target_std(dataset) -> float:
    """Std of the RTG targets RTG_{t+1} (model units) over the real positions of train windows
    (the model's rtg_norm; 1.0 when degenerate)."""
    from torch.utils.data import DataLoader

    from training import rtg_targets

    vals = [rtg_targets(b["rtg"], b["returns"])[b["mask"]] for b in DataLoader(dataset, batch_size=256)]
    std = float(torch.cat(vals).std()) if vals else 0.0
    return std if math.isfinite(std) and std > 1e-6 else 1.0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (libraries may use the global state)
    torch.manual_seed(seed)


def plot_curves(history: list[dict], path: Path) -> None:
    """Learning curve PNG: train/val loss and val macro-F1 (vs the majority baseline) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(ep, [h["train"]["loss"] for h in history], label="train")
    a1.plot(ep, [h["val"]["loss"] for h in history], label="val")
    a1.set(xlabel="epoch", ylabel="loss (weighted CE + 0.1 MSE)", title="loss")
    a2.plot(ep, [h["val"]["macro_f1"] for h in history], label="val macro-F1")
    a2.plot(ep, [h["val"]["baseline_macro_f1"] for h in history], "--", label="majority baseline")
    a2.set(xlabel="epoch", ylabel="macro-F1", title="validation")
    for a in (a1, a2):
        a.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def run(cfg: TrainConfig) -> dict:
    """Train (or resume) per cfg; returns {best_epoch, best_macro_f1, epochs_run, last, best}."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    for name in ("epochs", "batch_size", "d_model", "n_layers", "n_heads", "steps"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise TrainError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.rtg_input not in ("realised", "honest"):
        raise TrainError(f"--rtg_input must be realised or honest, got {cfg.rtg_input!r}")
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if device.type == "cuda":
            torch.cuda.set_device(device)
    try:
        return _train(cfg, device, rank, world)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _train(cfg: TrainConfig, device: torch.device, rank: int, world: int) -> dict:
    from torch.utils.data.distributed import DistributedSampler
    from tqdm import tqdm

    out_dir, is_main = Path(cfg.output_dir), rank == 0
    if is_main:
        ensure_processed(cfg)
    if world > 1:
        torch.distributed.barrier()  # the parquet exists before the other ranks read it
    try:
        df, meta = read_processed(cfg.processed, [])  # the one read of the parquet
    except ProcessedDataError as e:
        raise TrainError(str(e)) from None
    seed_everything(cfg.seed)
    cols, window, stride = list(meta["state_features"]), int(meta["window"]), int(meta["stride"])
    train_ds = TraderSequenceDataset(df, "train", window, stride, cols)
    n_val = len(TraderSequenceDataset(df, "val", window, window, cols))
    if len(train_ds) == 0 or n_val == 0:
        raise TrainError(f"{cfg.processed} has {len(train_ds)} train and {n_val} val windows: both are "
                         "needed (use more data, or a smaller --window / other --train_frac in pipeline.py)")
    counts = split_class_counts(df)
    val_counts = split_class_counts(df, "val")
    size_warnings = data_size_warnings({"train": counts, "val": val_counts},
                                       {"train": len(train_ds), "val": n_val})
    if sum(c > 0 for c in counts) < 2:
        raise TrainError(f"{cfg.processed}: the train split holds one action class only "
                         f"({dict(zip(ACTIONS, counts, strict=True))}): nothing to learn")
    for w in size_warnings:
        log.warning("%s", w)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    frame = (df, meta)
    train_loader = make_dataloader(cfg.processed, split="train", batch_size=cfg.batch_size,
                                   sampler=sampler, num_workers=cfg.num_workers, device=device,
                                   frame=frame)
    val_loader = make_dataloader(cfg.processed, split="val", batch_size=cfg.batch_size,
                                 shuffle=False, num_workers=cfg.num_workers, device=device, frame=frame)
    last_path = out_dir / "last.pt"
    ckpt = None
    if cfg.resume:
        if not last_path.exists():
            raise TrainError(f"--resume: {last_path} not found: train without --resume first")
        ckpt = torch.load(last_path, map_location="cpu")
    model_config = ckpt["model_config"] if ckpt else dict(
        state_dim=int(meta["state_dim"]), action_dim=N_ACTIONS, d_model=cfg.d_model,
        n_layers=cfg.n_layers, n_heads=cfg.n_heads, context=int(meta["window"]), dropout=cfg.dropout,
        state_bins=cfg.state_bins)
    try:
        model = TraderDecisionTransformer.from_config(model_config)
    except ValueError as e:
        raise TrainError(str(e)) from None
    model.set_rtg_norm(rtg_target_std(train_ds))
    if model.config.state_bins and ckpt is None:  # edges from train rows (a resume loads its own)
        model.set_state_bins(df.loc[df["split"].to_numpy() == "train", cols].to_numpy(np.float64))
    # model selection conditions on a target from the train split, never the realised val RTG
    target = honest_target(df, window)
    epochs = cfg.epochs if cfg.steps is None else max(1, math.ceil(cfg.steps / len(train_loader)))
    total = epochs * len(train_loader)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, math.ceil(0.05 * total))
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model.to(device), device_ids=[device.index] if device.type == "cuda" else None)
    trainer = TraderTrainer(model, device=device, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            warmup_steps=warmup, total_steps=total, grad_clip=cfg.grad_clip,
                            class_weights=class_weights_from_counts(counts), rtg_weight=cfg.rtg_weight,
                            patience=cfg.patience, compile=cfg.compile,
                            train_target=target if cfg.rtg_input == "honest" else None)
    history: list[dict] = []
    start = 1
    if ckpt:
        unwrap(model).load_state_dict(ckpt["model_state_dict"])
        trainer.load_state_dict(ckpt)
        restore_rng_state(ckpt["rng_state"])
        start = int(ckpt["epoch"]) + 1
        if (out_dir / "metrics.jsonl").exists():
            lines = (out_dir / "metrics.jsonl").read_bytes().splitlines()
            history = [h for h in map(orjson.loads, filter(None, lines)) if h["epoch"] < start]
        log.info("resumed from %s at epoch %d", last_path, start)
    train_config = asdict(cfg) | {"world_size": world, "warmup_steps": warmup, "total_steps": total,
                                  "epochs": epochs,
                                  "processed": str(cfg.processed), "data_size_warnings": size_warnings}
    best_epoch = max((h["epoch"] for h in history if h.get("best")), default=None)
    bar = tqdm(range(start, epochs + 1), desc="train", unit="epoch", disable=not is_main or None)
    epoch = start - 1
    for epoch in bar:
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        try:
            tr = trainer.train_epoch(train_loader, epoch=epoch, progress=is_main)
        except TrainingDiverged as e:
            raise TrainError(f"training diverged: {e}") from None
        val = trainer.validate(val_loader, target_rtg=target)
        improved = trainer.update_early_stopping(val)
        best_epoch = epoch if improved else best_epoch
        rec = {"epoch": epoch, "train": tr, "val": val, "best": improved,
               "time_s": round(time.perf_counter() - t0, 3)}
        history.append(rec)
        if is_main:
            payload = {"model_state_dict": unwrap(model).state_dict(), "model_config": model_config,
                       **trainer.state_dict(), "rng_state": capture_rng_state(), "epoch": epoch,
                       "metrics": {"train": tr, "val": val}, "pipeline_meta": meta,
                       "train_config": train_config, "honest_target": target, "class_weights": trainer.class_weights.tolist(),
                       "actions": list(ACTIONS), "history": [
                           {"epoch": h["epoch"], "val_macro_f1": h["val"]["macro_f1"],
                            "val_majority_macro_f1": h["val"]["baseline_macro_f1"]} for h in history]}
            save_checkpoint(last_path, payload)
            if improved:
                save_checkpoint(out_dir / "best_model.pt", payload)
            atomic_write(out_dir / "metrics.jsonl", b"".join(orjson.dumps(h) + b"\n" for h in history))
            log.info("epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.3f val_macro_f1 %.3f "
                     "(majority %.3f) rtg_mae %.4f lr %.2e %.1fs%s", epoch, epochs, tr["loss"],
                     val["loss"], val["accuracy"], val["macro_f1"], val["baseline_macro_f1"],
                     val["rtg_mae"], tr["lr"], rec["time_s"], " *best" if improved else "")
        if trainer.should_stop:
            log.info("early stop: val macro_f1 did not improve for %d epochs", cfg.patience)
            break
        if cfg.stop_after_epoch is not None and epoch >= cfg.stop_after_epoch:
            log.info("stopping after epoch %d (--stop_after_epoch); continue with --resume", epoch)
            break
    if is_main and history:
        plot_curves(history, out_dir / "learning_curve.png")
    best = trainer.best_metric
    return {"best_epoch": best_epoch, "best_macro_f1": best, "epochs_run": epoch,
            "last": str(last_path), "best": str(out_dir / "best_model.pt"), "world_size": world}


def _parse_optional(kind):
    """argparse type: 'none' -> None, else kind(value)."""
    return lambda s: None if s.lower() == "none" else kind(s)


def main(argv: list[str] | None = None) -> None:
    """CLI: flags 1:1 with TrainConfig; user errors -> one line on stderr, exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    optional_ints = {f.name: {"type": _parse_optional(int)} for f in fields(TrainConfig)
                     if f.type.startswith("int | None")}
    add_config_args(parser, TrainConfig, " (default %(default)s)",
                    device={"choices": ("cuda", "cpu", "auto")},
                    rtg_input={"choices": ("realised", "honest")}, **optional_ints)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        summary = run(TrainConfig(**vars(args)))
    except (UserError, FileNotFoundError) as e:  # TrainError and the stages' user errors
        print(f"train_model: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    log.info("done: best epoch %s val macro_f1 %.4f -> %s", summary["best_epoch"],
             summary["best_macro_f1"], summary["best"])


if __name__ == "__main__":
    main()
