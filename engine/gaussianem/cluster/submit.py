"""``gaussianem train ... --submit slurm``: a training as a SLURM batch job.

The job script is the template (:mod:`gaussianem.cluster.template`) filled in with the
same training command (every option as given, paths made absolute, ``--resume auto`` so
that a requeued job continues, ``--progress json``, without the submission options), run
by ``torchrun --standalone --nproc_per_node N`` when ``--gpus N`` is more than 1. It is
written to ``RUN/slurm_job.sh``, submitted with ``sbatch --parsable`` from the current
folder, then kept as ``RUN/slurm-JOBID.sh`` beside the job's output
``RUN/slurm-JOBID.out``. The job record ``RUN/slurm.json``
(:func:`write_record`) holds the job id, the script, the output file, the submission
time and the command; earlier jobs of the same run (e.g. before a ``--resume``) are kept
in its ``earlier`` list.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time

from gaussianem.cluster import slurm, template
from gaussianem.errors import InputError, TrainingError
from gaussianem.io.atomic import write_json, write_text
from gaussianem.io.rundir import RunDir
from gaussianem.train.config import WEIGHT_FLAGS, TrainConfig, command_line, from_arguments
from gaussianem.train.resume import decide

RECORD = "slurm.json"
SCRIPT = "slurm_job.sh"
SCHEDULERS = ("slurm",)
PATH_FIELDS = ("particles", "consensus", "outdir", "model", "datadir", "init_from")
STOP_FILE = "slurm-{job_id}.stop"      # written by 'gaussianem stop' before it signals the job
MEM_PER_PROCESS_GB = 16                # default --mem: per training process (GPU)
WARN_SECONDS = 120                     # SIGUSR1 this long before the time limit
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The submission options of ``gaussianem train``."""
    g = p.add_argument_group("cluster submission (docs/cluster.md)")
    g.add_argument("--submit", choices=SCHEDULERS, default=None,
                   help="do not train here: write a batch job for this training from a template and submit it "
                        "(sbatch); the job id goes to OUTDIR/slurm.json. Follow it with 'gaussianem status OUTDIR', "
                        "stop it with 'gaussianem stop OUTDIR'")
    g.add_argument("--partition", metavar="NAME", help="with --submit: SLURM partition (default: the cluster's)")
    g.add_argument("--gpus", type=int, default=0, metavar="N",
                   help="with --submit: GPUs on the node; more than 1 trains with torchrun, one process per GPU "
                        "(default: 0, none requested)")
    g.add_argument("--cpus", type=int, default=None, metavar="N", help="with --submit: CPU cores per task")
    g.add_argument("--mem", metavar="SIZE", help=f"with --submit: memory of the node for the job, e.g. 64G (default: "
                                               f"{MEM_PER_PROCESS_GB}G per GPU, at least {MEM_PER_PROCESS_GB}G)")
    g.add_argument("--time", metavar="LIMIT", help="with --submit: time limit, e.g. 12:00:00 or 2-00:00:00 (default: the "
                                  "partition's)")
    g.add_argument("--account", metavar="NAME", help="with --submit: account to charge")
    g.add_argument("--job-name", metavar="NAME", help="with --submit: job name (default: gaussianem-<OUTDIR's name>)")
    g.add_argument("--template", metavar="FILE",
                   help=f"with --submit: job-script template with {{placeholders}} (default: ${template.TEMPLATE_ENV} "
                        f"if set, else the built-in one; 'python -m gaussianem.cluster.template' prints it)")
    g.add_argument("--dry-run", action="store_true",
                   help="with --submit: write the job script to OUTDIR and print it, do not submit")


SUBMIT_ONLY = {"partition": None, "gpus": 0, "cpus": None, "mem": None, "time": None, "account": None,
               "job_name": None, "template": None, "dry_run": False}


def check_local(args: argparse.Namespace) -> None:
    """A training run here (no ``--submit``) takes none of the submission options."""
    given = [k for k, default in SUBMIT_ONLY.items() if getattr(args, k, default) != default]
    if given:
        raise InputError(f"{', '.join('--' + k.replace('_', '-') for k in given)}: only with --submit slurm "
                         f"(a job's resources); without --submit the training runs here")


def training_argv(args: argparse.Namespace) -> list[str]:
    """``train`` and its options as given on the command line (paths absolute), for the
    job: without the submission options, with ``--progress json``."""
    names = {f.name for f in TrainConfig.__dataclass_fields__.values()}
    given = {k: v for k, v in vars(args).items() if k in names}
    for k in PATH_FIELDS:
        if given.get(k) is not None:
            given[k] = os.path.abspath(os.path.expanduser(given[k]))
    argv = ["train", *command_line(given)]
    for flag, name, _ in WEIGHT_FLAGS:
        if getattr(args, "weight_" + name, None) is not None:
            argv += [flag, repr(float(getattr(args, "weight_" + name)))]
    argv += ["--resume", "auto"]              # a requeued job goes on from its checkpoint
    if getattr(args, "debug", False):
        argv.append("--debug")
    return argv + ["--progress", "json"]


def job_command(train_argv: list[str], gpus: int = 0, python: str | None = None) -> list[str]:
    """The command the job runs: the engine's CLI under ``python``, or torchrun with one
    process per GPU when ``gpus`` > 1."""
    python = python or sys.executable
    if gpus > 1:
        torchrun = os.path.join(os.path.dirname(python), "torchrun")
        launcher = [torchrun] if os.access(torchrun, os.X_OK) else [python, "-m", "torch.distributed.run"]
        # torchrun passes SIGUSR1 (SLURM's warning) on to its processes; by default it would die of it
        return [*launcher, "--standalone", "--nproc_per_node", str(gpus), "--signals-to-handle", TORCHRUN_SIGNALS,
                "-m", "gaussianem.cli.main", *train_argv]
    return [python, "-m", "gaussianem.cli.main", *train_argv]


def time_limit_seconds(limit: str | None) -> int | None:
    """SLURM's ``--time`` formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)
    in seconds; None when not given or not understood."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", (limit or "").strip())
    if not m:
        return None
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is None:
        h, mi, sec = (a, b, c) if c is not None else (0, a, b or 0)
    else:
        h, mi, sec = a, b or 0, c or 0
    return (days or 0) * 86400 + h * 3600 + mi * 60 + sec


def warning_seconds(limit: str | None) -> int:
    """When SLURM warns the job (SIGUSR1) before its time limit: WARN_SECONDS, or a fifth
    of a limit under ten minutes (a warning longer than the job would requeue it at once)."""
    total = time_limit_seconds(limit)
    return WARN_SECONDS if total is None or total >= 10 * 60 else max(5, total // 5)


def read_record(run: RunDir) -> dict | None:
    """``RUN/slurm.json``, or None for a run never submitted."""
    path = run.file(RECORD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            rec = json.load(f)
    except ValueError as e:
        raise slurm.ClusterError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(rec, dict) or "job_id" not in rec:
        raise slurm.ClusterError(f"{path} holds no job id: not a GaussianEM job record")
    return rec


def write_record(run: RunDir, rec: dict) -> None:
    old = read_record(run)
    if old is not None:
        rec["earlier"] = old.pop("earlier", []) + [old]
    write_json(run.file(RECORD), rec)


def _check_inputs(args: argparse.Namespace) -> RunDir:
    """Fail here, not in the queue: the settings, the input files, the output folder."""
    cfg = from_arguments(args, resume=args.resume)
    for name in ("particles", "consensus", "model"):
        path = getattr(cfg, name)
        if path and not os.path.exists(path):
            raise InputError(f"--{name} file {path} does not exist" if name != "particles"
                             else f"particle file {path} does not exist")
    run = RunDir(cfg.outdir)
    given = {k for k in vars(args) if k in TrainConfig.__dataclass_fields__ or k.startswith("weight_")}
    if decide(run, cfg, args.resume, given).action == "finished":      # also: another run's settings
        raise TrainingError(f"{run.path} has finished its {run.epochs_done()} epoch(s): nothing to submit "
                            f"(--epochs N with a larger N trains it longer)")
    if args.gpus < 0 or (args.cpus is not None and args.cpus < 1):
        raise InputError("--gpus must be 0 or more and --cpus 1 or more")
    return run


def submit(args: argparse.Namespace, echo=print) -> dict:
    """Write the job script for this training and submit it (or, with ``--dry-run``,
    only write it); returns the job record."""
    run = _check_inputs(args)
    if not args.dry_run:
        slurm.require("sbatch")                     # before anything is written
    old = read_record(run)
    if old is not None and not args.dry_run:
        state = slurm.job_state(old["job_id"], old.get("cluster"))["state"]
        if state in slurm.ACTIVE:
            raise slurm.ClusterError(f"{run.path} already has SLURM job {old['job_id']} ({state}): wait for it or "
                                     f"stop it with 'gaussianem stop {run.path}'")
    text, source = template.load(args.template)
    command = job_command(training_argv(args), args.gpus)
    values = {"job_name": args.job_name or f"gaussianem-{os.path.basename(run.path)}",
              "partition": args.partition, "account": args.account, "time": args.time,
              "gpus": args.gpus or None, "cpus": args.cpus,
              "mem": args.mem or f"{MEM_PER_PROCESS_GB * max(1, args.gpus)}G",
              "warn_seconds": warning_seconds(args.time),
              "stop_file": run.file(STOP_FILE.format(job_id="$SLURM_JOB_ID")), "outdir": run.path,
              "output": run.file("slurm-%j.out"), "workdir": os.getcwd(), "python": sys.executable,
              "command": shlex.join(command)}
    script_text = template.render(text, values, where=source)
    os.makedirs(run.path, exist_ok=True)
    script = run.file(SCRIPT)
    write_text(script, script_text)
    os.chmod(script, 0o755)
    if args.dry_run:
        echo(script_text.rstrip("\n"))
        echo(f"# job script written to {script} (template: {source}); not submitted (--dry-run)")
        return {"script": script, "template": source, "command": command}
    try:
        job_id, cluster = slurm.sbatch(script, cwd=os.getcwd())
    except slurm.ClusterError as e:
        raise slurm.ClusterError(f"{e} (job script: {script})") from None
    kept = run.file(f"slurm-{job_id}.sh")
    os.replace(script, kept)
    now = time.time()
    rec = {"scheduler": "slurm", "job_id": job_id, "cluster": cluster, "script": kept,
           "output": run.file(f"slurm-{job_id}.out"), "template": source,
           "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)), "submitted_unix": now,
           "workdir": os.getcwd(), "command": command,
           "options": {k: v for k, v in values.items() if k in ("job_name", "partition", "account", "time",
                                                                   "gpus", "cpus", "mem")}}
    write_record(run, rec)
    echo(f"submitted SLURM job {job_id}{' on cluster ' + cluster if cluster else ''}: training into {run.path}")
    echo(f"  script {kept}, output {rec['output']}")
    echo(f"  follow it: gaussianem status {run.path}    stop it: gaussianem stop {run.path}")
    return rec
