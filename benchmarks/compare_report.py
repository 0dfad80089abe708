"""The comparison's report (compare_cryodrgn.py): GaussianEM / cryoDRGN ratios and the
Markdown table, both read from the result dictionary that goes into the JSON.
"""

from __future__ import annotations

import numpy as np


def _g(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(v, spec=".3g"):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return format(v, spec)


ROWS = [  # label, path in each side, format, higher is better
    ("seconds / epoch", ("train", "s_per_epoch"), ".1f", False),
    ("particles / s (training)", ("train", "particles_per_s"), ".1f", True),
    ("training process wall time (s)", ("train", "wall_s"), ".0f", False),
    ("peak RSS, training (MB)", ("train", "peak_rss_mb"), ".0f", False),
    ("Spearman (abs) PC1 vs motion (full z)", ("metrics", "motion_spearman_full_z"), ".3f", True),
    ("motion, linear probe (full z; \|Spearman\|)", ("metrics", "motion_linear_probe_full_z"), ".3f", True),
    ("presence, linear probe (full z)", ("metrics", "presence_linear_probe_full_z"), ".3f", True),
    ("presence, 2-means (full z)", ("metrics", "presence_kmeans_full_z"), ".3f", True),
    ("per-conformation FSC AUC (mean)", ("metrics", "fsc_auc_mean"), ".3f", True),
    ("per-conformation FSC=0.5 (Å, mean)", ("metrics", "fsc05_mean"), ".2f", False),
    ("per-conformation real-space corr (mean)", ("metrics", "corr_mean"), ".3f", True),
]


def ratios(res, ours_key="ours") -> dict:
    o, c = res.get(ours_key) or {}, res.get("cryodrgn", {})
    out = {}
    for label, path, _, _ in ROWS:
        x, y = _g(o, *path), _g(c, *path)
        if x is not None and y is not None and y:
            out[path[-1]] = x / y
    lo, lc = o.get("latency", {}), c.get("latency", {})
    if lo and lc:
        out["volume_latency_per_volume_vs_eval_vol_process"] = lo["per_volume_s"] / lc["single_volume_process_s"]
        out["volume_latency_per_volume_vs_eval_vol_zfile_per_volume"] = lo["per_volume_s"] / lc["zfile_10_per_volume_s"]
    return out


def markdown(res) -> str:
    o, c, r = res.get("ours", {}), res.get("cryodrgn", {}), res.get("ratios", {})
    lg = res.get("ours_long")
    e = res["settings"]["epochs"]
    head = f"| | GaussianEM, {e} epochs |" + (f" GaussianEM, {lg['epochs']} epochs |" if lg else "")
    lines = [head + f" cryoDRGN, {e} epochs | GaussianEM / cryoDRGN ({e} epochs each) |",
             "|---|---:|" + ("---:|" if lg else "") + "---:|---:|"]

    def row(label, x, xl, y, ratio):
        return f"| {label} | {x} |" + (f" {xl} |" if lg else "") + f" {y} | {ratio} |"
    for label, path, spec, _ in ROWS:
        lines.append(row(label, _fmt(_g(o, *path), spec), _fmt(_g(lg, *path), spec), _fmt(_g(c, *path), spec),
                         _fmt(r.get(path[-1]), ".2f")))
    sp = [_g(d, "metrics", "motion_spearman_conf") for d in (o, lg)]
    pr = [_g(d, "metrics", "presence_linear_probe_comp") for d in (o, lg)]
    lines.append(row("ours, split latent: Spearman on z_conf / probe on z_comp",
                     f"{_fmt(sp[0], '.3f')} / {_fmt(pr[0], '.3f')}", f"{_fmt(sp[1], '.3f')} / {_fmt(pr[1], '.3f')}",
                     "—", "—"))
    lo, lc = o.get("latency", {}), c.get("latency", {})
    lines.append(row("volume latency, one map (s)", f"{_fmt(lo.get('per_volume_s'), '.4f')} (in process)", "",
                     f"{_fmt(lc.get('single_volume_process_s'), '.2f')} (eval_vol process)",
                     _fmt(r.get("volume_latency_per_volume_vs_eval_vol_process"), ".4f")))
    lines.append(row("volume latency, per map of 10 (s)",
                     f"{_fmt(lo.get('batch_of_10_per_volume_s'), '.4f')} (one batch)", "",
                     f"{_fmt(lc.get('zfile_10_per_volume_s'), '.2f')} (--zfile; marginal "
                     f"{_fmt(lc.get('zfile_marginal_per_volume_s'), '.2f')})",
                     _fmt(r.get("volume_latency_per_volume_vs_eval_vol_zfile_per_volume"), ".4f")))
    lines.append(row("load the trained model (s)", _fmt(lo.get("load_result_s"), ".2f"), "",
                     "(inside each process)", ""))
    return "\n".join(lines)
