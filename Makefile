# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make run    the default grid, params/grid.yaml, ending with the report (creates .venv if missing)
#   (make run-weights: then params/grid-weights.yaml, + WiSE-FT and soups, report in outputs/report-weights/)
#   make test   pytest for lib/ and nbval for every notebook (same set-up)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
GRID   ?= params/grid.yaml
# jobs of the grid at once (make run WORKERS=4: one per GPU, or a share of the CPU cores each)
WORKERS ?= 1
# pytest processes of `make test` (pytest-xdist): auto = one per core
TEST_WORKERS ?= auto
# where the smoke-profile notebooks of `make test` write (kept apart from real runs)
SMOKE_OUTPUTS ?= $(CURDIR)/outputs/ci-smoke

.PHONY: venv run run-weights grid grid-smoke test test-lib test-notebooks lab lab-check clean-smoke

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

run: venv
	$(PY) -m lib.grid $(GRID) --workers $(WORKERS)

run-weights: run
	$(PY) -m lib.grid params/grid-weights.yaml --workers $(WORKERS)

grid: run

grid-smoke: venv
	$(PY) -m lib.grid params/grid-smoke.yaml

test: test-lib test-notebooks

test-lib: venv
	HBT_PROFILE=smoke $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal tests

test-notebooks: venv
	rm -rf $(SMOKE_OUTPUTS)
	HBT_PROFILE=smoke HBT_OUTPUTS=$(SMOKE_OUTPUTS) $(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

# JupyterLab on notebooks/ with the project's kernel (the venv's python3; as root, --allow-root)
lab: venv
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

# maintainers: an executed notebook of outputs/ (NOTEBOOK=..., default the newest) rendered in
# JupyterLab and as HTML by headless Chromium (apt-get install chromium), tables and figures counted
lab-check: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) scripts/check_lab_render.py $(NOTEBOOK)

clean-smoke:
	rm -rf $(SMOKE_OUTPUTS)
