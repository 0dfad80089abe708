"""What the analysis plots show (issue 29, items 11 and 12): the training plot is the
image signal explained relative to the consensus alone in the same low-pass band (the raw loss grows
tenfold while the band widens, which reads as divergence), with a caption; the PCA
density is in sd, as the report, the commands and ChimeraX give PC values."""

import json
import shutil

import numpy as np

from gaussianem.analysis import plots, report
from gaussianem.analysis.result import load_result


def widening_band_log(path, epochs=12):
    """A log whose image loss grows tenfold over the first ten epochs as the band widens
    from 15 A to Nyquist (5 A), while the model stays 10% under the consensus' error."""
    with open(path, "w") as f:
        for e in range(1, epochs + 1):
            band = 15.0 - 10.0 * min(e, 10) / 10
            cons = 0.08 * (1 + 9 * min(e, 10) / 10)
            f.write(json.dumps({"kind": "step", "epoch": e, "step": 10, "loss": 0.9 * cons, "band": band}) + "\n")
            f.write(json.dumps({"kind": "epoch", "epoch": e, "image": 0.9 * cons, "kl": 20.0, "distance": 1e-4,
                                "total": 0.9 * cons + 0.01,
                                "health": {"l2_model": 0.9 * cons, "l2_consensus": cons, "l2_zero": 3 * cons}}) + "\n")


def test_loss_plot_is_the_signal_explained_relative_to_the_consensus_in_the_same_band(tmp_path):
    widening_band_log(tmp_path / "log.jsonl")
    c = plots.plot_losses(tmp_path / "log.jsonl", tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    ratios = np.array([v for _, v in c.relative])
    assert len(ratios) == 12 and np.allclose(ratios, (3 - 0.9) / (3 - 1))   # flat: no divergence to read
    raw = [v for _, v in c.raw_image]
    assert raw[9] / raw[0] > 5                                               # what the old plot showed
    bands = [b for _, b in c.band]
    assert bands[0] > bands[-1] == 5.0                                       # the band widening, shown too
    assert "image" not in c.terms and set(c.terms) == {"kl", "distance"}
    assert "consensus" in plots.LOSS_RELATIVE_LABEL
    assert "same low-pass band" in plots.LOSS_CAPTION and "Nyquist" in plots.LOSS_CAPTION


def test_pca_density_is_plotted_in_sd(tiny_result, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_result, run, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    calls = []
    real = report.plot_density
    monkeypatch.setattr(report, "plot_density",
                        lambda xy, path, xlabel, ylabel, *a, **k: calls.append((xy, xlabel, ylabel)) or
                        real(xy, path, xlabel, ylabel, *a, **k))
    report.analyze(load_result(str(run)), k=2, pcs=1, umap=False, skip_volumes=True, log=None)
    xy, xlabel, ylabel = calls[0]
    assert (xlabel, ylabel) == ("PC1 (sd)", "PC2 (sd)")
    np.testing.assert_allclose(np.asarray(xy).std(0, ddof=1), 1.0, rtol=1e-3)
    assert "same low-pass band" in (run / "analysis" / "report.md").read_text()
