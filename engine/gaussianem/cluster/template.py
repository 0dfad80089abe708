"""The SLURM job-script template: GaussianEM's default, a site's or a user's own.

A template is a shell script with placeholders in braces (as RELION's queue templates):

=============  ==============================================================================
{job_name}     --job-name (default: gaussianem-<name of the output folder>)
{partition}    --partition
{account}      --account
{time}         --time (SLURM's formats, e.g. 2:00:00 or 1-12:00:00)
{gpus}         --gpus: GPUs on the node (0: none; more than 1: torchrun, one process each)
{cpus}         --cpus: CPU cores per task
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

PLACEHOLDERS = ("job_name", "partition", "account", "time", "gpus", "cpus", "outdir", "output", "workdir",
                "python", "command")
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
#SBATCH --gres=gpu:{gpus}
#SBATCH --chdir={workdir}
#SBATCH --output={output}
#
# GaussianEM training job, written by 'gaussianem train --submit slurm' from its
# default template (gaussianem.cluster.template; --template FILE uses your own).
# Site set-up (modules, conda) goes here, e.g.:
#   module load cuda
#   source /path/to/venv/bin/activate

echo "gaussianem: job $SLURM_JOB_ID on $(hostname) started $(date -Is)" >&2

# 'gaussianem stop RUN' runs 'scancel --signal=TERM --full JOBID': every process of the
# job receives SIGTERM; training saves a checkpoint at its next step and exits. This
# shell waits for it, then cancels the job so that SLURM records it as CANCELLED.
stopped=0
trap 'stopped=1' TERM
{command}
rc=$?
if [ "$stopped" = 1 ] && [ "$rc" != 0 ]; then
    echo "gaussianem: stopped by SIGTERM (exit status $rc); continue with --resume" >&2
    scancel "$SLURM_JOB_ID"
fi
echo "gaussianem: job $SLURM_JOB_ID ended $(date -Is), exit status $rc" >&2
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
