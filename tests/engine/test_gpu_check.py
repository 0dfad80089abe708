"""tools/gpu_check.py (``make gpu-check``) without its slow steps: it runs, writes its
report, and lists every GPU step as skipped with the reason."""

import json
import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GPU_STEPS = ["cuda_tests", "simulate_box128", "train_box128_amp", "resume_box128_amp", "reconstruct_box128",
             "fit_domains_box128", "bench"]


def test_gpu_check_report_lists_skipped_steps(tmp_path):
    out = tmp_path / "gc"
    p = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gpu_check.py"), "--out", str(out),
                        "--skip-install", "--skip-tests", "--skip-train"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.load(open(out / "report.json"))
    steps = {s["name"]: s for s in rep["steps"]}
    assert rep["ok"] and rep["failed"] == []
    assert set(GPU_STEPS) <= set(rep["skipped"])
    assert steps["environment"]["status"] == "ok"
    env = steps["environment"]["figures"]
    assert env["torch"] == torch.__version__ and env["cuda_available"] == torch.cuda.is_available()
    reason = "no CUDA device" if not torch.cuda.is_available() else "--skip"
    for name in GPU_STEPS:
        assert steps[name]["status"] == "skipped" and reason in steps[name]["reason"], steps[name]
    assert steps["install"]["status"] == "skipped"
    assert all(isinstance(s["seconds"], (int, float)) for s in rep["steps"])
    assert "skipped:" in p.stdout and "report:" in p.stdout
