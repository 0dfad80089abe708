"""The engine's commands run from the session as jobs, followed as they go:

- :mod:`.engine`: how the engine is run (ChimeraX's Python, the same ``gaussianem``);
- :mod:`.local`: a job in its own process here (:class:`~.local.EngineJob`, with a
  :class:`~.local.Reader` for what a training's, an analysis' or a reconstruction's lines mean);
- :mod:`.slurm`: a training submitted to SLURM (:class:`~.slurm.ClusterJob`);
- :mod:`.registry`: the session's jobs (``gaussianem jobs``, ``gaussianem stop``), stopped at exit;
- :mod:`.inputs`: a new run's inputs saved from open models, and the checks before a job;
- :mod:`.arguments`: the engine command lines of ``analyze`` and ``reconstruct``.
"""
