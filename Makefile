# dynvid — the two commands of the README:
#   make run    install if needed, start a local Ray head if none, submit the main job
#   make test   install if needed, run the test suite
#   make gpu-check  every job, speed table and the engine on CUDA (a CPU dry run without CUDA)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dynvid-installed
PYTEST_ARGS ?=

.PHONY: run test gpu-check install ray-stop clean

install: $(STAMP)

# The matched pair first (torchvision's C++ operators are built against one torch release):
# torch 2.14.1 + torchvision 0.29.1, then the project, whose ranges keep them.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

run: $(STAMP)
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash infra/local/run_main_job.sh $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

gpu-check: $(STAMP)
	$(PY) jobs/gpu_check.py $(ARGS)

ray-stop:
	-$(VENV)/bin/ray stop

clean:
	rm -rf runs .pytest_cache build *.egg-info platform/*.egg-info
