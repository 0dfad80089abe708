"""Shared fixtures: a tiny simulated dataset and a tiny trained result (session scope).

Both are made through the engine's real entry points (the simulator and ``train``), so
every test downstream of them exercises the real file formats.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

SLURM_SETUP = Path(__file__).resolve().parents[1] / "tools" / "setup_slurm.sh"
SETUP_TIMEOUT = 600           # apt-get install (+ update) on a slow mirror


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory):
    """256 particles, box 32, 3 A/pixel, from the built-in two-domain test protein."""
    from gaussianem.sim.simulate import SimulationSpec, simulate_from_model
    from gaussianem.io.models import write_model
    from gaussianem.sim.testprotein import build_test_model
    d = tmp_path_factory.mktemp("sim")
    write_model(str(d / "input_model.pdb"), build_test_model())
    spec = SimulationSpec(n=256, box=32, apix=3.0, snr=1.0, seed=1, states=10, eval_bins=3)
    simulate_from_model(str(d / "input_model.pdb"), str(d), spec)
    return d


@pytest.fixture(scope="session")
def tiny_result(tiny_sim, tmp_path_factory):
    """A result trained for 2 epochs on ``tiny_sim`` with a split latent (2 + 1)."""
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(particles=str(tiny_sim / "particles.star"), consensus=str(tiny_sim / "consensus.mrc"),
                      outdir=str(out), model=str(tiny_sim / "model.pdb"), epochs=2, batch_size=32,
                      zdim_conf=2, zdim_comp=1, fit_steps=60, device="cpu", lowpass_epochs=1,
                      log_every=2)
    train(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_trained(tiny_sim, tmp_path_factory):
    """A result trained on ``tiny_sim`` long enough (8 epochs) for the hinge to be decoded."""
    from gaussianem.train.config import TrainConfig
    from gaussianem.train.loop import train
    out = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(particles=str(tiny_sim / "particles.star"), consensus=str(tiny_sim / "consensus.mrc"),
                      outdir=str(out), model=str(tiny_sim / "model.pdb"), epochs=8, batch_size=32,
                      zdim_conf=2, zdim_comp=1, fit_steps=60, device="cpu", lowpass_epochs=1, log_every=100))
    return out


@pytest.fixture(scope="session")
def noise_run(tiny_result, tmp_path_factory):
    """A copy of ``tiny_result`` whose particle file points at pure-noise images (same
    poses, CTFs and stack layout): a run whose particles hold no signal."""
    import json
    import shutil

    import mrcfile
    import numpy as np
    import starfile
    d = tmp_path_factory.mktemp("noise")
    run = d / "run"
    shutil.copytree(tiny_result, run, ignore=shutil.ignore_patterns("checkpoints", "analysis"))
    cfg = json.loads((run / "config.json").read_text())
    src = cfg["train"]["particles"]
    star = starfile.read(src, always_dict=True)
    name = str(star["particles"]["rlnImageName"].iloc[0]).split("@")[1]
    with mrcfile.open(os.path.join(os.path.dirname(src), name), permissive=True) as m:
        shape, voxel = m.data.shape, m.voxel_size
    with mrcfile.new(d / "noise.mrcs", overwrite=True) as m:
        m.set_data(np.random.default_rng(0).normal(size=shape).astype(np.float32))
        m.voxel_size = voxel
    parts = star["particles"].copy()
    parts["rlnImageName"] = [f"{n.split('@')[0]}@{d / 'noise.mrcs'}" for n in parts["rlnImageName"]]
    starfile.write({**star, "particles": parts}, d / "noise.star")
    cfg["train"]["particles"] = str(d / "noise.star")
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def _slurm_running() -> bool:
    """Whether a SLURM cluster answers on this machine."""
    import shutil
    if not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


@pytest.fixture(scope="session")
def slurm_up():
    """A real one-node SLURM on this machine (tools/setup_slurm.sh), or a skip with the reason."""
    if os.environ.get("GAUSSIANEM_TEST_SLURM", "1") == "0":
        pytest.skip("GAUSSIANEM_TEST_SLURM=0")
    was_running = _slurm_running()
    # output to a file, not a pipe: the daemons it starts must not hold our pipe open;
    # its own session, so that a time-out ends apt-get too
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(["bash", str(SLURM_SETUP)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=SETUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.skip(f"tools/setup_slurm.sh did not finish within {SETUP_TIMEOUT} s")
        log.seek(0)
        text = log.read().strip()
    if proc.returncode != 0:
        pytest.skip(f"no SLURM for these tests: {text.splitlines()[-1] if text else 'setup_slurm.sh failed'}")
    yield text
    # daemons this session started are stopped when it ends (a cluster that was up before,
    # someone else's or started with 'make slurm', is left running)
    if not was_running and os.geteuid() == 0:
        subprocess.run(["bash", str(SLURM_SETUP), "--stop"], capture_output=True, timeout=120)
