"""The twin report's inputs: the checkpoint, the processed rows, the twin's predictions, the demo
truth and the raw quotes and fills for the backtest.

Promise: `load_checkpoint(path, device)` returns (model in eval mode, checkpoint dict) or raises
EvaluationError with one line naming the file; `trained_on`/`resolve_meta` say which parquet and
pipeline metadata a checkpoint was trained with; `load_rows` reads the parquet and checks its
state columns against the model's; `predict_split` scores every row of a split once per
conditioning; `load_truth` and `load_market_data` read the demo truth and the raw price files.

No-leakage rule: `predict_split` conditions on the honest target (target minus the returns
observed before each bar) for a float target; None is the labelled leaky reference (the realised
RTG). Windows tile the split (stride = window), so every row is scored once.

Run alone: no CLI; `python evaluate.py` calls these.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from common import UserError, resolve_device
from sequence_preparation import (
    PROCESSED_PATH,
    RTG_SCALE,
    ProcessedDataError,
    honest_rtg,
    read_meta,
    read_processed,
)

log = logging.getLogger("evaluate")


class EvaluationError(UserError):
    """A user-fixable problem (missing file, bad flag, empty split); main() prints it as one line."""


# ---------------------------------------------------------------- loading
def load_checkpoint(path: str | Path, device: str):
    """(model in eval mode on `device`, checkpoint dict) from a train_model.py checkpoint."""
    import torch

    from model_architecture import TraderDecisionTransformer

    if not Path(path).exists():
        raise EvaluationError(f"model file {path} not found: run `python train_model.py` first")
    try:
        ckpt = torch.load(path, map_location="cpu")  # weights_only default: plain types only
    except Exception as e:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise EvaluationError(f"{path} cannot be read as a checkpoint ({type(e).__name__}): "
                              "pass the best_model.pt train_model.py wrote") from None
    if not isinstance(ckpt, dict):
        raise EvaluationError(f"{path} is not a train_model.py checkpoint (not a dict)")
    for key in ("model_state_dict", "model_config"):
        if key not in ckpt:
            raise EvaluationError(f"{path} has no '{key}': not a train_model.py checkpoint")
    try:
        model = TraderDecisionTransformer.from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model_state_dict"])
    except (RuntimeError, ValueError, TypeError) as e:  # weights from another model version
        first = str(e).strip().splitlines()[-1].strip()
        raise EvaluationError(f"{path} does not match the current model ({first}): retrain with "
                              "`python train_model.py`") from None
    return model.to(device).eval(), ckpt


def trained_on(ckpt: dict) -> str:
    """The processed parquet a checkpoint was trained on (its train_config; else the default)."""
    return str((ckpt.get("train_config") or {}).get("processed") or PROCESSED_PATH)


def resolve_meta(ckpt: dict, processed: str | Path) -> dict:
    """The pipeline metadata the model was trained with (checkpoint first, then the parquet's
    own meta file)."""
    meta = ckpt.get("pipeline_meta") or {}
    if not meta.get("state_features"):
        try:
            meta = read_meta(processed)
        except ProcessedDataError as e:
            raise EvaluationError(f"no pipeline_meta in the checkpoint, and {e}") from None
    return meta


def load_rows(processed: str | Path, meta: dict) -> pd.DataFrame:
    """The processed frame, checked against its own meta and the checkpoint's: the state
    columns must be the model's (else one-line EvaluationError); another config hash with the
    same columns is logged (the model is scored on data built differently from its training)."""
    try:
        df, own = read_processed(processed)
    except ProcessedDataError as e:
        raise EvaluationError(str(e)) from None
    if list(own["state_features"]) != list(meta["state_features"]):
        raise EvaluationError(f"{processed} has state columns {own['state_features']} but the model was "
                              f"trained on {meta['state_features']}: pass --processed with the "
                              "parquet it was trained on")
    if meta.get("config_hash") and own.get("config_hash") != meta.get("config_hash"):
        log.warning("%s was built with config %s, the model's training data with %s", processed,
                    own.get("config_hash"), meta.get("config_hash"))
    return df


# ---------------------------------------------------------------- twin predictions
def predict_split(model, df: pd.DataFrame, split: str, window: int, state_columns: list[str],
                  targets: list[float | None], device: str, batch_size: int) -> dict:
    """Score every row of `split` once for each conditioning in `targets`.

    A float target means honest conditioning (`honest_rtg`); None means the realised RTG (the
    leaky reference). Returns {"rows": (N,) parquet row indices, "proba": (C, N, 5),
    "rtg_pred": (C, N) in fraction units, "rtg_input": (C, N), "rtg_next": (N,) the realised
    RTG_{t+1} inside the window (0 at its last bar), "rtg_realised": (N,) RTG_t} with C = len(targets)."""
    import torch
    from torch.utils.data import DataLoader

    from sequence_preparation import TraderSequenceDataset

    ds = TraderSequenceDataset(df, split, window, window, state_columns)
    if len(ds) == 0:
        raise EvaluationError(f"split '{split}' has no rows in the processed parquet")
    rows, rtg_next, rtg_real = [], [], []
    proba = [[] for _ in targets]
    rtg_pred = [[] for _ in targets]
    rtg_in = [[] for _ in targets]
    with torch.inference_mode():
        for b in DataLoader(ds, batch_size=batch_size, shuffle=False):
            mask = b["mask"].numpy()  # (B, T)
            rets = b["returns"].numpy().astype(np.float64)
            realised = b["rtg"].numpy().astype(np.float64) / RTG_SCALE
            rows.append(b["row_index"].numpy()[mask])
            rtg_next.append((realised - rets)[mask])
            rtg_real.append(realised[mask])
            states, prev = b["states"].to(device), b["prev_actions"].to(device)
            for c, target in enumerate(targets):
                rtg = realised if target is None else honest_rtg(rets, target)
                logits, pred = model(torch.as_tensor(rtg * RTG_SCALE, dtype=torch.float32,
                                                     device=device), states, prev)
                proba[c].append(torch.softmax(logits.float(), -1).cpu().numpy()[mask])
                rtg_pred[c].append(pred.float().cpu().numpy()[mask] / RTG_SCALE)
                rtg_in[c].append(rtg[mask])
    return {
        "rows": np.concatenate(rows), "rtg_next": np.concatenate(rtg_next),
        "rtg_realised": np.concatenate(rtg_real),
        "proba": np.stack([np.concatenate(p) for p in proba]),
        "rtg_pred": np.stack([np.concatenate(p) for p in rtg_pred]),
        "rtg_input": np.stack([np.concatenate(p) for p in rtg_in]),
    }


def load_truth(truth_dir: str | Path, addresses) -> pd.DataFrame | None:
    """Concatenated demo truth for the addresses that have `{truth_dir}/{address}.parquet`."""
    import pyarrow.parquet as pq

    files = [Path(truth_dir) / f"{a}.parquet" for a in sorted(set(addresses))]
    frames = [pq.read_table(f).to_pandas() for f in files if f.exists()]
    return pd.concat(frames, ignore_index=True) if frames else None


def load_market_data(data_dir: str | None, addresses) -> tuple[pd.DataFrame | None,
                                                              pd.DataFrame | None, str | None]:
    """(quotes, fills, None) of `addresses` from the raw price files under data_dir
    (data_ingestion.load_events + quotes_and_fills), or (None, fills or None, why not)."""
    import data_ingestion

    if not data_dir or not Path(data_dir).is_dir():
        why = f"data_dir {data_dir} not found" if data_dir else "no data_dir in pipeline_meta"
        return None, None, f"{why}: pass --data_dir with the raw price files"
    try:
        events = data_ingestion.load_events(data_ingestion.IngestionConfig(data_dir=data_dir))[0]
    except data_ingestion.IngestionError as e:
        return None, None, f"{data_dir}: {e}"
    mine = events["address"].astype(str).isin(set(map(str, addresses))).to_numpy()
    quotes, fills = data_ingestion.quotes_and_fills(events[mine])
    if quotes.empty:
        return None, fills, f"the price files under {data_dir} carry no price_change quotes"
    return quotes, fills, None


def _device(name: str) -> str:
    """common.resolve_device, its one-line error as an EvaluationError."""
    try:
        return resolve_device(name)
    except UserError as e:
        raise EvaluationError(str(e)) from None
