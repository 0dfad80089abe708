"""Particle cache benchmark (``make bench``): build time and read speed of the training
box cache, peak memory against the number of particles.

For each N: a synthetic set of N particles in box 256 (float16 MRC stacks of 10,000
images and a RELION star file; the pixel values are noise, which costs the same to read
and crop as real images), then in a fresh process each: build the cache at box 128
(``gaussianem.io.cache``), read 50 random batches of 64 from the cache, and the same
from the source stacks cropping on the fly. Reports seconds, MB/s, images/s and each
process's peak RSS; memory should stay flat in N and the build be limited by reading.

  .venv/bin/python benchmarks/particle_cache.py --sizes 10000,100000 --workdir bench_out/cache
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

PER_STACK = 10_000


def make_set(folder: str, n: int, box: int = 256, apix: float = 1.0) -> str:
    import mrcfile
    import pandas as pd
    import starfile
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for s in range(0, n, PER_STACK):
        k = min(PER_STACK, n - s)
        path = os.path.join(folder, f"stack_{s // PER_STACK:04d}.mrcs")
        if not os.path.exists(path):
            with mrcfile.new_mmap(path + ".tmp", shape=(k, box, box), mrc_mode=12, overwrite=True) as m:
                m.set_image_stack()
                m.voxel_size = apix
                for i in range(0, k, 1000):
                    j = min(k, i + 1000)
                    m.data[i:j] = rng.standard_normal((j - i, box, box), dtype=np.float32).astype(np.float16)
            os.replace(path + ".tmp", path)
        names += [f"{i + 1:06d}@{os.path.basename(path)}" for i in range(k)]
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [apix],
                           "rlnImageSize": [box], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                           "rlnAmplitudeContrast": [0.1]})
    parts = pd.DataFrame({"rlnImageName": names, "rlnAngleRot": 0.0, "rlnAngleTilt": 0.0, "rlnAnglePsi": 0.0,
                          "rlnOriginXAngst": 0.0, "rlnOriginYAngst": 0.0, "rlnDefocusU": 15000.0,
                          "rlnDefocusV": 15000.0, "rlnDefocusAngle": 0.0, "rlnOpticsGroup": 1})
    star = os.path.join(folder, "particles.star")
    starfile.write({"optics": optics, "particles": parts}, star, overwrite=True)
    return star


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(mode: str, star: str, cache: str, workers: int) -> dict:
    import torch
    from gaussianem.io.cache import cached_images
    from gaussianem.io.images import ParticleImages, make_loader
    from gaussianem.io.particles import load_particles
    torch.set_num_threads(1)
    data = load_particles(star, check_images=False)
    t = time.time()
    out = {"mode": mode, "particles": len(data)}
    if mode == "build":
        cached_images(data, 128, cache, star, num_workers=workers)
        out["seconds"] = time.time() - t
        out["read_mb_s"] = len(data) * 256 ** 2 * 2 / 2 ** 20 / out["seconds"]      # float16 source
        out["images_s"] = len(data) / out["seconds"]
    else:
        imgs = cached_images(data, 128, cache, star) if mode == "read_cache" else ParticleImages(data, box=128)
        rng = np.random.default_rng(1)
        batches = [rng.choice(len(data), 64, replace=False).tolist() for _ in range(50)]
        loader = make_loader(imgs, 64, shuffle=False, num_workers=workers, batch_sampler=batches)
        t = time.time()
        for _ in loader:
            pass
        out["seconds"] = time.time() - t
        out["images_s"] = 50 * 64 / out["seconds"]
    out["peak_rss_mb"] = _vm_hwm_mb()          # this process since exec (ru_maxrss survives exec)
    out["peak_rss_workers_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--workdir", default="bench_out/cache")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the synthetic stacks")
    p.add_argument("-o", "--output", default="benchmarks/results/particle_cache.json")
    p.add_argument("--child", nargs=3, metavar=("MODE", "STAR", "CACHE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(_child(*a.child, a.workers)))
        return 0
    results = []
    for n in [int(float(s)) for s in a.sizes.split(",")]:
        folder = os.path.join(a.workdir, f"n{n}")
        t = time.time()
        star = make_set(folder, n)
        made = time.time() - t
        cache = os.path.join(folder, "cache")
        shutil.rmtree(cache, ignore_errors=True)
        row = {"particles": n, "source_box": 256, "cache_box": 128, "make_set_s": made}
        for mode in ("build", "read_cache", "read_source"):
            r = subprocess.run([sys.executable, __file__, "--workers", str(a.workers), "--child", mode, star, cache],
                               capture_output=True, text=True, check=True)
            row[mode] = json.loads(r.stdout.strip().splitlines()[-1])
            print(n, mode, row[mode], flush=True)
        results.append(row)
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)
    out = {"benchmark": "particle cache", "host": os.uname().nodename, "cpus": os.cpu_count(),
           "workers": a.workers, "results": results, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(a.output + ".tmp", a.output)
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
