# Every target sets up what it needs: on a fresh machine with Python 3.11, `make serve` creates
# .venv and installs the serving extra only (no torch); `make install` and `make test` install
# everything, torch (CPU build, pinned) before the rest.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
# Optional extra index for torch (e.g. PyTorch's CPU-only wheel index on a machine without GPUs).
TORCH_INDEX ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve

.PHONY: install serve test test-fast test-container lint models example-data bench bench-serving bench-quality bench-cost bench-reliability bench-training bench-streams \
	clean bench-batch

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PIP) install --quiet -e '.[serve,log,train,batch,stream,ray,client,dev,bench]'
	touch $(STAMP) $(SERVE_STAMP)

# The serving extra alone: what `make serve` needs on a fresh clone (everything else is optional).
$(SERVE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[serve]'
	touch $(SERVE_STAMP)

# Serves ./models (or AESERVE_MODELS_DIR); every AESERVE_* variable passes through untouched.
serve: $(SERVE_STAMP)
	$(VENV)/bin/aeserve serve --host $(HOST) --port $(PORT)

# Every tier: unit, integration, e2e, and gpu (skips without a GPU). Containers: test-container.
test: install
	$(PY) -m pytest

# The fast tier alone (tests/unit, about half a minute).
test-fast: install
	$(PY) -m pytest -m unit

# The serving image for real (tests/container): docker build, docker run, docker compose, over HTTP.
# Skips when no docker daemon answers; REQUIRE_DOCKER=1 turns that into a failure.
test-container: install
	RUN_CONTAINER_TESTS=1 $(PY) -m pytest tests/container -v -s

# Style, and the import rules between the parts (import-linter contracts in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The example data of the README (scikit-learn's breast-cancer data as CSV), written to build/;
# nothing else changes.
example-data: install
	$(PY) -m aeserve.training.examples.breast_cancer --out build/breast_cancer.csv

# Rebuilds the shipped default model from scikit-learn's breast-cancer data, reproducibly.
models: example-data
	rm -rf models/breast-cancer
	$(VENV)/bin/aeserve train --data build/breast_cancer.csv --label-column malignant \
		--name breast-cancer --seed 0 --quiet --activation sigmoid --hidden 15 \
		--lr 0.01 --batch-size 64 --epochs 500 --patience 20 --min-steps 0 --members 1 --val-fraction 0.2 --score mse_scaled \
		--description "Wisconsin breast cancer (scikit-learn): trained on benign tumours, flags malignant ones. Rebuild: make models."

bench: install
	$(PY) bench/decode.py
	$(MAKE) bench-serving

# Detection quality against PyOD and scikit-learn on ../shared/data/adbench (about an hour on 2
# cores; `python -m bench.quality --help` to run a subset).
bench-quality: install
	$(PY) -m bench.quality

# A soak, the memory of one 60 MB body, and requests lost on SIGTERM under load (a few minutes).
bench-reliability: install
	$(PY) -m bench.reliability

# Training at scale: wall time, rows/s and peak memory for 1M, 5M and 20M synthetic rows x 32
# features (Parquet, written to build/training_scale) and two real sets; hours on 2 cores
# (`python -m bench.training_scale --rows 1000000` for a subset).
bench-training: install
	$(PY) -m bench.training_scale

# In-process cost of the default model against one small network (a minute).
bench-cost: install
	$(PY) -m bench.model_cost

# Needs wrk (Debian/Ubuntu: apt-get install wrk) for a load generator outside the server.
bench-serving: install
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache *.egg-info

# Batch scoring (aeserve score) on ADBench's http data from ../shared/data/adbench: rows/s against
# onnxruntime in process, peak memory on 1M- and 5M-row files. Writes bench/results/batch_scoring.md.
bench-batch: install
	$(PY) bench/batch_scoring.py

# Windowed models on real time series, and the stream runner's speed through Mosquitto
# (deploy/brokers/broker.sh; Debian: apt-get install mosquitto).
bench-streams: install
	$(PY) -m bench.stream_quality
	$(PY) -m bench.stream_runner
