"""The SLURM job-script template: GaussianEM's default, a site's or a user's own.

A template is a shell script with placeholders in braces (as RELION's queue templates):

=============  ==============================================================================
{job_name}     --job-name (default: gaussianem-<name of the output folder>)
{partition}    --partition
{account}      --account
{time}         --time (SLURM's formats, e.g. 2:00:00 or 1-12:00:00)
{gpus}         --gpus: GPUs on the node (0: none; more than 1: torchrun, one process each)
{cpus}         --cpus: CPU cores per task
{mem}          --mem: memory of the job's node (default 16G per training process)
{warn_seconds} seconds before the time limit at which SLURM sends the batch shell SIGUSR1
               (--signal=B:USR1@N: 120, less for limits under 10 minutes)
{stop_file}    the file 'gaussianem stop' writes before it signals the job (the job then
               cancels itself instead of waiting for a requeue): RUN/slurm-$SLURM_JOB_ID.stop
{outdir}       the run folder (absolute)
{output}       the job's output file: RUN/slurm-%j.out (SLURM puts the job id for %j)
{workdir}      the folder the job was submitted from (relative paths refer to it)
{python}       the Python that submitted the job (its engine runs the training)
{command}      the training command line (the same options, without --submit; --progress json)
=============  ==============================================================================

An ``#SBATCH`` line whose placeholder has no value (an option not given, ``--gpus 0``)
is left out, so the cluster's default applies. ``{command}`` is required; any other
``{word}`` in braces that is not one of these names is an error (shell variables written
``${word}`` are left alone). The template used is ``--template FILE``, else the file in
``$GAUSSIANEM_SLURM_TEMPLATE``, else :data:`DEFAULT_SLURM` below
(``python -m gaussianem.cluster.template`` prints it, to start a template of your own).
"""

from __future__ import annotations

import os
import re
import sys

from gaussianem.cluster.slurm import ClusterError

PLACEHOLDERS = ("job_name", "partition", "account", "time", "gpus", "cpus", "mem", "warn_seconds", "stop_file",
                "outdir", "output", "workdir", "python", "command")
TEMPLATE_ENV = "GAUSSIANEM_SLURM_TEMPLATE"

DEFAULT_SLURM = """\
#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --partition={partition}
#SBATCH --account={account}
#SBATCH --time={time}
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={mem}
#SBATCH --gres=gpu:{gpus}
#SBATCH --chdir={workdir}
#SBATCH --output={output}
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{warn_seconds}
#
# GaussianEM training job, written by 'gaussianem train --submit slurm' from its
# default template (gaussianem.cluster.template; --template FILE uses your own).
# Site set-up (modules, conda) goes here, e.g.:
#   module load cuda
#   source /path/to/venv/bin/activate

attempt=$((${SLURM_RESTART_COUNT:-0} + 1))
echo "gaussianem: job $SLURM_JOB_ID attempt $attempt on $(hostname) started $(date -Is)" >&2
rm -f "{stop_file}"

# The training runs with --resume auto: a requeued job (a preemption, 'scontrol requeue',
# the warning below) continues from the run's last checkpoint. Every signal below makes
# the training save a checkpoint after its current step and stop (exit status 130).
# - SIGUSR1 comes from SLURM {warn_seconds} s before the time limit (--signal above), to
#   this shell only: it is passed on to the training (torchrun: --signals-to-handle), and
#   once that has stopped the job is requeued, to go on in a new allocation.
# - SIGTERM reaches every process of the job from SLURM itself: 'gaussianem stop' (which
#   writes the stop file first: the job then cancels itself, CANCELLED), scancel, a
#   requeue or a preemption (SLURM starts the job again), the time limit (TIMEOUT).
warned=0
trap 'warned=1; kill -USR1 "$pid" 2>/dev/null' USR1
trap ':' TERM
{command} &
pid=$!
rc=
while [ -z "$rc" ]; do          # 'wait' returns early when this shell receives a signal
    wait "$pid"; s=$?
    if [ "$s" -le 128 ] || ! kill -0 "$pid" 2>/dev/null; then rc=$s; fi
done
if [ "$warned" = 1 ] && [ "$rc" != 0 ]; then
    echo "gaussianem: SIGUSR1 (time limit near): checkpoint saved; requeueing job $SLURM_JOB_ID to go on" >&2
    scontrol requeue "$SLURM_JOB_ID"
elif [ -e "{stop_file}" ] && [ "$rc" != 0 ]; then
    echo "gaussianem: stopped by 'gaussianem stop' (exit status $rc); continue with --resume" >&2
    scancel "$SLURM_JOB_ID"
fi
echo "gaussianem: job $SLURM_JOB_ID attempt $attempt ended $(date -Is), exit status $rc" >&2
exit $rc
"""

_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load(path: str | None = None) -> tuple[str, str]:
    """(template text, where it came from): ``path``, else ``$GAUSSIANEM_SLURM_TEMPLATE``,
    else the default."""
    path = path or os.environ.get(TEMPLATE_ENV) or None
    if path is None:
        return DEFAULT_SLURM, "default"
    try:
        with open(path) as f:
            return f.read(), os.path.abspath(path)
    except OSError as e:
        raise ClusterError(f"cannot read the SLURM template {path}: {e.strerror}") from None


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def render(text: str, values: dict, where: str = "template") -> str:
    """The job script: placeholders replaced by ``values`` (str() of each; None and ""
    are empty); ``#SBATCH`` lines with an empty placeholder left out."""
    unknown = placeholders(text) - set(PLACEHOLDERS)
    if unknown:
        raise ClusterError(f"SLURM template {where}: unknown placeholder(s) "
                           f"{', '.join('{' + u + '}' for u in sorted(unknown))}; known: "
                           f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    if "command" not in placeholders(text):
        raise ClusterError(f"SLURM template {where} has no {{command}} placeholder: the job would not train")
    vals = {k: "" if values.get(k) is None else str(values[k]) for k in PLACEHOLDERS}
    out = []
    for line in text.splitlines(keepends=True):
        names = placeholders(line)
        if line.lstrip().startswith("#SBATCH") and any(vals[n] == "" for n in names):
            continue
        out.append(_PLACEHOLDER.sub(lambda m: vals[m.group(1)], line))
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(DEFAULT_SLURM)
