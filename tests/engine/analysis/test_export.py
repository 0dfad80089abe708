"""Tests for ``gaussianem export``: particle subsets with the original rows."""

import shutil

import numpy as np
import pytest
import starfile

from gaussianem.analysis import clusters
from gaussianem.analysis.result import load_result
from gaussianem.cli.main import main
from gaussianem.io.cryosparc import write_cs
from gaussianem.io.particles import load_particles


@pytest.fixture
def run(tiny_result, tmp_path):
    """A private copy of the tiny result (export may save k-means labels into it)."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_result, dst, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    return dst


def _names(path):
    return starfile.read(path, always_dict=True)["particles"]["rlnImageName"].tolist()


def test_export_kmeans_cluster(run, tiny_sim, tmp_path, capsys):
    out = tmp_path / "c0.star"
    assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "-o", str(out)]) == 0
    labels = clusters.kmeans(load_result(run).z, 2).labels        # as analyze computes them
    assert np.array_equal(np.loadtxt(run / "analysis" / "kmeans2" / "labels.txt", dtype=int), labels)
    src = starfile.read(tiny_sim / "particles.star", always_dict=True)
    sel = np.flatnonzero(labels == 0)
    assert 0 < len(sel) < len(labels)
    assert _names(out) == src["particles"]["rlnImageName"].iloc[sel].tolist()
    got = starfile.read(out, always_dict=True)
    assert list(got["particles"].columns) == list(src["particles"].columns)
    assert np.allclose(got["particles"]["rlnDefocusU"], src["particles"]["rlnDefocusU"].iloc[sel])
    assert got["optics"].equals(src["optics"])                     # optics table kept
    data = load_particles(out, datadir=tiny_sim)                   # readable, images found
    assert len(data) == len(sel)
    assert f"{len(sel)} of 256 particles" in capsys.readouterr().out
    # --invert exports the complement; two clusters at once give everything.
    inv = tmp_path / "not0.star"
    assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "--invert", "-o", str(inv)]) == 0
    assert len(_names(inv)) == len(labels) - len(sel)
    both = tmp_path / "both.star"
    assert main(["export", str(run), "--kmeans", "2", "--cluster", "0,1", "-o", str(both)]) == 0
    assert len(_names(both)) == len(labels)


def test_export_reuses_saved_labels(run, tmp_path):
    r = load_result(run)
    n = r.n_particles
    fake = clusters.KMeans(np.arange(n) % 3, np.array([0, 1, 2]), r.z[:3])
    clusters.save_kmeans(fake, clusters.kmeans_dir(r, 3))
    out = tmp_path / "c1.star"
    assert main(["export", str(run), "--kmeans", "3", "--cluster", "1", "-o", str(out)]) == 0
    src = starfile.read(r.config["train"]["particles"], always_dict=True)["particles"]
    assert _names(out) == src["rlnImageName"].iloc[1::3].tolist()


def test_export_select_txt_and_errors(run, tiny_sim, tmp_path, capsys):
    sel = tmp_path / "picked.txt"
    sel.write_text("17\n3\n250\n3\n")
    out = tmp_path / "picked.star"
    assert main(["export", str(run), "--select", str(sel), "-o", str(out)]) == 0
    src = starfile.read(tiny_sim / "particles.star", always_dict=True)["particles"]
    assert _names(out) == src["rlnImageName"].iloc[[3, 17, 250]].tolist()   # original order
    capsys.readouterr()

    def fails(*argv):
        assert main(["export", str(run), *argv]) == 1
        return capsys.readouterr().err

    sel.write_text("3 256\n")
    new = tmp_path / "new.star"
    assert "particle index 256 is out of range" in fails("--select", str(sel), "-o", str(new))
    assert "cluster 2 does not exist" in fails("--kmeans", "2", "--cluster", "2", "-o", str(new))
    assert "--kmeans needs --cluster" in fails("--kmeans", "2", "-o", str(out))
    assert not new.exists()
    assert ".star or .cs" in fails("--kmeans", "2", "--cluster", "0", "-o", str(tmp_path / "x.txt"))
    assert _names(out) == src["rlnImageName"].iloc[[3, 17, 250]].tolist()   # left untouched


def test_export_cs_from_cs_source(run, tiny_sim, tmp_path):
    """A result trained on a .cs file exports .cs rows as they are in the source."""
    cs = tmp_path / "particles.cs"
    write_cs(cs, load_particles(tiny_sim / "particles.star"))
    np.save(tmp_path / "mask.npy", np.arange(256) % 4 == 1)
    out = tmp_path / "subset.cs"
    assert main(["export", str(run), "--particles", str(cs), "--select", str(tmp_path / "mask.npy"),
                 "-o", str(out)]) == 0
    src = np.load(cs)
    got = np.load(out)
    assert got.dtype == src.dtype
    assert np.array_equal(got, src[1::4])
    assert len(load_particles(out, check_images=False)) == 64


def test_export_pc_range_of_a_latent_part(run, tmp_path, capsys):
    """--pc-range PC,LO,HI (with --part) selects by score along a principal component,
    the same selection as select_particles (which the ChimeraX 'subset' uses)."""
    from gaussianem.analysis.selection import select_particles
    res = load_result(str(run))
    p = res.pca("conf")
    s = p.scores[:, 0] / p.sd[0]
    expect = np.flatnonzero((s >= -0.5) & (s <= 10))
    out = tmp_path / "conf_pc1.star"
    assert main(["export", str(run), "--pc-range", "1,-0.5,10", "--part", "conf", "-o", str(out)]) == 0
    assert len(_names(out)) == len(expect) > 0
    assert "PC1 of z_conf between -0.5 and 10 sd" in capsys.readouterr().out
    sel = select_particles(res, pc_range=(1, 10, -0.5), part="conf")          # limits in either order
    assert np.array_equal(sel.indices, expect)
    assert main(["export", str(run), "--pc-range", "1,2", "-o", str(tmp_path / "x.star")]) == 1
    assert "expected PC,LO,HI" in capsys.readouterr().err
    assert main(["export", str(run), "--pc-range", "9,-1,1", "-o", str(tmp_path / "x.star")]) == 1
    assert "principal component 9 does not exist" in capsys.readouterr().err


def test_export_motion_outliers(tiny_trained, tmp_path, capsys):
    """--outliers: the particles moved over 3x the median particle's displacement RMS (and
    over 0.5 A), unless over 5% are and they are a continuous tail (health.separate_group;
    then none); --invert the rest. The displacements are recomputed here from
    Result.decode, weighted by the Gaussians' mass (amplitude x width^3) times each
    particle's amplitude factors."""
    from gaussianem.train.health import separate_group
    run = tmp_path / "run"
    shutil.copytree(tiny_trained, run, ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    res = load_result(str(run))
    mass = (res.base.amplitudes.abs() * res.base.widths ** 3).numpy()
    dec = [res.decode(res.z[i:i + 100]) for i in range(0, len(res.z), 100)]
    d = np.concatenate([o["displacement"].numpy() for o in dec])
    w = mass * np.concatenate([o["amp_factor"].numpy() for o in dec])
    moved = np.sqrt(((d ** 2).sum(-1) * w).sum(1) / w.sum(1))
    cut = max(3 * np.median(moved), 0.5)
    expect = np.flatnonzero(moved > cut)
    if len(expect) > 0.05 * len(moved) and not separate_group(moved, cut):
        expect = expect[:0]
    assert len(expect) < len(moved) // 2
    rest = tmp_path / "rest.star"
    assert main(["export", str(run), "--outliers", "--invert", "-o", str(rest)]) == 0
    assert len(_names(rest)) == len(moved) - len(expect)
    assert "all but the motion outliers" in capsys.readouterr().out
    if not len(expect):                                # this run may have none (the rule: test_health)
        return
    out = tmp_path / "outliers.star"
    assert main(["export", str(run), "--outliers", "-o", str(out)]) == 0
    names = _names(out)
    assert len(names) == len(expect)
    assert "the motion outliers" in capsys.readouterr().out
    assert not set(names) & set(_names(rest))
    with pytest.raises(SystemExit):                       # one way to choose particles at a time
        main(["export", str(run), "--outliers", "--kmeans", "2", "-o", str(out)])


def test_export_low_signal(run, tiny_sim, tmp_path, capsys):
    """--low-signal: the particles whose intensity scale is half their optics group's (the
    lower clip), computed here from the scales and the star file's groups; --invert the rest."""
    res = load_result(str(run))
    data = load_particles(tiny_sim / "particles.star")
    table = dict(zip(res.intensity.groups, res.intensity.group_scale))
    group = np.array([table[int(g)] for g in data.optics_group])
    low = np.asarray(res.intensity.particle) <= 0.5 * group * (1 + 1e-4)
    rest = tmp_path / "rest.star"
    assert main(["export", str(run), "--low-signal", "--invert", "-o", str(rest)]) == 0
    assert len(_names(rest)) == int((~low).sum())
    assert "all but the low-signal particles" in capsys.readouterr().out


def test_export_kmeans_labels(run, tiny_sim, tmp_path, capsys):
    """--labels: every particle's original row plus rlnClassNumber = cluster + 1 (for
    RELION's subset selection); in a .cs file alignments3D/class = cluster."""
    out = tmp_path / "all.star"
    assert main(["export", str(run), "--kmeans", "2", "--labels", "-o", str(out)]) == 0
    labels = clusters.kmeans(load_result(run).z, 2).labels
    src = starfile.read(tiny_sim / "particles.star", always_dict=True)
    got = starfile.read(out, always_dict=True)
    assert list(got["particles"].columns) == list(src["particles"].columns) + ["rlnClassNumber"]
    assert got["particles"].drop(columns="rlnClassNumber").equals(src["particles"])
    assert got["particles"]["rlnClassNumber"].tolist() == (labels + 1).tolist()
    assert got["optics"].equals(src["optics"])
    assert "256 of 256 particles (all, labelled with k-means clusters (k=2))" in capsys.readouterr().out
    one = tmp_path / "one.star"                       # with --cluster: those clusters, labelled
    assert main(["export", str(run), "--kmeans", "2", "--labels", "--cluster", "1", "-o", str(one)]) == 0
    assert starfile.read(one, always_dict=True)["particles"]["rlnClassNumber"].tolist() == [2] * int(
        (labels == 1).sum())
    cs = tmp_path / "all.cs"
    assert main(["export", str(run), "--kmeans", "2", "--labels", "-o", str(cs)]) == 0
    rec = np.load(cs)
    assert rec["alignments3D/class"].tolist() == labels.tolist()
    assert rec["alignments3D/class"].dtype == np.uint32 and rec["uid"].dtype == np.uint64
    assert np.all(rec["blob/sign"] == 1.0)             # trained without --invert: light protein
    capsys.readouterr()
    assert main(["export", str(run), "--select", str(cs), "--labels", "-o", str(one)]) == 1
    assert "--labels needs --kmeans" in capsys.readouterr().err


def _relion_project(tmp_path, tiny_sim):
    """A RELION 5 project whose Extract/job004 holds a copy of the simulated particles."""
    proj = tmp_path / "proj"
    job = proj / "Extract" / "job004"
    job.mkdir(parents=True)
    for f in ("particles.star", "particles.mrcs"):
        shutil.copy(tiny_sim / f, job / f)
    (proj / "default_pipeline.star").write_text(
        "\n# version 50001\n\ndata_pipeline_general\n\n_rlnPipeLineJobCounter 5\n \n")
    return proj


def test_export_into_a_relion_project(run, tiny_sim, tmp_path, capsys):
    proj = _relion_project(tmp_path, tiny_sim)
    source = proj / "Extract" / "job004" / "particles.star"
    assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "--relion-project", str(proj),
                 "--job-name", "cluster 0", "--particles", str(source)]) == 0
    printed = capsys.readouterr().out
    assert "RELION job External/job005/ added to" in printed and "outside the project" not in printed
    job = proj / "External" / "job005"
    labels = clusters.kmeans(load_result(run).z, 2).labels
    sel = np.flatnonzero(labels == 0)
    got = starfile.read(job / "particles.star", always_dict=True)["particles"]
    src = starfile.read(source, always_dict=True)["particles"].iloc[sel].reset_index(drop=True)
    assert got["rlnImageName"].tolist() == [f"{i + 1:06d}@Extract/job004/particles.mrcs" for i in sel]
    assert got.drop(columns="rlnImageName").equals(src.drop(columns="rlnImageName"))
    assert len(load_particles(job / "particles.star")) == len(sel)      # names resolve from the project
    assert (job / "RELION_JOB_EXIT_SUCCESS").is_file()
    note = (job / "note.txt").read_text()
    assert "gaussianem export" in note and "--relion-project" in note and "--job-name 'cluster 0'" in note
    pipeline = (proj / "default_pipeline.star").read_text()
    assert "External/job005/ External/cluster_0/ relion.external Succeeded" in pipeline
    assert "External/job005/particles.star ParticleGroupMetadata.star.relion 1" in pipeline
    assert (proj / "External" / "cluster_0").is_symlink()
    # the trained-on file outside the project: its stacks named by absolute path
    assert main(["export", str(run), "--kmeans", "2", "--labels", "--relion-project", str(proj)]) == 0
    assert "256 image(s) are in stacks outside the project" in capsys.readouterr().out
    names = starfile.read(proj / "External" / "job006" / "particles.star", always_dict=True)["particles"]
    assert names["rlnImageName"][0] == f"000001@{tiny_sim / 'particles.mrcs'}"
    assert names["rlnClassNumber"].tolist() == (labels + 1).tolist()


def test_export_relion_project_errors(run, tiny_sim, tmp_path, capsys):
    def fails(*argv):
        assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", *argv]) == 1
        return capsys.readouterr().err

    assert "not a RELION project folder (no default_pipeline.star)" in fails("--relion-project", str(tmp_path))
    assert "one of them" in fails("--relion-project", str(tmp_path), "-o", str(tmp_path / "x.star"))
    assert "one of them" in fails()
    assert "--job-name needs --relion-project" in fails("--job-name", "a", "-o", str(tmp_path / "x.star"))
    proj = _relion_project(tmp_path, tiny_sim)
    assert "--job-name 'job1'" in fails("--relion-project", str(proj), "--job-name", "job1")
    assert not (proj / "External").exists() or not any((proj / "External").iterdir())


def _without_image_size(run, tiny_sim, tmp_path):
    """The run's particles as a RELION 3.0 file (one table, no rlnImageSize, as Warp and
    RELION 3.0 write it, images named by absolute path), made the run's particle file."""
    import json
    src = starfile.read(tiny_sim / "particles.star", always_dict=True)
    optics, particles = src["optics"], src["particles"].copy()
    for column in ("rlnImagePixelSize", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        particles[column] = particles["rlnOpticsGroup"].map(dict(zip(optics["rlnOpticsGroup"], optics[column])))
    particles["rlnImageName"] = [f"{n.split('@')[0]}@{tiny_sim / n.split('@')[1]}" for n in particles["rlnImageName"]]
    star = tmp_path / "warp.star"
    starfile.write(particles.drop(columns=["rlnOpticsGroup"]), star)
    config = json.loads((run / "config.json").read_text())
    config["train"]["particles"] = str(star)
    (run / "config.json").write_text(json.dumps(config))
    return star


def test_export_and_reconstruct_without_rlnImageSize(run, tiny_sim, tmp_path, capsys):
    """Trained from a star file without rlnImageSize: export (.star, .cs, --labels) and
    reconstruct read the box from the stacks (they stopped with 'image size unknown')."""
    star = _without_image_size(run, tiny_sim, tmp_path)
    assert "rlnImageSize" not in starfile.read(star).columns
    for out in ("c0.star", "c0.cs"):
        assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "-o", str(tmp_path / out)]) == 0, \
            capsys.readouterr().err
    assert main(["export", str(run), "--kmeans", "2", "--labels", "-o", str(tmp_path / "all.star")]) == 0
    assert len(load_particles(tmp_path / "c0.cs")) + len(load_particles(tmp_path / "c0.star")) > 0
    assert np.load(tmp_path / "c0.cs")["blob/shape"][0].tolist() == [32, 32]
    assert main(["reconstruct", str(run), "--kmeans", "2", "--cluster", "0", "-o", str(tmp_path / "r.mrc"),
                 "--progress", "none"]) in (0, 3), capsys.readouterr().err
    assert (tmp_path / "r.mrc").exists()


def test_export_never_replaces_the_particle_file_and_other_files_only_with_force(run, tiny_sim, tmp_path, capsys):
    """-o onto the run's own particle file is refused, --force or not; any other existing
    file is replaced only with --force."""
    src = tiny_sim / "particles.star"
    before = src.read_bytes()
    for force in ([], ["--force"]):
        assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "-o", str(src), *force]) == 1
        assert "the particle file this result was trained on" in capsys.readouterr().err
    assert src.read_bytes() == before
    out = tmp_path / "c0.star"
    out.write_text("mine\n")
    assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err
    assert out.read_text() == "mine\n"
    assert main(["export", str(run), "--kmeans", "2", "--cluster", "0", "-o", str(out), "--force"]) == 0
    assert len(_names(out)) > 0
