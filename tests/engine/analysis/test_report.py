"""Tests for gaussianem.analysis.report and ``gaussianem analyze`` on the tiny trained result."""

import json
import re
import shutil
import sys
import types

import numpy as np
import pytest

from gaussianem.analysis import clusters, plots, report as analysis, selection
from gaussianem.analysis.result import load_result
from gaussianem.cli.main import main
from gaussianem.io.mrc import read_map


def copy_result(src, dst):
    """A private copy of a result folder (without its analysis and epoch checkpoints)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    return dst


@pytest.fixture(scope="module")
def analyzed(tiny_result, tmp_path_factory):
    """A copy of the tiny result analysed through the CLI with UMAP on (the default)."""
    run = copy_result(tiny_result, tmp_path_factory.mktemp("analyze") / "run")
    rc = main(["analyze", str(run), "--kmeans", "4", "--pcs", "2", "--trajectory-steps", "3",
               "--between", "0", "5"])
    assert rc == 0
    return run


def test_analyze_writes_expected_files(analyzed, tiny_sim):
    a = analyzed / "analysis"
    for name in ("report.md", "summary.json", "pca_density.png", "pca_variance.png", "loss.png",
                 "umap_density.png", "embeddings.npz", "kmeans4/labels.txt", "kmeans4/centres.txt",
                 "kmeans4/centre_particles.txt"):
        assert (a / name).is_file(), name
    for folder, n in (("pc1", 3), ("pc2", 3), ("between_0_5", 3), ("kmeans4", 4)):
        vols = sorted((a / folder).glob("vol_*.mrc"))
        assert [v.name for v in vols] == [f"vol_{i:03d}.mrc" for i in range(n)], folder
    assert not (a / "pc3").exists()                       # --pcs 2
    # Volumes are on the consensus map's grid.
    cons, apix, origin = read_map(tiny_sim / "consensus.mrc")
    vol, vapix, vorigin = read_map(a / "pc1" / "vol_002.mrc")
    assert vol.shape == cons.shape and vapix == pytest.approx(apix)
    assert np.allclose(vorigin, origin)
    # The between trajectory starts and ends at the particles' latents.
    r = load_result(analyzed)
    zt = np.loadtxt(a / "between_0_5" / "z.txt", ndmin=2)
    assert np.allclose(zt[0], r.z[0], atol=1e-5) and np.allclose(zt[-1], r.z[5], atol=1e-5)


def test_analyze_numbers(analyzed):
    a = analyzed / "analysis"
    s = json.loads((a / "summary.json").read_text())
    r = load_result(analyzed)
    ev = np.array(s["pca"]["explained_variance_ratio"])
    assert len(ev) == r.zdim
    assert np.all(ev >= 0) and ev.sum() <= 1 + 1e-6
    assert np.all(np.diff(ev) <= 1e-9)                     # sorted, largest first
    labels = np.loadtxt(a / "kmeans4" / "labels.txt", dtype=int)
    assert len(labels) == r.n_particles == s["n_particles"]
    assert set(labels) <= set(range(4))
    assert s["kmeans"]["sizes"] == np.bincount(labels, minlength=4).tolist()
    centres = np.loadtxt(a / "kmeans4" / "centres.txt", ndmin=2)
    idx = np.loadtxt(a / "kmeans4" / "centre_particles.txt", dtype=int)
    assert np.allclose(centres, r.z[idx], atol=1e-5)       # snapped to real particles
    assert s["umap"] is True
    emb = np.load(a / "embeddings.npz")
    assert emb["umap"].shape == (r.n_particles, 2)
    assert np.array_equal(emb["kmeans_labels"], labels)


def test_report_links_exist(analyzed):
    a = analyzed / "analysis"
    text = (a / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) >= 15
    for link in links:
        assert (a / link).exists(), link
    for must in ("pca_density.png", "umap_density.png", "loss.png", "kmeans4/labels.txt",
                 "pc1/vol_000.mrc", "between_0_5/vol_002.mrc", "kmeans4/vol_003.mrc", "summary.json"):
        assert f"({must})" in text, must
    # summary.json paths are relative to the analysis folder and exist.
    s = json.loads((a / "summary.json").read_text())
    assert s["files"]["report"] == "report.md"
    assert all((a / v).exists() for t in s["trajectories"] for v in t["volumes"])


def test_analyze_skip_volumes(tiny_result, tmp_path):
    run = copy_result(tiny_result, tmp_path / "run")
    notes = []
    s = analysis.analyze(load_result(run), k=3, pcs=5, umap=False, steps=4, skip_volumes=True,
                         log=notes.append)
    a = run / "analysis"
    assert not list(a.rglob("*.mrc"))
    assert (a / "kmeans3" / "labels.txt").is_file() and (a / "pc3" / "z.txt").is_file()
    assert np.loadtxt(a / "pc1" / "z.txt", ndmin=2).shape == (4, 3)
    assert "umap_density" not in s["files"] and s["umap"] is False
    assert any("5 principal components" in t for t in notes)   # zdim is 3


def test_kmeans_snaps_orders_and_repeats():
    rng = np.random.default_rng(0)
    means = np.array([[-6.0, 0.0], [0.0, 0.5], [6.0, -0.5]])
    truth = rng.integers(0, 3, 300)
    z = (means[truth] + 0.3 * rng.normal(size=(300, 2))).astype(np.float32)
    km = clusters.kmeans(z, 3, seed=1)
    assert np.array_equal(km.centres, z[km.centre_index])
    # Clusters recovered exactly and numbered along PC1 (here the x axis, either sign).
    assert len({(t, l) for t, l in zip(truth, km.labels)}) == 3
    order = [int(np.bincount(km.labels[truth == t]).argmax()) for t in range(3)]
    assert order in ([0, 1, 2], [2, 1, 0])
    again = clusters.kmeans(z, 3, seed=1)
    assert np.array_equal(again.labels, km.labels) and np.array_equal(again.centre_index, km.centre_index)
    with pytest.raises(ValueError, match="at least 400 particles"):
        clusters.kmeans(z, 400)


def test_umap_skipped_with_a_note(monkeypatch):
    notes = []
    z = np.random.default_rng(0).normal(size=(10, 3))
    assert clusters.umap_embedding(z, log=notes.append) is None
    assert "at least 20" in notes[-1]
    broken = types.ModuleType("umap")

    class UMAP:
        def __init__(self, **kw):
            raise RuntimeError("numba is broken here")
    broken.UMAP = UMAP
    monkeypatch.setitem(sys.modules, "umap", broken)
    z = np.random.default_rng(0).normal(size=(50, 3))
    assert clusters.umap_embedding(z, log=notes.append) is None
    assert "numba is broken here" in notes[-1]


def test_plot_losses_without_log(tmp_path):
    assert plots.plot_losses(tmp_path / "log.jsonl", tmp_path / "loss.png") is False
    assert not (tmp_path / "loss.png").exists()


def test_read_selection(tmp_path):
    p = tmp_path / "sel.txt"
    p.write_text("# picked\n5, 3\n3 9\n")
    assert selection.read_selection(p, 10).tolist() == [3, 5, 9]
    np.save(tmp_path / "mask.npy", np.arange(10) % 3 == 0)
    assert selection.read_selection(tmp_path / "mask.npy", 10).tolist() == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="particle index 10 is out of range.*0 to 9"):
        selection.read_selection(_write(tmp_path / "bad.txt", "1 10"), 10)
    with pytest.raises(ValueError, match="'x' is not a particle index"):
        selection.read_selection(_write(tmp_path / "bad2.txt", "1 x"), 10)


def _write(path, text):
    path.write_text(text)
    return path


def test_analyze_missing_folder(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope")]) == 1
    assert "no such result folder" in capsys.readouterr().err


def test_report_opens_with_the_run_health(analyzed, tiny_result):
    """report.md shows health.json: the status, every check, the intensity scales."""
    text = (analyzed / "analysis" / "report.md").read_text()
    h = json.loads((tiny_result / "health.json").read_text())
    assert "## Run health" in text
    assert text.index("## Run health") < text.index("## Principal components")
    for c in h["checks"]:
        assert f"| {c['name']} |" in text
    assert "Intensity scale of the images on the consensus projections: group 1:" in text
    s = json.loads((analyzed / "analysis" / "summary.json").read_text())
    assert s["health"]["status"] == h["status"]


def test_analyze_maps_are_deformed_and_ranges_from_the_data(analyzed):
    """analyze writes deformed-consensus maps while the consensus map is there, and its
    PC trajectories span the particles' 5th-95th percentiles (as generate and ChimeraX)."""
    s = json.loads((analyzed / "analysis" / "summary.json").read_text())
    assert s["map"] == "deformed"
    r = load_result(analyzed)
    lo, hi = r.pc_percentiles(1)
    z = np.loadtxt(analyzed / "analysis" / "pc1" / "z.txt", ndmin=2)
    assert np.allclose(z, r.trajectory(pc=1, steps=3, range_sd=(lo, hi)), atol=1e-5)
    vol = read_map(analyzed / "analysis" / "pc1" / "vol_000.mrc")[0]
    mine = np.squeeze(r.volume(z[:1].astype(np.float32), kind="deformed"))
    assert mine.shape == vol.shape and np.allclose(vol, mine, atol=1e-4 * np.abs(vol).max())
    pc1 = next(t for t in s["trajectories"] if t["name"] == "pc1")
    assert f"from {lo:.2f} to {hi:.2f} sd" in pc1["what"]
