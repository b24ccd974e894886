# tsuite: the two set-up commands (see README.md).
#   make demo   create .venv, install tsuite, fit AR-Net on sunspots, register it, forecast with it
#   make test   install if needed, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: install system-deps demo test test-gpu bench clean

install: $(STAMP)

# espeak-ng (Debian package) synthesises the small speech corpus used by the audio demo and tests.
system-deps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; \
		else echo "tsuite: espeak-ng is missing; install it with: sudo apt-get install espeak-ng" >&2; fi; }

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tsuite fit --config configs/forecasting/arnet_sunspots.yaml \
		--register arnet_sunspots --alias champion --trainer.enable_progress_bar false
	$(BIN)/tsuite forecast --model models:/arnet_sunspots@champion \
		--input statsmodels:sunspots --output outputs/forecasts/sunspots.csv --horizon 12 --no-progress
	@echo
	@echo "Forecasts:        outputs/forecasts/sunspots.csv"
	@echo "MLflow database:  $(CURDIR)/mlflow.db (artifacts in $(CURDIR)/mlruns)"
	@echo "Registered model: models:/arnet_sunspots@champion"
	@echo "Browse the runs:  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db   (then open http://127.0.0.1:5000)"

# CPU tests, then the Triton kernels under the interpreter (TRITON_INTERPRET must be set before triton is imported).
test: $(STAMP)
	$(PYTEST) tests --ignore=tests/kernels -q
	TRITON_INTERPRET=1 $(PYTEST) tests/kernels -q

# On a CUDA machine: the full kernel matrix and the benchmarks.
test-gpu: $(STAMP)
	$(PYTEST) tests/gpu -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.kernels

clean:
	rm -rf outputs mlruns mlflow.db .pytest_cache
