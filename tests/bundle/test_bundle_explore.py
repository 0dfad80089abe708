"""What cryoDRGN users expect, and movies (issue 16, items 11 and 12), in a real headless
ChimeraX session through real commands: subsets drawn on the latent plot (box, lasso),
trajectories between two particles or cluster centres, ``gaussianem analyze`` as a job,
and ``gaussianem movie`` encoding an MP4 with ChimeraX's ``movie record/encode``.

Fixtures: ``cx`` (embedded session, models closed after each test) and ``tiny_result``
(tests/conftest.py: a result trained with the model, split latent 2 + 1).
"""

from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import pytest

from chimerax_fixture import logged, osmesa_available, run



def _star_rows(path):
    import starfile
    return starfile.read(path)["particles"]


# ---------------------------------------------------------------------------- subsets on the plot

def test_box_and_lasso_on_the_plot_save_the_particles_inside(cx, opened, tmp_path):
    r = opened.result
    p = r.pca()
    s = p.scores[:, :2] / p.sd[:2]                     # the plot's PC1, PC2 (sd), from the engine's PCA
    out, text = logged(cx, f"gaussianem subset box -0.5,-0.5,1,1 save {tmp_path / 'box.star'}")
    inside = np.flatnonzero((s[:, 0] > -0.5) & (s[:, 0] < 1) & (s[:, 1] > -0.5) & (s[:, 1] < 1))
    np.testing.assert_array_equal(out["indices"], inside)
    assert 0 < out["n"] < len(s) and "PC1/PC2" in text
    source = _star_rows(r.config["train"]["particles"])
    saved = _star_rows(tmp_path / "box.star")
    assert list(saved["rlnImageName"]) == list(source["rlnImageName"].iloc[inside])     # original rows
    # a lasso: a triangle, the same rule as matplotlib's
    from matplotlib.path import Path
    tri = np.array([[-2.0, -2.0], [2.0, -1.0], [0.0, 2.0]])
    out = run(cx, f"gaussianem subset polygon {','.join(f'{v:g}' for v in tri.ravel())} plot pca "
                  f"save {tmp_path / 'lasso.star'}")
    np.testing.assert_array_equal(out["indices"], np.flatnonzero(Path(tri).contains_points(s)))


def test_bad_regions_are_one_line_errors(cx, opened, tmp_path):
    from chimerax.core.errors import UserError
    save = tmp_path / "x.star"
    with pytest.raises(UserError, match="at least 3 corners"):
        run(cx, f"gaussianem subset polygon 0,0,1,1,2 save {save}")
    with pytest.raises(UserError, match="goes with box or polygon"):
        run(cx, f"gaussianem subset cluster 0 plot umap save {save}")
    with pytest.raises(UserError, match="gaussianem analyze"):           # no UMAP before an analysis
        run(cx, f"gaussianem subset box 0,0,1,1 plot umap save {save}")
    with pytest.raises(UserError, match="no particles"):
        run(cx, f"gaussianem subset box 50,50,60,60 save {save}")
    assert not save.exists()


# ---------------------------------------------------------------------------- paths

def test_trajectory_between_two_particles_and_two_cluster_centres(cx, opened):
    r = opened.result
    series, copy = run(cx, "gaussianem trajectory fromParticle 3 toParticle 40 steps 4")
    assert len(series.maps) == 4 and "particle 3 to particle 40" in series.name
    ends = [opened.generate(r.z[i]).volume for i in (3, 40)]
    np.testing.assert_allclose(series.maps[0].full_matrix(), ends[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(series.maps[-1].full_matrix(), ends[1], rtol=1e-5, atol=1e-6)
    assert copy is not None and len(copy.coordset_ids) == 4
    km = opened.kmeans(3)
    series, _ = run(cx, "gaussianem trajectory fromCluster 0 toCluster 2 k 3 steps 3")
    middle = opened.generate((km.centres[0] + km.centres[2]) / 2).volume
    np.testing.assert_allclose(series.maps[1].full_matrix(), middle, rtol=1e-4, atol=1e-5)


def test_path_options_that_do_not_go_together(cx, opened):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="needs both ends"):
        run(cx, "gaussianem trajectory fromParticle 3")
    with pytest.raises(UserError, match="not both"):
        run(cx, "gaussianem trajectory fromParticle 3 toParticle 4 pc 2")
    with pytest.raises(UserError, match="cluster 9 does not exist"):
        run(cx, "gaussianem trajectory fromCluster 0 toCluster 9 k 3")


# ---------------------------------------------------------------------------- analyze as a job

def test_analyze_runs_as_a_job_and_logs_its_lines(cx, tiny_result, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_result, run_dir, ignore=shutil.ignore_patterns("analysis"))
    job, text = logged(cx, f"gaussianem analyze {run_dir} k 3 pcs 1 steps 2 umap false skipVolumes true wait true")
    assert job.kind == "analyze" and job.state == "done"
    assert (run_dir / "analysis" / "report.md").is_file()
    assert (run_dir / "analysis" / "kmeans3" / "labels.txt").is_file()
    assert "k-means k=3" in text and "report.md" in text              # the engine's lines, logged
    rows = run(cx, "gaussianem jobs")
    assert rows[-1]["kind"] == "analyze" and rows[-1]["state"] == "done"


def test_analyze_refuses_a_folder_without_a_run(cx, tmp_path):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match="holds no GaussianEM training run"):
        run(cx, f"gaussianem analyze {tmp_path}")


# ---------------------------------------------------------------------------- movies

def mp4_frame_count(path) -> int:
    """Frames of the first track of an MP4 file, read from its sample size box
    (moov/trak/mdia/minf/stbl/stsz: version+flags, sample size, sample count)."""
    data = open(path, "rb").read()

    def boxes(start, end):
        i = start
        while i + 8 <= end:
            size, kind = struct.unpack(">I4s", data[i:i + 8])
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
            elif size == 0:
                size = end - i
            yield kind.decode("latin-1"), i + header, i + size
            i += size

    def find(start, end, path):
        for kind, a, b in boxes(start, end):
            if kind == path[0]:
                return (a, b) if len(path) == 1 else find(a, b, path[1:])
        return None

    a, _ = find(0, len(data), ["moov", "trak", "mdia", "minf", "stbl", "stsz"])
    return struct.unpack(">I", data[a + 8:a + 12])[0]


@pytest.mark.skipif(not osmesa_available(), reason="offscreen rendering (OSMesa) is not installed")
def test_movie_of_a_trajectory_is_an_mp4_with_frames_between_steps(cx, opened, tmp_path):
    from chimerax.gaussianem.movie import find_ffmpeg
    assert find_ffmpeg() is not None, "tools/install_chimerax.py links ffmpeg into the environment's bin"
    before = opened.z.copy()
    out, text = logged(cx, f"gaussianem movie {tmp_path / 'pc1.mp4'} pc 1 steps 4 framesPerStep 2 size 96,96")
    movie = tmp_path / "pc1.mp4"
    assert movie.is_file() and movie.stat().st_size > 2000
    assert out["frames"] == 7 and mp4_frame_count(movie) == 7           # 3 x 2 frames and the last state
    assert "7 frames at 25 per second, 0.3 s" in text
    np.testing.assert_array_equal(opened.z, before)                   # back at the state shown before
    out = run(cx, f"gaussianem movie {tmp_path / 'path.mp4'} fromParticle 3 toParticle 40 steps 3 "
                  "framesPerStep 1 roundTrip true size 64,64")
    assert out["frames"] == 6 and mp4_frame_count(tmp_path / "path.mp4") == 6


@pytest.mark.skipif(not osmesa_available(), reason="offscreen rendering (OSMesa) is not installed")
def test_movie_out_of_the_box_is_smooth_and_never_replaces_a_file_unasked(cx, opened, tmp_path, monkeypatch):
    """Issue 29 item 13: no ffmpeg in ChimeraX's bin folder, on PATH or beside this Python
    (a ChimeraX started as 'python -m chimerax.core'): the imageio-ffmpeg package's is
    used. The default movie interpolates 10 frames between states at 25 per second; an
    existing movie is refused without 'replace true'."""
    import chimerax
    import imageio_ffmpeg
    from chimerax.core.errors import UserError
    from chimerax.gaussianem.movie import find_ffmpeg
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setattr(chimerax, "app_bin_dir", str(empty))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr("sys.executable", str(empty / "python"))
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    movie = tmp_path / "default.mp4"
    out, text = logged(cx, f"gaussianem movie {movie} steps 3 size 48,48")
    assert out["frames"] == 21 and mp4_frame_count(movie) == 21             # (3 - 1) x 10 + 1
    assert "21 frames at 25 per second, 0.8 s" in text
    assert os.environ["PATH"] == "/usr/bin:/bin"                              # PATH as it was
    movie.write_bytes(b"my own movie")
    with pytest.raises(UserError, match="already exists: add 'replace true'"):
        run(cx, f"gaussianem movie {movie} steps 2 framesPerStep 1 size 48,48")
    assert movie.read_bytes() == b"my own movie"
    out = run(cx, f"gaussianem movie {movie} steps 2 framesPerStep 1 size 48,48 replace true")
    assert out["frames"] == 2 and mp4_frame_count(movie) == 2


def test_movie_errors(cx, opened, tmp_path):
    from chimerax.core.errors import UserError
    with pytest.raises(UserError, match=r"\.mp4"):
        run(cx, f"gaussianem movie {tmp_path / 'x.gif'}")
    with pytest.raises(UserError, match="does not exist"):
        run(cx, f"gaussianem movie {tmp_path / 'no' / 'x.mp4'}")
