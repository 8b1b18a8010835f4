# gnnsim: `make demo` (set up, generate, train, roll out, render) and `make test` (set up, run the tests).
PYTHON ?= python3
VENV ?= .venv
# A GPU user brings their own torch: `make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`
# or installs it into $(VENV) first and runs `make setup TORCH_SPEC=`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
# The tests run several processes at once (DDP, parallel seeds): there, idle OpenMP threads yield instead of
# spinning. Elsewhere OpenMP's default applies: on a quiet 2-core machine PASSIVE made demo training 1.7x slower
# (5.4 vs 9.1 steps/s); on a machine shared with other jobs, `make demo OMP_WAIT_POLICY=PASSIVE` is the robust pick.
test test-all: export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test test-all test-gpu demo eta-demo bench clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(strip $(TORCH_SPEC)),$(BIN)/pip install -q $(TORCH_SPEC))
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu"

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

demo: setup
	$(BIN)/gnnsim-data data=cylinder_demo
	$(BIN)/gnnsim-train experiment=demo
	$(BIN)/gnnsim-rollout experiment=demo
	$(BIN)/gnnsim-render experiment=demo
	@echo "demo done: datasets/cylinder_demo, runs/demo, rollouts/demo (test_metrics.json, test_traj0.gif, test_rmse.png)"

eta-demo: setup
	$(BIN)/gnnsim-data data=traffic_demo
	$(BIN)/gnnsim-train experiment=traffic_demo
	$(BIN)/gnnsim-eta experiment=traffic_demo
	@echo "eta-demo done: datasets/traffic_demo, runs/traffic_demo, rollouts/eta (report.json, report.md, report.png)"

clean-demo:
	rm -rf datasets/cylinder_demo runs/demo rollouts/demo
