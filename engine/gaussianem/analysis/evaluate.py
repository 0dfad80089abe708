"""Accuracy against simulated ground truth, the same code for any method's latents.

* ``motion_spearman``: |Spearman| between the latents' first principal component and
  the true motion coordinate.
* ``presence_accuracy``: how well the latents separate particles with and without the
  removable part: a cross-validated linear probe (logistic regression, 5 folds) and an
  unsupervised 2-cluster k-means (best label assignment).
* ``per_conformation_fsc``: for each ground-truth motion level with a true volume,
  the median latent of the (complete) particles nearest that level is turned into a
  volume by ``volume_fn`` and compared with the true volume (FSC AUC and FSC=0.5).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from gaussianem.io.mrc import read_map
from gaussianem.physics import fsc as fsc_mod


def load_truth(simdir: str) -> dict:
    path = os.path.join(simdir, "ground_truth.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{simdir} holds no ground_truth.npz (not made by 'gaussianem simulate')")
    t = dict(np.load(path))
    t["truth_maps"] = sorted(glob.glob(os.path.join(simdir, "truth", "state_*.mrc")))
    return t


def first_pc(z: np.ndarray) -> np.ndarray:
    x = z - z.mean(0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[0]


def motion_spearman(z: np.ndarray, motion: np.ndarray) -> float:
    from scipy.stats import spearmanr
    return float(abs(spearmanr(first_pc(z), motion).correlation))


def motion_probe(z: np.ndarray, motion: np.ndarray, seed: int = 0) -> float:
    """|Spearman| between the true motion and its 5-fold cross-validated linear prediction
    from ``z``: is the motion linearly readable from the latent, on whatever axis it lies
    (PC1 is only one of them; a split latent's or a cryoDRGN latent's PC1 may be another
    kind of heterogeneity)."""
    from scipy.stats import spearmanr
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict
    pred = cross_val_predict(LinearRegression(), z, motion, cv=KFold(5, shuffle=True, random_state=seed))
    return float(abs(spearmanr(pred, motion).correlation))


def presence_accuracy(z: np.ndarray, present: np.ndarray, seed: int = 0) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.preprocessing import StandardScaler
    x = StandardScaler().fit_transform(z)
    y = np.asarray(present).astype(int)
    probe = float(cross_val_score(LogisticRegression(max_iter=1000), x, y, cv=5).mean())
    lab = KMeans(2, n_init=10, random_state=seed).fit_predict(x)
    acc = float(max((lab == y).mean(), (lab != y).mean()))
    return {"linear_probe": probe, "kmeans": acc}


def per_conformation_fsc(z: np.ndarray, truth: dict, volume_fn, apix: float, conf_dims=None) -> list[dict]:
    motion, present = truth["motion"], truth["present"].astype(bool)
    levels = truth["eval_motion"]
    half = 0.5 / max(len(levels) - 1, 1)
    out = []
    for k, path in enumerate(truth["truth_maps"]):
        sel = present & (np.abs(motion - levels[k]) <= half * 0.5 + 1e-6)
        if sel.sum() == 0:
            continue
        zk = np.median(z[sel], axis=0)
        vol = volume_fn(zk)
        ref, _, _ = read_map(path)
        f, v = fsc_mod.fsc(vol, ref, apix)
        out.append({"motion": float(levels[k]), "n": int(sel.sum()), "fsc_auc": fsc_mod.auc(v),
                    "fsc05": fsc_mod.resolution_at(f, v, 0.5),
                    "corr": float(np.corrcoef(vol.ravel(), ref.ravel())[0, 1])})
    return out


def evaluate_result(result, simdir: str) -> dict:
    """All metrics for a GaussianEM result trained on a simulated dataset."""
    truth = load_truth(simdir)
    z = result.z
    mc = result.model_config
    z_conf = z[:, :mc.zdim_conf] if mc.split else z
    z_comp = z[:, mc.zdim_conf:] if mc.split else z
    pres = presence_accuracy(z_comp, truth["present"])
    fscs = per_conformation_fsc(z, truth, lambda zz: result.volume(zz), result.grid.apix)
    return {
        "motion_spearman": motion_spearman(z_conf, truth["motion"]),
        "motion_spearman_full_z": motion_spearman(z, truth["motion"]),
        "motion_linear_probe": motion_probe(z, truth["motion"]),
        "presence_linear_probe": pres["linear_probe"],
        "presence_kmeans": pres["kmeans"],
        "fsc_auc_mean": float(np.mean([r["fsc_auc"] for r in fscs])) if fscs else float("nan"),
        "fsc05_mean": float(np.mean([r["fsc05"] for r in fscs])) if fscs else float("nan"),
        "per_conformation": fscs,
    }
