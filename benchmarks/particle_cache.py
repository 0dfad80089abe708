"""Particle cache benchmark (``make bench``): build time and read speed of the training
box cache, peak memory against the number of particles.

For each N: a synthetic set of N particles in box 256 (float16 MRC stacks of at most
10,000 images and a RELION star file; the pixel values are noise, which costs the same to
read and crop as real images), then in a fresh process each: build the cache at box 128
(``gaussianem.io.cache``), read 50 random batches of 64 from the cache, and the same
from the source stacks cropping on the fly. Reports seconds, MB/s, images/s, each
process's peak RSS, the CPU time of the build (its process and its workers) and the disk
traffic of the device meanwhile. Memory should stay flat in N; ``bound`` says whether
the CPU or the disk limits the build on this machine.

Within the disk: a 2x10^5 x 256^2 float16 source is 26 GB. ``--unique U`` (default
10,000) writes only U distinct source images; row i of the star file names image
i mod U, so that N > U rows reference each source image N/U times, in passes over the
stacks in order (the build reads the same sequence of runs as for N distinct images).
The JSON says so ("source images repeated k times, unique images U"). So that a repeat
is read from the disk and not from the page cache, the source stacks are dropped from
the page cache (``posix_fadvise(DONTNEED)``) every second while the build runs; before
each read step the source and the cache are written back and dropped likewise (cold
reads). The cache itself is written in full (N x 128^2 float32: 13 GB at 2x10^5); a size
that would leave less than ``--min-free-gb`` free on the disk is skipped, and a step is
stopped if free space falls below it.

  .venv/bin/python benchmarks/particle_cache.py --sizes 10000,100000 --workdir bench_out/cache
  .venv/bin/python benchmarks/particle_cache.py --sizes 1e4,1e5,2e5 --unique 2000 \\
      -o benchmarks/results/particle_cache_cpu_n10000-200000.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

PER_STACK = 10_000
SOURCE_BOX, CACHE_BOX = 256, 128
MB = 2 ** 20


def make_set(folder: str, n: int, unique: int, box: int = SOURCE_BOX, apix: float = 1.0) -> tuple[str, list[str]]:
    """The star file of ``n`` rows over ``unique`` distinct images (row i: image i mod
    unique), and the stacks' paths."""
    import mrcfile
    import pandas as pd
    import starfile
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    stacks = []
    for s in range(0, unique, PER_STACK):
        k = min(PER_STACK, unique - s)
        path = os.path.join(folder, f"stack_{s // PER_STACK:04d}.mrcs")
        if not os.path.exists(path):
            with mrcfile.new_mmap(path + ".tmp", shape=(k, box, box), mrc_mode=12, overwrite=True) as m:
                m.set_image_stack()
                m.voxel_size = apix
                for i in range(0, k, 1000):
                    j = min(k, i + 1000)
                    m.data[i:j] = rng.standard_normal((j - i, box, box), dtype=np.float32).astype(np.float16)
            os.replace(path + ".tmp", path)
        stacks.append(path)
    image = np.arange(n) % unique
    names = [f"{j % PER_STACK + 1:06d}@stack_{j // PER_STACK:04d}.mrcs" for j in image]
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnImagePixelSize": [apix],
                           "rlnImageSize": [box], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                           "rlnAmplitudeContrast": [0.1]})
    parts = pd.DataFrame({"rlnImageName": names, "rlnAngleRot": 0.0, "rlnAngleTilt": 0.0, "rlnAnglePsi": 0.0,
                          "rlnOriginXAngst": 0.0, "rlnOriginYAngst": 0.0, "rlnDefocusU": 15000.0,
                          "rlnDefocusV": 15000.0, "rlnDefocusAngle": 0.0, "rlnOpticsGroup": 1})
    star = os.path.join(folder, "particles.star")
    starfile.write({"optics": optics, "particles": parts}, star, overwrite=True)
    return star, stacks


# ---------------------------------------------------------------------- the disk
def _free_gb(path: str) -> float:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 2 ** 30


def _drop(paths, write_back: bool = False) -> None:
    """Evict ``paths`` from the page cache (written back first when asked)."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            if write_back:
                os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _diskstats(path: str) -> tuple[float, float] | None:
    """MB read and written so far by the block device holding ``path`` (all its users)."""
    dev = os.stat(path).st_dev
    want = (os.major(dev), os.minor(dev))
    with open("/proc/diskstats") as f:
        for line in f:
            x = line.split()
            if (int(x[0]), int(x[1])) == want:
                return int(x[5]) * 512 / MB, int(x[9]) * 512 / MB
    return None


def disk_baseline(folder: str, size_mb: int = 1024) -> dict:
    """The disk alone: sequential write (then fsync) and cold sequential read of
    ``size_mb`` in 8 MiB blocks, and cold random 64 KiB reads (a cached image's size)."""
    os.makedirs(folder, exist_ok=True)
    path, block = os.path.join(folder, "disk_probe.bin"), np.random.default_rng(0).bytes(8 * MB)
    try:
        t = time.time()
        with open(path, "wb") as f:
            for _ in range(size_mb // 8):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        write = size_mb / (time.time() - t)
        _drop([path])
        t = time.time()
        with open(path, "rb", buffering=0) as f:
            while f.read(8 * MB):
                pass
        read = size_mb / (time.time() - t)
        _drop([path])
        offsets = np.random.default_rng(1).integers(0, size_mb * 16, 2000) * 65536
        t = time.time()
        with open(path, "rb", buffering=0) as f:
            for o in offsets:
                f.seek(int(o))
                f.read(65536)
        rand = len(offsets) / (time.time() - t)
    finally:
        if os.path.exists(path):
            os.remove(path)
    return {"seq_write_mb_s": write, "seq_read_mb_s": read, "random_64k_reads_s": rand,
            "random_64k_mb_s": rand * 65536 / MB, "probe_mb": size_mb}


# ---------------------------------------------------------------------- one step, in a fresh process
def _status_mb(field: str) -> float:
    """``VmHWM`` (peak resident memory since exec) or ``VmRSS`` of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the loader's workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _child(mode: str, star: str, cache: str, workers: int) -> dict:
    import torch
    from gaussianem.io.cache import cached_images
    from gaussianem.io.images import ParticleImages, make_loader
    from gaussianem.io.particles import load_particles
    torch.set_num_threads(1)
    data = load_particles(star, check_images=False)
    out = {"mode": mode, "particles": len(data), "rss_after_metadata_mb": _status_mb("VmRSS")}
    cpu, t = _cpu_s(), time.time()
    if mode == "build":
        cached_images(data, CACHE_BOX, cache, star, num_workers=workers)
        out["seconds"] = time.time() - t
        out["read_mb_s"] = len(data) * SOURCE_BOX ** 2 * 2 / MB / out["seconds"]      # float16 source
        out["written_mb_s"] = len(data) * CACHE_BOX ** 2 * 4 / MB / out["seconds"]    # float32 cache
        out["images_s"] = len(data) / out["seconds"]
    else:
        if mode == "read_cache":
            imgs = cached_images(data, CACHE_BOX, cache, star)
        else:
            imgs = ParticleImages(data, box=CACHE_BOX)
        rng = np.random.default_rng(1)
        batches = [rng.choice(len(data), 64, replace=False).tolist() for _ in range(50)]
        loader = make_loader(imgs, 64, shuffle=False, num_workers=workers, batch_sampler=batches)
        t = time.time()
        for _ in loader:
            pass
        out["seconds"] = time.time() - t
        out["images_s"] = 50 * 64 / out["seconds"]
        del loader                         # its workers end and are counted below
        gc.collect()
    out["cpu_s"] = _cpu_s() - cpu
    out["cores_busy"] = out["cpu_s"] / out["seconds"]
    out["peak_rss_mb"] = _status_mb("VmHWM")   # this process since exec (ru_maxrss survives exec)
    out["peak_rss_workers_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def run_step(mode: str, star: str, cache: str, workers: int, evict: list[str], min_free_gb: float,
             workdir: str) -> dict:
    """One step in a fresh process; meanwhile, every second, ``evict`` is dropped from the
    page cache and the free disk space checked (the step is stopped under ``min_free_gb``)."""
    proc = subprocess.Popen([sys.executable, __file__, "--workers", str(workers), "--child", mode, star, cache],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    disk0, load0, lowest = _diskstats(workdir), os.getloadavg()[0], _free_gb(workdir)
    while True:
        try:
            out, err = proc.communicate(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            _drop(evict)
            lowest = min(lowest, _free_gb(workdir))
            if lowest < min_free_gb:
                proc.kill()
                proc.communicate()
                raise RuntimeError(f"{mode}: stopped, free disk space fell to {lowest:.1f} GB "
                                   f"(under --min-free-gb {min_free_gb:g})")
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{err[-3000:]}")
    row = json.loads(out.strip().splitlines()[-1])
    disk1 = _diskstats(workdir)
    if disk0 and disk1:                  # the whole device: other users' traffic included
        row["device_read_mb"], row["device_written_mb"] = disk1[0] - disk0[0], disk1[1] - disk0[1]
    row["load_avg_1min_before_after"] = [load0, os.getloadavg()[0]]
    row["lowest_free_gb"] = lowest
    return row


def bound(build: dict, disk: dict, cores: int) -> dict:
    """Which resource limits the build on this machine, whatever else shares it: the rate
    its CPU cost allows on all cores (cores / CPU seconds per image, the workers' reads
    included) against the rate the disk allows (its sequential read of the float16 source
    and write of the float32 cache). The lower ceiling is the bound."""
    n = build["particles"]
    cpu = cores * n / build["cpu_s"]
    io = min(disk["seq_read_mb_s"] / (SOURCE_BOX ** 2 * 2 / MB), disk["seq_write_mb_s"] / (CACHE_BOX ** 2 * 4 / MB))
    return {"cpu_ms_per_image": 1000 * build["cpu_s"] / n, "cpu_ceiling_images_s": cpu, "io_ceiling_images_s": io,
            "bound": "cpu" if cpu < io else "io"}


# ---------------------------------------------------------------------- all sizes
def one_size(n: int, a, disk: dict, cores: int) -> dict:
    unique = min(n, a.unique or n)
    folder = os.path.join(a.workdir, f"n{n}")
    need_gb = (unique * SOURCE_BOX ** 2 * 2 + n * CACHE_BOX ** 2 * 4) / 2 ** 30 + 0.1
    row = {"particles": n, "source_box": SOURCE_BOX, "cache_box": CACHE_BOX, "unique_images": unique,
           "source_repeats": n / unique,
           "source": f"source images repeated {n / unique:g} times, unique images {unique}",
           "disk_needed_gb": need_gb}
    free = _free_gb(a.workdir)
    if free - need_gb < a.min_free_gb:
        row["skipped"] = (f"needs {need_gb:.1f} GB of the {free:.1f} GB free, which would leave less than "
                          f"--min-free-gb {a.min_free_gb:g}")
        print(n, row["skipped"], flush=True)
        return row
    try:
        t = time.time()
        star, stacks = make_set(folder, n, unique)
        row["make_set_s"] = time.time() - t
        cache = os.path.join(folder, "cache")
        shutil.rmtree(cache, ignore_errors=True)
        _drop(stacks, write_back=True)
        row["build"] = run_step("build", star, cache, a.workers, stacks if n > unique else [], a.min_free_gb,
                                a.workdir)
        cached = [os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".mrcs")]
        t = time.time()
        _drop(cached, write_back=True)
        row["build"]["flush_after_s"] = time.time() - t          # what was still in memory, written back
        row["build"].update(bound(row["build"], disk, cores))
        print(n, "build", row["build"], flush=True)
        for mode in ("read_cache", "read_source"):
            _drop(stacks + cached, write_back=True)              # cold: from the disk
            row[mode] = run_step(mode, star, cache, a.workers, [], a.min_free_gb, a.workdir)
            print(n, mode, row[mode], flush=True)
    except RuntimeError as e:
        row["failed"] = str(e)
        print(n, row["failed"], flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return row


def _write(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--unique", type=int, default=10_000,
                   help="distinct source images (0: as many as particles); rows beyond repeat them in order")
    p.add_argument("--workdir", default="bench_out/cache")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--min-free-gb", type=float, default=6.0, help="never leave less free on the disk")
    p.add_argument("--keep", action="store_true", help="keep the synthetic stacks and the cache")
    p.add_argument("-o", "--output", default="benchmarks/results/particle_cache.json")
    p.add_argument("--child", nargs=3, metavar=("MODE", "STAR", "CACHE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(_child(*a.child, a.workers)))
        return 0
    os.makedirs(a.workdir, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    disk = disk_baseline(a.workdir)
    print("disk", disk, flush=True)
    out = {"benchmark": "particle cache", "host": os.uname().nodename, "cpus": cores, "workers": a.workers,
           "disk": disk, "cold_reads": "source stacks dropped from the page cache every second during the "
                                       "build (when repeated); source and cache written back and dropped "
                                       "before each read step",
           "results": [], "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for n in [int(float(s)) for s in a.sizes.split(",")]:
        out["results"].append(one_size(n, a, disk, cores))
        _write(a.output, out)                       # after each size: a later failure keeps the rest
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
