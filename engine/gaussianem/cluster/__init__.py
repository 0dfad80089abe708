"""Training on a cluster: SLURM job scripts from an editable template, submission,
state and stopping (``gaussianem train --submit slurm``, ``gaussianem status``,
``gaussianem stop``; docs/cluster.md).

* :mod:`~gaussianem.cluster.slurm`: the SLURM commands (sbatch, squeue, sacct, scancel);
* :mod:`~gaussianem.cluster.template`: the job-script template and its placeholders;
* :mod:`~gaussianem.cluster.submit`: a training's job script, its submission and the
  job record ``RUN/slurm.json``;
* :mod:`~gaussianem.cluster.status`: what a run is doing (SLURM state and training log),
  and stopping it.
"""
