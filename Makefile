# Two entry points (see README "Quick start"):
#   make demo  - install the runtime deps, then demo data -> pipeline -> train -> evaluate
#   make test  - install the dev deps, then ruff + the full pytest suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Demo-sized defaults (the CLIs keep the seed's defaults, e.g. 50 epochs).
DEMO_DIR ?= downloads/demo_trades
DEMO_DAYS ?= 120
DEMO_STEPS ?= 256

.PHONY: demo test install install-dev bench clean-demo

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.stamp-runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.stamp-dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.stamp-runtime

install: $(VENV)/.stamp-runtime
install-dev: $(VENV)/.stamp-dev

demo: $(VENV)/.stamp-runtime
	$(BIN)/python demo_data.py --out $(DEMO_DIR) --days $(DEMO_DAYS) --traders 1 --strategy momentum --seed 0
	$(BIN)/python pipeline.py --data_dir $(DEMO_DIR) --output data/processed_trader_data.parquet
	$(BIN)/python train_model.py --data_dir $(DEMO_DIR) --output_dir models --steps $(DEMO_STEPS) --batch_size 32 --device cpu
	$(BIN)/python evaluate.py --model models/best_model.pt --out reports

test: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.stamp-dev
	$(BIN)/python bench/bench_ingestion.py
	$(BIN)/python bench/bench_features.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_twin_zoo.py --traders 3 --seed 0

clean-demo:
	rm -rf $(DEMO_DIR) data/demo_truth data/*.parquet data/*.json models/*.pt models/*.jsonl models/*.png reports/*
