# The two commands of the README:  make run  (the demo workflow)  and  make test  (the test suite).
# Both create .venv and install the pinned requirements when they are missing or changed: the CUDA
# build of TensorFlow (requirements-gpu.txt) where an NVIDIA GPU answers (nvidia-smi -L), the CPU
# build (requirements.txt's tensorflow_cpu) elsewhere. GPU=1 or GPU=0 forces the choice.

PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
REQ_HASH := $(shell cat requirements.txt requirements-gpu.txt | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)$(if $(filter 1,$(GPU)),-gpu,)
BENCH_STAMP := $(VENV)/.bench-installed-$(shell sha1sum benchmarks/requirements.txt | cut -c1-12)
SNAKEMAKE := $(VENV)/bin/snakemake

.PHONY: run test test-fast lint bench dag report clean install device gpu-check

$(STAMP): requirements.txt requirements-gpu.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
ifeq ($(GPU),1)
	@echo "NVIDIA GPU found (nvidia-smi -L): installing the CUDA build of TensorFlow (requirements-gpu.txt)"
	grep -v '^tensorflow[_-]cpu==' requirements.txt > $(VENV)/requirements-without-tensorflow-cpu.txt
	$(VENV)/bin/pip uninstall --quiet --yes tensorflow_cpu 2>/dev/null || true
	$(VENV)/bin/pip install --quiet -r $(VENV)/requirements-without-tensorflow-cpu.txt -r requirements-gpu.txt
else
	$(VENV)/bin/pip install --quiet -r requirements.txt
endif
	rm -f $(VENV)/.installed-*
	touch $@
	$(VENV)/bin/python -c "import sys; sys.path.insert(0, 'workflow/scripts'); from lokiml.runtime import main; main([])" || true

## install: the venv only (CUDA TensorFlow where nvidia-smi finds a GPU); device: what it sees
install: $(STAMP)

device: $(STAMP)
	cd workflow/scripts && ../../$(VENV)/bin/python -m lokiml.runtime

## run: the whole workflow on the built-in demo dataset, on $(CORES) cores, then its report
run: $(STAMP)
	$(SNAKEMAKE) --workflow-profile profiles/workstation --cores $(CORES) --configfile config/demo.yaml
	$(SNAKEMAKE) --workflow-profile profiles/workstation --cores $(CORES) --configfile config/demo.yaml --report results/report.html --quiet all
	@echo ""
	@echo "Done. The report: $(CURDIR)/results/report.html (open it in a web browser)."
	@echo "Start with its 1. Leaderboard and 2. Data pages; logs are in logs/, results in results/."

## test: the whole test suite (unit, workflow, the benchmarks' smoke runs, SLURM when available)
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs --durations=30 tests

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs tests/unit

lint: $(STAMP)
	$(SNAKEMAKE) --lint --configfile config/demo.yaml

## dag: the picture of the rule graph used in the README
dag: $(STAMP)
	$(SNAKEMAKE) --rulegraph --configfile config/demo.yaml | dot -Tsvg > docs/rulegraph.svg

## report: the HTML report of the demo run (after make run)
report: $(STAMP)
	$(SNAKEMAKE) --workflow-profile profiles/workstation --cores $(CORES) --configfile config/demo.yaml --report results/report.html
	@echo "The report: $(CURDIR)/results/report.html"

## bench: every benchmarks/bench_*.py in full (hours; after make run, whose results/data bench_time_to_accuracy
## trains on; with the extra packages of benchmarks/requirements.txt).
## make test runs each of them in its --smoke mode (seconds).
$(BENCH_STAMP): benchmarks/requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet -r benchmarks/requirements.txt
	rm -f $(VENV)/.bench-installed-*
	touch $@

bench: $(STAMP) $(BENCH_STAMP)
	for b in benchmarks/bench_*.py; do \
	  case $$b in *time_to_accuracy*) args="--data results/data";; *) args="";; esac; \
	  $(VENV)/bin/python $$b $$args || exit 1; done

clean:
	rm -rf results logs .snakemake benchmarks/out
