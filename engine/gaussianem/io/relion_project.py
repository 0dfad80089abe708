"""A particle file added to a RELION project as a finished External job, so that RELION's
GUI lists it and offers it as input to its jobs (:func:`add_external_job`).

What RELION needs, read from its source (3dem/relion 3.1.4, 4.0.1, 5.0 and master:
``src/pipeliner.cpp``, ``pipeline_jobs.{h,cpp}``, ``gui_mainwindow.cpp``):

* The GUI lists only the processes of the project's ``default_pipeline.star``; a job
  folder that is not there is not shown. A process found ``Running`` becomes
  ``Succeeded`` when ``RELION_JOB_EXIT_SUCCESS`` appears in its folder, its output nodes
  then read from ``RELION_OUTPUT_NODES.star``; that check runs only for processes already
  in the pipeline. So the job is added to the pipeline here, already ``Succeeded``, with
  its output node and edge (and an input edge from the source .star when that is one of
  the project's nodes); the folder also gets ``RELION_JOB_EXIT_SUCCESS``,
  ``RELION_OUTPUT_NODES.star``, ``note.txt`` (the command, in RELION's words),
  ``job.star`` (the job type, so that selecting the job loads the External job form) and a
  copy of the new pipeline, as RELION leaves in a job folder.
* Job folders are ``External/jobNNN/`` with ``NNN`` the pipeline's
  ``rlnPipeLineJobCounter`` (the next job's number), which then goes up by one. An alias
  (``--job-name``) follows RELION's rules and gets its ``External/NAME`` link.
* The pipeline is changed under RELION's lock: the folder ``.relion_lock`` (made with
  ``mkdir``, so only one writer holds it) holding ``lock_default_pipeline.star``, both
  removed after writing; then ``.pipeline_has_changed`` is touched, which makes a running
  GUI read the pipeline again. ``.Nodes/<type>/<node>`` is touched as RELION does (its
  GUI's file browsers look there; RELION rebuilds that folder when it starts).
* Versions: the file is written back in its own dialect and version line. RELION 4 and 5
  write type and status labels (``relion.external``, ``Succeeded``; node type
  ``ParticleGroupMetadata.star.relion`` and a type depth in 5, ``ParticlesData.star.relion``
  in 4, which 5 converts), RELION 3.1 numbers (process type 99, status 2, node type 3).
  Tables that are there keep their columns; a table that is not (a new project) gets both
  forms when the version line cannot tell 3.1 from 4 (``30001``): each version reads the
  columns it knows and ignores the others.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
import uuid
from dataclasses import dataclass, field

from gaussianem.errors import InputError
from gaussianem.io.atomic import write_text

PIPELINE = "default_pipeline.star"
LOCK_DIR, LOCK_FILE = ".relion_lock", "lock_default_pipeline.star"
CHANGED = ".pipeline_has_changed"
BLOCK_ORDER = ("pipeline_general", "pipeline_processes", "pipeline_nodes",
               "pipeline_input_edges", "pipeline_output_edges")
_FORBIDDEN = set('*?()/"\\|#<>&%{}$')


@dataclass
class StarBlock:
    name: str
    labels: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    loop: bool = False


def read_star_blocks(path) -> tuple:
    """``(version or None, [StarBlock])`` of a small STAR file such as RELION's pipeline,
    values kept as the strings they are."""
    path = os.fspath(path)
    with open(path) as f:
        lines = f.read().splitlines()
    version, blocks, cur, header = None, [], None, False
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        where = f"{path}, line {number}"
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*version\s+(\d+)", line)
            if m and version is None:
                version = int(m.group(1))
            continue
        if line.startswith("data_"):
            cur, header = StarBlock(line[5:].strip()), False
            blocks.append(cur)
            continue
        if cur is None:
            raise InputError(f"{where}: {line!r} before any data_ block; not a STAR file")
        if line.startswith("loop_"):
            cur.loop, header = True, True
            continue
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise InputError(f"{where}: {e} in {line!r}") from None
        if line.startswith("_") and (header or not cur.loop):
            if cur.loop:
                cur.labels.append(words[0][1:])
            elif len(words) < 2:
                raise InputError(f"{where}: {words[0]} has no value")
            else:
                cur.labels.append(words[0][1:])
                cur.rows = [(cur.rows[0] if cur.rows else []) + [words[1]]]
            continue
        if not cur.loop or len(words) != len(cur.labels):
            raise InputError(f"{where}: {len(words)} values in data_{cur.name} for "
                             f"{len(cur.labels)} columns ({line!r})")
        header = False
        cur.rows.append(words)
    return version, blocks


def render_star(version, blocks) -> str:
    """STAR text as RELION writes it (empty tables left out, as RELION does)."""
    def value(v):
        v = str(v)
        return f'"{v}"' if not v or any(c.isspace() for c in v) else v

    out = []
    for b in blocks:
        if not b.rows:
            continue
        if version is not None:
            out.append(f"\n# version {version}\n")
        out.append(f"\ndata_{b.name}\n\n")
        if b.loop:
            out.append("loop_ \n" + "".join(f"_{lab} #{i} \n" for i, lab in enumerate(b.labels, 1)))
            out.extend(" ".join(value(v) for v in row) + " \n" for row in b.rows)
        else:
            out.extend(f"_{lab:<40} {value(v)}\n" for lab, v in zip(b.labels, b.rows[0]))
        out.append(" \n")
    return "".join(out)


def _dialect(version, blocks: dict) -> str:
    """"label" (RELION 4, 5), "numeric" (3.1) or "both" (a new 3.1-or-4 project)."""
    labels = {lab for name in ("pipeline_processes", "pipeline_nodes") if name in blocks
              for lab in blocks[name].labels}
    if {"rlnPipeLineProcessTypeLabel", "rlnPipeLineNodeTypeLabel"} & labels:
        return "label"
    if {"rlnPipeLineProcessType", "rlnPipeLineNodeType"} & labels:
        return "numeric"
    return "label" if (version or 0) >= 50001 else "both"


def _columns(kind: str, dialect: str, version) -> list:
    new = (version or 0) >= 50001
    if kind == "processes":
        return (["rlnPipeLineProcessName", "rlnPipeLineProcessAlias"]
                + (["rlnPipeLineProcessTypeLabel", "rlnPipeLineProcessStatusLabel"] if dialect != "numeric" else [])
                + (["rlnPipeLineProcessType", "rlnPipeLineProcessStatus"] if dialect != "label" else []))
    if kind == "nodes":
        return (["rlnPipeLineNodeName"]
                + (["rlnPipeLineNodeTypeLabel"] if dialect != "numeric" else [])
                + (["rlnPipeLineNodeTypeLabelDepth"] if new else [])
                + (["rlnPipeLineNodeType"] if dialect != "label" else []))
    if kind == "job":
        return ((["rlnJobTypeLabel"] if dialect != "numeric" else [])
                + (["rlnJobType"] if dialect != "label" else []) + ["rlnJobIsContinue", "rlnJobIsTomo"])
    return {"input_edges": ["rlnPipeLineEdgeFromNode", "rlnPipeLineEdgeProcess"],
            "output_edges": ["rlnPipeLineEdgeProcess", "rlnPipeLineEdgeToNode"]}[kind]


def _row(path, block: str, columns, values: dict) -> list:
    unknown = [c for c in columns if c not in values]
    if unknown:
        raise InputError(f"{path}: column _{unknown[0]} of data_{block} is not one gaussianem knows how "
                         "to fill; nothing was added to the project (add the particle file in RELION "
                         "with an Import job instead)")
    return [values[c] for c in columns]


def check_alias(name) -> str:
    """RELION's alias rules (``PipeLine::setAliasJob``); spaces become underscores."""
    name = str(name).replace(" ", "_")
    if len(name) < 2 or name.startswith("job") or _FORBIDDEN & set(name):
        raise InputError(f"--job-name {name!r}: RELION takes a name of 2 or more characters that does "
                         "not start with 'job' and has none of * ? ( ) / \" \\ | # < > & % { } $")
    return name


def check_project(project) -> str:
    """The absolute path of a RELION project folder (one with ``default_pipeline.star``)."""
    project = os.path.abspath(os.fspath(project))
    if not os.path.isfile(os.path.join(project, PIPELINE)):
        raise InputError(f"{project}: not a RELION project folder (no {PIPELINE}); give the folder "
                         "RELION runs in, where its GUI was started")
    return project


def _lock(project: str, timeout: float) -> str:
    folder = os.path.join(project, LOCK_DIR)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.mkdir(folder, 0o700)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise InputError(f"{folder} exists: a RELION program is changing {PIPELINE} (or one "
                                 "stopped while doing so). Try again; if no RELION program runs in "
                                 f"{project}, remove {folder}") from None
            time.sleep(0.5)
    lock = os.path.join(folder, LOCK_FILE)
    with open(lock, "w") as f:
        f.write("gaussianem export: adding an External job\n")
    return lock


def _unlock(lock: str) -> None:
    os.remove(lock)
    os.rmdir(os.path.dirname(lock))


def _next_job(project: str, blocks: dict) -> int:
    general = blocks.get("pipeline_general")
    counter = 1
    if general is not None and "rlnPipeLineJobCounter" in general.labels and general.rows:
        counter = int(general.rows[0][general.labels.index("rlnPipeLineJobCounter")])
    procs = blocks.get("pipeline_processes")
    numbers = [int(m.group(1)) for row in (procs.rows if procs else [])
               if (m := re.search(r"/job(\d+)/?$", row[0]))]
    n = max([counter] + [k + 1 for k in numbers])
    while os.path.exists(os.path.join(project, "External", f"job{n:03d}")):
        n += 1
    return n


def _touch_node(project: str, node: str, types, alias) -> None:
    shown = node if alias is None else alias + node.split("/", 2)[2]
    for t in types:
        target = os.path.join(project, ".Nodes", t, *shown.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()


def add_external_job(project, write_particles, *, alias=None, command: str = "", input_star=None,
                     lock_timeout: float = 60.0) -> dict:
    """Add ``External/jobNNN/particles.star`` to the RELION project ``project``.

    ``write_particles(path)`` writes the particle .star file (image names resolving from
    the project folder); it runs before the pipeline is locked. ``alias``: the job's name
    in the GUI (``External/NAME``); ``command``: what made it, for ``note.txt``;
    ``input_star``: the source particle file, linked as the job's input when it is a node
    of the project. Returns ``{"job": "External/jobNNN/", "file": the .star's path,
    "alias": "External/NAME/" or None}``.
    """
    project = check_project(project)
    pipeline = os.path.join(project, PIPELINE)
    name = None if alias is None else check_alias(alias)
    external = os.path.join(project, "External")
    os.makedirs(external, exist_ok=True)
    staging = os.path.join(external, f".gaussianem-{uuid.uuid4().hex[:12]}")
    os.mkdir(staging)
    job_dir = None
    try:
        write_particles(os.path.join(staging, "particles.star"))
        lock = _lock(project, lock_timeout)
        try:
            version, found = read_star_blocks(pipeline)
            blocks = {b.name: b for b in found}
            n = _next_job(project, blocks)
            job, node = f"External/job{n:03d}/", f"External/job{n:03d}/particles.star"
            full_alias = None if name is None else f"External/{name}/"
            procs = blocks.get("pipeline_processes")
            if full_alias is not None:
                aliases = [r[procs.labels.index("rlnPipeLineProcessAlias")] for r in procs.rows] if procs else []
                if full_alias in aliases or os.path.lexists(os.path.join(project, "External", name)):
                    raise InputError(f"--job-name {name}: {project} already has a job or a file called "
                                     f"External/{name}; choose another name")
            dialect = _dialect(version, blocks)
            new = (version or 0) >= 50001
            values = {
                "rlnPipeLineProcessName": job, "rlnPipeLineProcessAlias": full_alias or "None",
                "rlnPipeLineProcessTypeLabel": "relion.external", "rlnPipeLineProcessStatusLabel": "Succeeded",
                "rlnPipeLineProcessType": "99", "rlnPipeLineProcessStatus": "2",
                "rlnPipeLineNodeName": node, "rlnPipeLineNodeType": "3", "rlnPipeLineNodeTypeLabelDepth": "1",
                "rlnPipeLineNodeTypeLabel": ("ParticleGroupMetadata" if new else "ParticlesData") + ".star.relion",
                "rlnPipeLineEdgeProcess": job, "rlnPipeLineEdgeToNode": node,
                "rlnJobTypeLabel": "relion.external", "rlnJobType": "99", "rlnJobIsContinue": "0",
                "rlnJobIsTomo": "0"}
            source = None if input_star is None else os.path.relpath(os.path.abspath(input_star), project)
            nodes = blocks.get("pipeline_nodes")
            if source is not None and nodes is not None and any(r[0] == source for r in nodes.rows):
                values["rlnPipeLineEdgeFromNode"] = source
            general = blocks.setdefault("pipeline_general", StarBlock("pipeline_general"))
            if "rlnPipeLineJobCounter" not in general.labels:
                general.labels.append("rlnPipeLineJobCounter")
                general.rows = [(general.rows[0] if general.rows else []) + ["1"]]
            general.rows[0][general.labels.index("rlnPipeLineJobCounter")] = str(n + 1)
            kinds = [("processes", True), ("nodes", True), ("output_edges", True),
                     ("input_edges", "rlnPipeLineEdgeFromNode" in values)]
            for kind, wanted in kinds:
                if not wanted:
                    continue
                block = blocks.setdefault(f"pipeline_{kind}", StarBlock(f"pipeline_{kind}", loop=True))
                if not block.labels:
                    block.labels = _columns(kind, dialect, version)
                block.rows.append(_row(pipeline, block.name, block.labels, values))

            node_cols = _columns("nodes", dialect, version)
            out_nodes = StarBlock("output_nodes", node_cols, [[values[c] for c in node_cols]], loop=True)
            job_cols = _columns("job", dialect, version)
            files = {"RELION_OUTPUT_NODES.star": render_star(version, [out_nodes]),
                     "job.star": render_star(version, [StarBlock("job", job_cols, [[values[c] for c in job_cols]])]),
                     "note.txt": (f"\n ++++ Executing new job on {time.ctime()}\n ++++ with the following "
                                  f"command(s): \n{command}\n ++++ \n"),
                     "RELION_JOB_EXIT_SUCCESS": ""}
            for fname, text in files.items():
                write_text(os.path.join(staging, fname), text)
            job_dir = os.path.join(project, *job.strip("/").split("/"))
            os.rename(staging, job_dir)
            ordered = [blocks[b] for b in BLOCK_ORDER if b in blocks] + [
                b for b in found if b.name not in BLOCK_ORDER]
            write_text(pipeline, render_star(version, ordered))
            try:  # RELION remakes these itself when missing
                shutil.copyfile(pipeline, os.path.join(job_dir, PIPELINE))
                if name is not None:
                    os.symlink(f"../{job}", os.path.join(project, "External", name))
                types = ([values["rlnPipeLineNodeTypeLabel"].split(".")[0]] if dialect != "numeric" else []) + (
                    ["3"] if dialect != "label" else [])
                _touch_node(project, node, types, full_alias)
            except OSError:
                pass
        except BaseException:
            if job_dir is not None and os.path.isdir(job_dir):
                shutil.rmtree(job_dir, ignore_errors=True)
            raise
        finally:
            _unlock(lock)
        open(os.path.join(project, CHANGED), "a").close()
        os.utime(os.path.join(project, CHANGED))
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
    return {"job": job, "file": os.path.join(job_dir, "particles.star"), "alias": full_alias}
