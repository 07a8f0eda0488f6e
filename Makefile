# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# GPU machines: TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126'
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

# DeepSpeed JIT-compiles its C++ ops once; keep them in an ignored folder so reruns reuse them.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1
# torch builds extensions with the first ninja on PATH; the venv's and the system's disagree about what is
# stale, and alternating them rebuilds DeepSpeed's ops every time.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv test test-fast lint demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile requirements/textattack.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: an unpinned torch (or deepspeed first) would pull a multi-GB CUDA build.
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	# Both only for their files: Megatron's reader (compatibility tests) and gensim's shipped data.
	$(PY) -m pip install -q --no-deps megatron-core==0.16.1 gensim==4.4.0
	# TextAttack (DeepWordBug, `python -m finetune text-attack`): its flair dependency pins transformers<5, so
	# it and the packages its imports need go in without dependency resolution (finetune/textattack_env.py).
	$(PY) -m pip install -q --no-deps -r requirements/textattack.txt
	touch $(STAMP)

# pytest workers for the second half of `make test` (2 = this project's CI machine: 2 cores).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VENV)/bin/ruff check .
	# Two processes: data_tools' tests start process pools and a Ray cluster inside the test process; the
	# pretrain tests then run DeepSpeed in-process, and nothing of the first may leak into the second.
	# DeepSpeed's CPU ops compile (~2.5 min on 2 cores, once per TORCH_EXTENSIONS_DIR) beside the data_tools
	# tests, which never use them, instead of inside the DeepSpeed tests with workers waiting on the build lock.
	mkdir -p .cache; $(PY) -m pretrain build-ops > .cache/build-ops.log 2>&1 & ops=$$!; \
	$(PY) -m pytest -q --durations=10 tests/data_tools; rc=$$?; \
	wait $$ops || { echo "python -m pretrain build-ops failed:"; tail -n 20 .cache/build-ops.log; exit 1; }; \
	exit $$rc
	# Most of the rest waits on subprocess start-up (torch, DeepSpeed and transformers imports: ~10 s of one
	# core each), so two workers cut the wall time by ~1.4x on 2 cores. One file per worker (--dist loadfile):
	# a module's expensive fixtures (a whole demo run, a replication study) are built once.
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile --ignore=tests/data_tools

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(PY) -m demo

clean:
	rm -rf runs demo_out .cache/torch_extensions
