# ChimeraX-GaussianEM: set-up, tests, demo, benchmarks.
# Every target sets up .venv first (Python 3.11, pinned; see tools/setup_env.sh).

PY      := .venv/bin/python
DEMO    ?= demo_out
BENCH   ?= bench_out

.PHONY: setup test demo bench ablation bundle validate clean robustness gpu-check

setup: .venv/.stamp

.venv/.stamp: tools/setup_env.sh tools/install_chimerax.py tools/chimerax_mend.py tools/chimerax/nogui.py \
              requirements/engine.txt engine/pyproject.toml
	bash tools/setup_env.sh

test: setup
	bash benchmarks/setup_robustness.sh
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider

# simulated data -> train -> analyze -> results opened in headless ChimeraX, images saved
demo: setup
	bash tools/demo.sh $(DEMO)

# engine benchmark, training profile, then GaussianEM vs cryoDRGN side by side on the
# standard set (10,000 particles, box 64) and the box-128 variant. On a 2-core CPU the
# two cryoDRGN trainings take about 1.5 h and 0.5 h; COMPARE="..." / COMPARE128="..."
# replace the arguments (see docs/benchmarks.md), e.g. COMPARE128="--box128 --device cuda"
bench: setup
	mkdir -p $(BENCH) benchmarks/results
	$(PY) -m gaussianem.cli.main bench -o benchmarks/results/engine_$$(hostname)_cpu.json
	$(PY) benchmarks/profile_train.py --outdir $(BENCH)/profile --threads 1
	$(PY) benchmarks/particle_cache.py --workdir $(BENCH)/cache $(or $(CACHE_SIZES),--sizes 10000,100000)
	$(PY) benchmarks/reconstruct_maps.py speed --workdir $(BENCH)/reconstruct --threads 1 \
	    -o benchmarks/results/reconstruct_speed_$$(hostname)_cpu.json
	bash benchmarks/setup_cryodrgn.sh
	$(PY) benchmarks/compare_cryodrgn.py --workdir $(BENCH)/compare \
	    $(or $(COMPARE),-n 10000 --epochs 10 --ours-long-epochs 20 --threads 1 --cdrgn-dim 256)
	$(PY) benchmarks/compare_cryodrgn.py --workdir $(BENCH)/compare \
	    $(or $(COMPARE128),--box128 -n 1500 --epochs 5 --ours-long-epochs 10 --threads 1 --cdrgn-dim 256)

# which training choices make the motion appear early (docs/validation.md)
ablation: setup
	$(PY) benchmarks/ablation.py --outdir $(BENCH)/ablation

validate: setup
	$(PY) benchmarks/validate.py --outdir validate_out

bundle: setup
	$(PY) tools/build_bundle.py

clean:
	rm -rf $(DEMO) $(BENCH) validate_out dist build .cache

# the default training on realistic simulated sets (real structures from MDAnalysisTests),
# one axis changed at a time (docs in benchmarks/robustness.py); about 3 hours on 2 cores (the default training has a consensus round).
# ROBUST="..." adds arguments, e.g. ROBUST="--quick" or ROBUST="--cells base,hinge --reuse"
robustness: setup
	bash benchmarks/setup_robustness.sh
	$(PY) benchmarks/robustness.py --outdir $(BENCH)/robustness $(ROBUST)

# everything the engine does on an NVIDIA GPU in one run, under 8 minutes on an H100
# (tools/gpu_check.py): installs the engine into the node's own Python (whose torch has
# CUDA) if needed, reports the environment, runs the CUDA tests, a box-128 --amp training
# with resume and 'gaussianem bench --device cuda --amp'; report in $(GPU_OUT)/report.json.
# Without a GPU it runs the CPU checks and lists the GPU steps as skipped.
# GPU_PY: that Python (default python3 when it has torch, else .venv); GPU_CHECK: options.
GPU_OUT ?= gpu_check_out
GPU_PY  ?= $(shell if python3 -c "import torch" >/dev/null 2>&1 || [ ! -x $(PY) ]; then echo python3; else echo $(PY); fi)
gpu-check:
	$(GPU_PY) tools/gpu_check.py --out $(GPU_OUT) $(GPU_CHECK)

# a one-node SLURM cluster on this machine (Debian/Ubuntu, root): installs slurmctld, slurmd,
# slurm-client and munge, writes /etc/slurm/slurm.conf, starts the daemons (docs/cluster.md).
# tests/engine/cluster runs it itself; 'bash tools/setup_slurm.sh --stop' stops the daemons.
.PHONY: slurm
slurm:
	bash tools/setup_slurm.sh
