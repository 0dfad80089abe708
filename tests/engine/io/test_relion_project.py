"""Particle files added to a RELION project as finished External jobs
(:mod:`gaussianem.io.relion_project`), against pipelines written here in the layouts
RELION 5 (version 50001, labels and type depth), RELION 4 (30001, labels) and RELION 3.1
(30001, numbers) write, and a new project's pipeline (only the job counter)."""

import os

import mrcfile
import numpy as np
import pytest
import starfile

from gaussianem.errors import InputError
from gaussianem.io.particles import load_particles, write_subset
from gaussianem.io.relion_project import (LOCK_DIR, add_external_job, read_star_blocks,
                                          render_star)
from gaussianem.io.relion_write import write_star

RELION5 = """
# version 50001

data_pipeline_general

_rlnPipeLineJobCounter                       3
 

# version 50001

data_pipeline_processes

loop_ 
_rlnPipeLineProcessName #1 
_rlnPipeLineProcessAlias #2 
_rlnPipeLineProcessTypeLabel #3 
_rlnPipeLineProcessStatusLabel #4 
Import/job001/       None relion.import.other  Succeeded 
Extract/job002/ Extract/first/ relion.extract  Succeeded 
 

# version 50001

data_pipeline_nodes

loop_ 
_rlnPipeLineNodeName #1 
_rlnPipeLineNodeTypeLabel #2 
_rlnPipeLineNodeTypeLabelDepth #3 
Import/job001/coords.star MicrographCoordsGroup.star.relion            1 
Extract/job002/particles.star ParticleGroupMetadata.star.relion.extract            1 
 

# version 50001

data_pipeline_input_edges

loop_ 
_rlnPipeLineEdgeFromNode #1 
_rlnPipeLineEdgeProcess #2 
Import/job001/coords.star Extract/job002/ 
 

# version 50001

data_pipeline_output_edges

loop_ 
_rlnPipeLineEdgeProcess #1 
_rlnPipeLineEdgeToNode #2 
Import/job001/ Import/job001/coords.star 
Extract/job002/ Extract/job002/particles.star 
 
"""

RELION31 = """
# version 30001

data_pipeline_general

_rlnPipeLineJobCounter                       7
 

# version 30001

data_pipeline_processes

loop_ 
_rlnPipeLineProcessName #1 
_rlnPipeLineProcessAlias #2 
_rlnPipeLineProcessType #3 
_rlnPipeLineProcessStatus #4 
Extract/job002/       None            5            2 
 

# version 30001

data_pipeline_nodes

loop_ 
_rlnPipeLineNodeName #1 
_rlnPipeLineNodeType #2 
Extract/job002/particles.star            3 
 

# version 30001

data_pipeline_output_edges

loop_ 
_rlnPipeLineEdgeProcess #1 
_rlnPipeLineEdgeToNode #2 
Extract/job002/ Extract/job002/particles.star 
 
"""

NEW_PROJECT = """
# version 30001

data_pipeline_general

_rlnPipeLineJobCounter                       1
 
"""


def _project(tmp_path, pipeline=RELION5):
    """A project whose Extract/job002/particles.star names 4 images of one stack."""
    proj = tmp_path / "proj"
    (proj / "Extract" / "job002" / "Movies").mkdir(parents=True)
    (proj / "default_pipeline.star").write_text(pipeline)
    stack = proj / "Extract" / "job002" / "Movies" / "mic1.mrcs"
    with mrcfile.new(stack) as m:
        m.set_data(np.zeros((4, 8, 8), np.float32))
        m.voxel_size = 2.0
    return proj


def _particles(proj):
    """The project's particle file (image names relative to the project) and its data."""
    from gaussianem.io.particle_data import ParticleData
    from gaussianem.physics.ctf import CTFParams
    n = 4
    star = proj / "Extract" / "job002" / "particles.star"
    ctf = CTFParams(*(np.full(n, v) for v in (15000.0, 14000.0, 10.0, 300.0, 2.7, 0.1, 0.0, 0.0)))
    data = ParticleData(
        image_paths=np.array([str(proj / "Extract/job002/Movies/mic1.mrcs")] * n, dtype=object),
        image_indices=np.arange(n), rotations=np.tile(np.eye(3), (n, 1, 1)), shifts=np.zeros((n, 2)),
        ctf=ctf, apix=np.full(n, 2.0), box=8, optics_group=np.ones(n, np.int64), source=str(star))
    write_star(star, data, image_names=[f"{i + 1:06d}@Extract/job002/Movies/mic1.mrcs" for i in range(n)])
    return star, load_particles(star)


def _export(proj, star, data, idx=(1, 3), **kw):
    return add_external_job(proj, lambda path: write_subset(data, list(idx), path, names_from=proj),
                            input_star=str(star), **kw)


def _blocks(path):
    version, blocks = read_star_blocks(path)
    return version, {b.name: b for b in blocks}


def _rows(block):
    return [dict(zip(block.labels, r)) for r in block.rows]


def test_relion5_project_gets_a_finished_external_job(tmp_path):
    proj = _project(tmp_path)
    star, data = _particles(proj)
    out = _export(proj, star, data, command="gaussianem export run --kmeans 2 --cluster 1")
    assert out["job"] == "External/job003/" and out["alias"] is None
    job = proj / "External" / "job003"
    assert out["file"] == str(job / "particles.star")
    # what RELION leaves in an External job's folder
    assert (job / "RELION_JOB_EXIT_SUCCESS").is_file()
    assert "gaussianem export run --kmeans 2 --cluster 1" in (job / "note.txt").read_text()
    assert " ++++ with the following command(s): " in (job / "note.txt").read_text()
    nodes = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert nodes["rlnPipeLineNodeName"].tolist() == ["External/job003/particles.star"]
    assert nodes["rlnPipeLineNodeTypeLabel"].tolist() == ["ParticleGroupMetadata.star.relion"]
    head = starfile.read(job / "job.star", always_dict=True)["job"]
    assert head["rlnJobTypeLabel"] == "relion.external" and int(head["rlnJobIsContinue"]) == 0
    assert (job / "default_pipeline.star").read_text() == (proj / "default_pipeline.star").read_text()
    # the pipeline: one process, its node and edges added, nothing else changed
    version, b = _blocks(proj / "default_pipeline.star")
    assert version == 50001
    assert (proj / "default_pipeline.star").read_text().count("# version 50001") == 5
    assert b["pipeline_general"].rows == [["4"]]
    assert _rows(b["pipeline_processes"])[-1] == {
        "rlnPipeLineProcessName": "External/job003/", "rlnPipeLineProcessAlias": "None",
        "rlnPipeLineProcessTypeLabel": "relion.external", "rlnPipeLineProcessStatusLabel": "Succeeded"}
    assert _rows(b["pipeline_nodes"])[-1] == {
        "rlnPipeLineNodeName": "External/job003/particles.star",
        "rlnPipeLineNodeTypeLabel": "ParticleGroupMetadata.star.relion", "rlnPipeLineNodeTypeLabelDepth": "1"}
    assert b["pipeline_output_edges"].rows[-1] == ["External/job003/", "External/job003/particles.star"]
    assert b["pipeline_input_edges"].rows[-1] == ["Extract/job002/particles.star", "External/job003/"]
    _, before = _blocks_of_text(tmp_path, RELION5)
    for name, block in before.items():
        assert b[name].labels == block.labels
        assert b[name].rows[:len(block.rows)] == block.rows or name == "pipeline_general"
    # starfile reads it as RELION does: five tables
    tables = starfile.read(proj / "default_pipeline.star", always_dict=True)
    assert len(tables["pipeline_processes"]) == 3 and len(tables["pipeline_nodes"]) == 3
    # lock released, the GUI told, the node's browser entry made
    assert not (proj / LOCK_DIR).exists()
    assert (proj / ".pipeline_has_changed").exists()
    assert (proj / ".Nodes" / "ParticleGroupMetadata" / "External" / "job003" / "particles.star").exists()
    assert [p.name for p in (proj / "External").iterdir()] == ["job003"]   # no staging folder left
    # image names resolve from the project folder, as RELION reads them
    names = starfile.read(job / "particles.star", always_dict=True)["particles"]["rlnImageName"]
    assert names.tolist() == ["000002@Extract/job002/Movies/mic1.mrcs", "000004@Extract/job002/Movies/mic1.mrcs"]
    assert all((proj / n.split("@")[1]).is_file() for n in names)
    back = load_particles(job / "particles.star")
    assert back.image_indices.tolist() == [1, 3]


def _blocks_of_text(tmp_path, text):
    p = tmp_path / "copy.star"
    p.write_text(text)
    return _blocks(p)


def test_next_jobs_and_aliases(tmp_path):
    proj = _project(tmp_path)
    star, data = _particles(proj)
    _export(proj, star, data)
    out = _export(proj, star, data, alias="open state")
    assert out["job"] == "External/job004/" and out["alias"] == "External/open_state/"
    link = proj / "External" / "open_state"
    assert link.is_symlink() and os.readlink(link) == "../External/job004/"
    assert (link / "particles.star").is_file()
    _, b = _blocks(proj / "default_pipeline.star")
    assert b["pipeline_general"].rows == [["5"]]
    assert _rows(b["pipeline_processes"])[-1]["rlnPipeLineProcessAlias"] == "External/open_state/"
    assert (proj / ".Nodes" / "ParticleGroupMetadata" / "External" / "open_state" / "particles.star").exists()
    # RELION's alias rules; a name in use
    for bad in ("job7", "a/b", "x", "c$d"):
        with pytest.raises(InputError, match="--job-name"):
            _export(proj, star, data, alias=bad)
    with pytest.raises(InputError, match="already has a job or a file called External/open_state"):
        _export(proj, star, data, alias="open_state")
    # a job folder already there (e.g. made by hand) is skipped
    (proj / "External" / "job005").mkdir()
    assert _export(proj, star, data)["job"] == "External/job006/"
    assert sorted(p.name for p in (proj / "External").iterdir()) == [
        "job003", "job004", "job005", "job006", "open_state"]


def test_relion31_pipeline_keeps_numbers(tmp_path):
    proj = _project(tmp_path, RELION31)
    star, data = _particles(proj)
    out = _export(proj, star, data)
    assert out["job"] == "External/job007/"
    version, b = _blocks(proj / "default_pipeline.star")
    assert version == 30001
    assert _rows(b["pipeline_processes"])[-1] == {
        "rlnPipeLineProcessName": "External/job007/", "rlnPipeLineProcessAlias": "None",
        "rlnPipeLineProcessType": "99", "rlnPipeLineProcessStatus": "2"}
    assert _rows(b["pipeline_nodes"])[-1] == {"rlnPipeLineNodeName": "External/job007/particles.star",
                                              "rlnPipeLineNodeType": "3"}
    assert b["pipeline_input_edges"].labels == ["rlnPipeLineEdgeFromNode", "rlnPipeLineEdgeProcess"]
    assert b["pipeline_input_edges"].rows == [["Extract/job002/particles.star", "External/job007/"]]
    head = starfile.read(proj / "External" / "job007" / "job.star", always_dict=True)["job"]
    assert int(head["rlnJobType"]) == 99 and "rlnJobTypeLabel" not in head
    assert (proj / ".Nodes" / "3" / "External" / "job007" / "particles.star").exists()


def test_new_project_gets_both_forms(tmp_path):
    """Version 30001 without tables is RELION 3.1 or 4: each reads the columns it knows."""
    proj = _project(tmp_path, NEW_PROJECT)
    star, data = _particles(proj)
    _export(proj, star, data)   # the source is no node of this pipeline: no input edge
    _, b = _blocks(proj / "default_pipeline.star")
    assert set(b) == {"pipeline_general", "pipeline_processes", "pipeline_nodes", "pipeline_output_edges"}
    assert _rows(b["pipeline_processes"]) == [{
        "rlnPipeLineProcessName": "External/job001/", "rlnPipeLineProcessAlias": "None",
        "rlnPipeLineProcessTypeLabel": "relion.external", "rlnPipeLineProcessStatusLabel": "Succeeded",
        "rlnPipeLineProcessType": "99", "rlnPipeLineProcessStatus": "2"}]
    assert _rows(b["pipeline_nodes"]) == [{"rlnPipeLineNodeName": "External/job001/particles.star",
                                           "rlnPipeLineNodeTypeLabel": "ParticlesData.star.relion",
                                           "rlnPipeLineNodeType": "3"}]
    assert b["pipeline_general"].rows == [["2"]]


def test_nothing_changes_when_it_cannot_be_added(tmp_path):
    proj = _project(tmp_path)
    star, data = _particles(proj)
    text = (proj / "default_pipeline.star").read_text()
    with pytest.raises(InputError, match=r"not a RELION project folder \(no default_pipeline.star\)"):
        _export(tmp_path / "elsewhere", star, data)
    # a RELION program holds the lock
    (proj / LOCK_DIR).mkdir()
    with pytest.raises(InputError, match=r"\.relion_lock exists"):
        _export(proj, star, data, lock_timeout=0.2)
    (proj / LOCK_DIR).rmdir()
    # a column this code does not know how to fill
    (proj / "default_pipeline.star").write_text(text.replace("_rlnPipeLineProcessStatusLabel #4 ",
                                                             "_rlnPipeLineProcessStatusLabel #4 \n_rlnFuture #5 ")
                                                .replace("Succeeded \n", "Succeeded x \n"))
    changed = (proj / "default_pipeline.star").read_text()
    with pytest.raises(InputError, match="column _rlnFuture of data_pipeline_processes"):
        _export(proj, star, data)
    assert (proj / "default_pipeline.star").read_text() == changed
    # the writer fails: no folder, no lock, pipeline as it was
    (proj / "default_pipeline.star").write_text(text)

    def broken(path):
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        add_external_job(proj, broken)
    assert (proj / "default_pipeline.star").read_text() == text
    assert list((proj / "External").iterdir()) == [] and not (proj / LOCK_DIR).exists()


def test_star_blocks_round_trip(tmp_path):
    for text in (RELION5, RELION31, NEW_PROJECT):
        version, blocks = _blocks_of_text(tmp_path, text)
        p = tmp_path / "again.star"
        p.write_text(render_star(version, list(blocks.values())))
        again_version, again = _blocks(p)
        assert again_version == version
        assert {k: (v.labels, v.rows) for k, v in again.items()} == {k: (v.labels, v.rows) for k, v in blocks.items()}
    blocks = [b for b in _blocks_of_text(tmp_path, RELION5)[1].values()]
    blocks[1].rows.append(["External/job009/", "my alias", "relion.external", "Succeeded"])
    p.write_text(render_star(50001, blocks))
    assert _rows(_blocks(p)[1]["pipeline_processes"])[-1]["rlnPipeLineProcessAlias"] == "my alias"
