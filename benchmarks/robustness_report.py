"""The robustness matrix's report: a cell's verdict, the markdown table, the results file.

``benchmarks/robustness.py``'s helpers (re-exported there): ``verdict`` (PASS or FAIL
against ``robustness_cells.THRESHOLDS``), ``markdown`` (the table and per-cell notes, as
``robustness_<tag>.md`` holds them), ``save`` (the results JSON, written atomically) and
``_f`` (a number as the table prints it).
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from robustness_cells import THRESHOLDS  # noqa: E402


def verdict(cell) -> str:
    t, m = cell.get("train") or {}, cell.get("metrics")
    if t.get("exit_code") != 0 or not m:
        return "FAIL"
    ok = not m.get("collapse") and m.get("motion_probe", 0) >= THRESHOLDS["motion_probe"]
    if "presence_kmeans" in m:
        ok = ok and m["presence_kmeans"] >= THRESHOLDS["presence_kmeans"]
    return "PASS" if ok else "FAIL"


def _f(v, nd=3):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def markdown(res) -> str:
    rows = ["| cell | what changed | exit | health | motion PC1 | motion probe | presence 2-means | "
            "presence probe | FSC AUC | arrival mean (far) | collapse | verdict | sim s | train s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in res["cells"].items():
        m = c.get("metrics") or {}
        t = c.get("train") or {}
        col = "-" if not m else ("yes" if m.get("collapse") else "no")
        rows.append(f"| {name} | {c['what']} | {t.get('exit_code', '-')} | {c.get('health', {}).get('status', '-')} | "
                    f"{_f(m.get('motion_spearman_pc1'))} | {_f(m.get('motion_probe'))} | "
                    f"{_f(m.get('presence_kmeans'))} | {_f(m.get('presence_probe'))} | {_f(m.get('fsc_auc_mean'))} | "
                    f"{_f(m.get('arrival_mean'))} ({_f(m.get('arrival_far_end'))}) | {col} | {c.get('verdict', '-')} | {_f((c.get('simulation') or {}).get('seconds'), 0)} | "
                    f"{_f(t.get('wall_s'), 0)} |")
    notes = []
    for name, c in res["cells"].items():
        m = c.get("metrics") or {}
        extra = [f"{k} {_f(m[k])}" for k in ("motion2_probe", "junk_probe") if k in m]
        if m:
            extra.insert(0, f"latent {m['zdim']} ({'split' if m['split'] else 'not split'})")
        for end, fd in (m.get("fit_domains") or {}).items():
            extra.append(f"--fit-domains from the {end.replace('_', ' ')}: {fd['domains']} domains, moving atoms "
                         f"worst {_f(fd['worst']['fitted'], 2)} A (displaced {_f(fd['worst']['displaced'], 2)} A)"
                         + (" under 2 A at every level" if fd["under_2A"] else ""))
        eng = c.get("engine") or {}
        if eng.get("commit"):
            extra.append(f"engine {eng['commit'][:8]}" + (f"+{eng['uncommitted_hash']}" if eng.get("dirty") else ""))
        if c.get("errors"):
            extra.append("errors: " + "; ".join(f"{k}: {v['error']}" for k, v in c["errors"].items()))
        cd = c.get("cryodrgn")
        if cd:
            cm = cd.get("metrics") or {}
            extra.append("cryoDRGN: " + (cd["error"] if "error" in cd else
                                         f"motion PC1 {_f(cm.get('motion_spearman_full_z'))}, probe "
                                         f"{_f(cm.get('motion_linear_probe_full_z'))}, presence 2-means "
                                         f"{_f(cm.get('presence_kmeans_full_z'))}, FSC AUC {_f(cm.get('fsc_auc_mean'))}"))
        if extra:
            notes.append(f"- {name}: " + ", ".join(extra))
    thr = (f"PASS: exit 0, no collapse, motion probe >= {THRESHOLDS['motion_probe']}, and presence 2-means >= "
           f"{THRESHOLDS['presence_kmeans']} where the cell has composition. Metrics on non-junk particles.")
    return "\n".join(rows + ["", thr] + ([""] + notes if notes else []))


def save(res, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    os.replace(tmp, path)
