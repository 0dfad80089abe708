"""The GPU check's helpers (tools/gpu_check.py): the small scripts it runs in the node's
Python, and what it reads from each step's output and files for the report's figures.

Standalone (no engine import: the check runs before the engine may be installed), so a
run folder's files are named here as the engine's RunDir names them.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

PROBE = r"""
import importlib, importlib.metadata as md, json, os, platform, sys
out = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
dists = {}
for name in json.loads(sys.argv[1]):
    try:
        dists[name] = md.version(name)
    except md.PackageNotFoundError:
        dists[name] = None
out["distributions"] = dists
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    out["gpus"] = []
    if out["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append({"name": p.name, "memory_gb": round(p.total_memory / 2 ** 30, 1),
                                "capability": f"{p.major}.{p.minor}"})
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
        out["cudnn"] = torch.backends.cudnn.version()
    import torch.distributed as dist
    out["nccl_available"] = dist.is_available() and dist.is_nccl_available()
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import numpy
    out["numpy"] = numpy.__version__
except Exception as e:
    out["numpy"] = None
try:
    import gaussianem
    out["gaussianem"] = gaussianem.__version__
    out["gaussianem_path"] = os.path.dirname(os.path.abspath(gaussianem.__file__))
except Exception as e:
    out["gaussianem"] = None
    out["gaussianem_error"] = f"{type(e).__name__}: {e}"
missing = []
for m in json.loads(sys.argv[2]):
    try:
        importlib.import_module(m)
    except Exception:
        missing.append(m)
out["missing_modules"] = missing
print("PROBE" + json.dumps(out))
"""

LATENTS = r"""
import json, sys, numpy as np
z = np.load(sys.argv[1])["z"]
print(json.dumps({"shape": list(z.shape), "finite": bool(np.isfinite(z).all())}))
"""


def pytest_counts(out: str) -> dict:
    last = [l for l in out.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", l)]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last[-1])} \
        if last else {}


def junit(path: str) -> dict:
    root = ET.parse(path).getroot()
    tests = {}
    for case in root.iter("testcase"):
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed"
            elif child.tag == "skipped":
                status = "skipped: " + (child.get("message") or "")
        tests[case.get("name")] = status
    return {"passed": sum(v == "passed" for v in tests.values()),
            "failed": sum(v == "failed" for v in tests.values()),
            "skipped": sum(v.startswith("skipped") for v in tests.values()), "tests": tests}


def jsonl(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def run_figures(check, run: str, epochs: int) -> dict:
    """Particles/s, seconds and peak memory of a run's last epoch (each stage's), latents."""
    figs = {}
    for stage, d in (("coarse", os.path.join(run, "coarse")), ("", run)):
        recs = [r for r in jsonl(os.path.join(d, "log.jsonl")) if r.get("kind") == "epoch"]
        if recs:
            last = recs[-1]
            key = f"{stage}_" if stage else ""
            figs[f"{key}epochs_logged"] = [r["epoch"] for r in recs]
            for k in ("particles_per_s", "seconds", "peak_memory_gb", "total"):
                if k in last:
                    figs[f"{key}{k}"] = round(float(last[k]), 4)
    rc, out, _ = check.run([check.py, "-c", LATENTS, os.path.join(run, "latents.npz")], 60)
    figs["latents"] = json.loads(out.strip().splitlines()[-1]) if rc == 0 else f"unreadable: {out[-300:]}"
    last_epoch = max(figs.get("epochs_logged") or [0])
    if last_epoch != epochs:
        raise RuntimeError(f"the run's log ends at epoch {last_epoch}, expected {epochs}")
    return figs


def recon_figures(path: str) -> dict:
    """Particles/s and resolutions of a reconstruction (its MAP_fsc.json)."""
    try:
        with open(path[:-4] + "_fsc.json") as f:
            s = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: s.get(k) for k in ("particles", "seconds", "particles_per_s", "resolution_0.143")}


def fit_figures(folder: str) -> dict:
    """Per state: seconds of the rigid-domain fit and its score before and after."""
    rep = json.load(open(os.path.join(folder, "generate.json")))
    return {"fits": [m.get("fit") for m in rep.get("models", [])],
            "domains": rep["models"][0].get("domains") if rep.get("models") else None}


def bench_figures(path: str) -> dict:
    with open(path) as f:
        res = json.load(f)
    t = res.get("training", {})
    return {"device": res.get("device"), "training_particles_per_s": t.get("particles_per_s"),
            "training_peak_memory_gb": t.get("peak_memory_gb"),
            "projection": [{k: r[k] for k in ("batch", "gaussians", "box", "forward_images_per_s",
                                              "train_images_per_s", "peak_memory_gb") if k in r}
                           for r in res.get("projection", [])],
            "volume_ms": [{"box": r["box"], "gaussians": r["gaussians"], "ms": r["ms_per_volume"]}
                          for r in res.get("volume", [])]}
