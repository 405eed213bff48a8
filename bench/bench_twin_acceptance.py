"""Issue 8 acceptance bench: the momentum demo at the default settings, end to end.

Runs demo_data (30 days, 1 momentum trader, seed 0) -> pipeline (defaults) -> train_model
(defaults, unless flags override) -> evaluate, in a work folder, and prints the twin's test
macro-F1 against the oracle's and the baselines', with PASS/FAIL for the acceptance:
twin macro-F1 >= 0.8 x oracle macro-F1 and > the majority baseline. Minutes on CPU (50 epochs
at the seed's model size), so it is a bench, not a test.

Run: `python bench/bench_twin_acceptance.py [--workdir /tmp/twin_bench] [--device auto]
[--epochs 50] [--rtg_weight 0.1]`
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import demo_data  # noqa: E402
import evaluate  # noqa: E402
import pipeline  # noqa: E402
import train_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/twin_bench")
    p.add_argument("--days", type=int, default=demo_data.DemoConfig.days)
    p.add_argument("--strategy", default="momentum")
    p.add_argument("--device", default=train_model.TrainConfig.device)
    p.add_argument("--epochs", type=int, default=train_model.TrainConfig.epochs)
    p.add_argument("--rtg_weight", type=float, default=train_model.TrainConfig.rtg_weight)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    w = Path(a.workdir)
    t0 = time.perf_counter()
    demo_data.run(demo_data.DemoConfig(out=str(w / "merged_trades"), days=a.days, strategy=a.strategy,
                                       truth_dir=str(w / "demo_truth")))
    processed = w / "data" / "processed_trader_data.parquet"
    pipeline.run(pipeline.PipelineConfig(data_dir=str(w / "merged_trades"), output=str(processed),
                                         force=True))
    t1 = time.perf_counter()
    train_model.run(train_model.TrainConfig(data_dir=str(w / "merged_trades"), processed=str(processed),
                                            output_dir=str(w / "models"), device=a.device,
                                            epochs=a.epochs, rtg_weight=a.rtg_weight))
    t2 = time.perf_counter()
    h = evaluate.run(evaluate.EvalConfig(model=str(w / "models" / "best_model.pt"),
                                         processed=str(processed), out=str(w / "reports"),
                                         truth_dir=str(w / "demo_truth"),
                                         device="cuda" if a.device == "cuda" else "cpu"))
    twin, oracle, majority = h["twin"]["macro_f1"], h["oracle_macro_f1"], h["baselines"]["majority"]
    ok = oracle is not None and twin >= 0.8 * oracle and twin > majority
    print(f"data+pipeline {t1 - t0:.0f}s, training {t2 - t1:.0f}s, evaluate {time.perf_counter() - t2:.0f}s")
    print(f"test macro-F1: twin {twin:.3f}, oracle {oracle}, 0.8 x oracle "
          f"{'n/a' if oracle is None else f'{0.8 * oracle:.3f}'}, baselines "
          + ", ".join(f"{k} {v:.3f}" for k, v in h["baselines"].items()))
    print(f"acceptance: {'PASS' if ok else 'FAIL'} (report {h['report']})")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
