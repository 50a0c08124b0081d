# `make run` runs the whole pipeline on the embedded default; `make test` runs every test.
# Both create (or reuse) .venv at the repo root and install the pinned dependencies.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install lock run rehearse learn test test-fast repro gpu-bundle clean

# From the locks (locks/refresh.py): every package at its locked version, its hash checked; torch's build (CUDA or
# CPU: different files of one version) by version. A pyproject.toml edited since the last `make lock` stops here.
# pip installs uv from its hashed entry, then uv the rest: a cold install took 39 s, against 162 s with pip (README:
# Installs, locked). uv reads UV_INDEX_URL / UV_EXTRA_INDEX_URL, not pip's configuration.
UV := $(VENV)/bin/uv pip install --python $(PY) --quiet
$(STAMP): pyproject.toml locks/cpu.txt locks/uv.txt locks/torch.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) locks/refresh.py --check
	$(PY) -m pip install --quiet --require-hashes --no-deps -r locks/uv.txt
	$(UV) --require-hashes --no-deps -r locks/cpu.txt
	$(UV) -c locks/torch.txt torch torchvision
	$(UV) --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

# Re-resolve locks/cpu.txt, locks/torch.txt and locks/gpu.txt from pyproject.toml (needs the package index).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.8  # pyproject.toml's `lock` extra
	$(PY) locks/refresh.py

run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m flows.pipeline

# The paper profile's code path at tiny scale on CPU: Hub-layout mirrors, 2 training and 2 evaluation
# processes, sharded checkpoints, full tuning and LoRA, the judged benchmarks asked of a stand-in judge on 127.0.0.1
# (satori.evaluation.stand_in_judge). Each profile runs in .runs/<profile>.
rehearse: $(STAMP)
	$(PY) -m satori.data.mirrors --out .rehearsal
	PATH="$(abspath $(VENV))/bin:$$PATH" SATORI_MIRROR="$(abspath .rehearsal)" \
		$(PY) -m satori.evaluation.stand_in_judge --run $(PY) -m flows.pipeline --profile rehearsal
	PATH="$(abspath $(VENV))/bin:$$PATH" SATORI_MIRROR="$(abspath .rehearsal)" $(PY) -m flows.pipeline --profile rehearsal_lora

# The default run (`make run`; DVC reuses it if it is up to date) and its control, the same run with the rewards
# inverted, for 40 steps (.runs/control; only train and what follows run again); then first against last quarter
# of the steps, per reward, and base against trained, for both.
learn: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m flows.pipeline
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m flows.pipeline --name control --set train.reward_control=invert \
		--set train.max_steps=40 --set train.eval_steps=40 --set train.save_steps=40
	$(PY) -m satori.reports.learning . .runs/control

# Two processes (pytest-xdist): the slow tests' pipeline runs go side by side; the tests sharing a run stay in one
# process (tests/conftest.py pytest_xdist_make_scheduler groups them).
test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -n 2

test-fast: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -n 2 -m "not slow"

# The wheels the GPU check needs beyond the GPU machine's packages (benchmarks/gpu_bundle.txt), for CPython 3.12
# manylinux x86_64, in .whl/; prints their total with the tracked tree's. See the README's GPU section.
gpu-bundle: $(STAMP)
	$(PY) -m benchmarks.gpu_bundle

repro: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/dvc repro

clean:
	rm -rf data/raw data/processed data/benchmarks models/base models/trained publish/hub reports/*/ .work mlflow.db mlartifacts .prefect .runs .rehearsal dvc_plots
