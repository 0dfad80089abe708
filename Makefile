# ChimeraX-GaussianEM: set-up, tests, demo, benchmarks.
# Every target sets up .venv first (Python 3.11, pinned; see tools/setup_env.sh).

PY      := .venv/bin/python
DEMO    ?= demo_out
BENCH   ?= bench_out

.PHONY: setup test demo bench bundle validate clean

setup: .venv/.stamp

.venv/.stamp: tools/setup_env.sh tools/install_chimerax.py requirements/engine.txt engine/pyproject.toml
	bash tools/setup_env.sh

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider

# simulated data -> train -> analyze -> results opened in headless ChimeraX, images saved
demo: setup
	bash tools/demo.sh $(DEMO)

# engine benchmark, training profile, then GaussianEM vs cryoDRGN side by side
# (COMPARE="..." replaces the comparison's size; see docs/benchmarks.md)
bench: setup
	mkdir -p $(BENCH) benchmarks/results
	$(PY) -m gaussianem.bench -o benchmarks/results/engine_$$(hostname)_cpu.json
	$(PY) benchmarks/profile_train.py --outdir $(BENCH)/profile --threads 1
	bash benchmarks/setup_cryodrgn.sh
	$(PY) benchmarks/compare_cryodrgn.py --workdir $(BENCH)/compare \
	    $(or $(COMPARE),-n 3000 --epochs 10 --threads 1 --cdrgn-dim 256)

validate: setup
	$(PY) benchmarks/validate.py --outdir validate_out

bundle: setup
	$(PY) tools/build_bundle.py

clean:
	rm -rf $(DEMO) $(BENCH) validate_out dist build .cache
