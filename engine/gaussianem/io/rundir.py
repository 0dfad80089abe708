"""A training run's folder: the only place that knows its file names.

::

    RUN/config.json           every setting, the inputs, the consensus grid, the engine version
    RUN/gaussians.pt          the base Gaussians fitted to the consensus map (or model)
    RUN/checkpoint.pt         the latest state (atomic); checkpoints/epoch_NNN.pt: the latest epochs'
    RUN/z.pkl                 z as cryoDRGN writes it (a pickled float32 particles x zdim
                              array, as its z.pkl / z.{epoch}.pkl), for cryoDRGN's analysis tools
    RUN/latents.npz           z (particles x zdim, input order), z_conf / z_comp when split;
                              written last: its presence means the run finished
    RUN/log.jsonl             one JSON object per logged step, epoch, recovery and checkpoint
    RUN/attempts.jsonl        one JSON object per start of the training (new, resumed, requeued,
                              restarted) and per stop by a signal (gaussianem status lists them)
    RUN/health.json           the run's health report (gaussianem.train.health)
    RUN/stages.json           coarse to fine: the plan; RUN/coarse/ is the coarse stage's run
    RUN/analysis/             what ``gaussianem analyze`` writes; analysis/embeddings.npz: its
                              latents, PCA scores and UMAP, which the explorer and subsets read

The rules for a training run's folder live here too: a new run goes only into a folder
that holds none (:meth:`RunDir.require_new`), a resumed one only into a folder that holds
one (:meth:`RunDir.require_resumable`); the command line, the SLURM submission, the training
loop and the ChimeraX bundle all ask these two, so that users read the same words.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np

from gaussianem.errors import ResultError, TrainingError
from gaussianem.io.atomic import atomic_output, write_json


class RunDir:
    CONFIG = "config.json"
    GAUSSIANS = "gaussians.pt"
    CHECKPOINT = "checkpoint.pt"
    CHECKPOINTS = "checkpoints"
    LATENTS = "latents.npz"
    Z_PKL = "z.pkl"
    LOG = "log.jsonl"
    ATTEMPTS = "attempts.jsonl"
    HEALTH = "health.json"
    PLAN = "stages.json"
    COARSE = "coarse"
    ANALYSIS = "analysis"
    EMBEDDINGS = "embeddings.npz"      # in ANALYSIS
    # how to go on when a new run is refused, in the command line's words
    NEW_RUN_HINT = ("use --resume to continue it (--resume auto: continue it if there is one, else start it) "
                    "or choose another output folder")

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def __fspath__(self) -> str:
        return self.path

    def file(self, *name: str) -> str:
        return os.path.join(self.path, *name)

    @property
    def config(self) -> str:
        return self.file(self.CONFIG)

    @property
    def gaussians(self) -> str:
        return self.file(self.GAUSSIANS)

    @property
    def checkpoint(self) -> str:
        return self.file(self.CHECKPOINT)

    @property
    def latents_file(self) -> str:
        return self.file(self.LATENTS)

    @property
    def z_pkl(self) -> str:
        return self.file(self.Z_PKL)

    @property
    def log(self) -> str:
        return self.file(self.LOG)

    @property
    def health(self) -> str:
        return self.file(self.HEALTH)

    @property
    def plan(self) -> str:
        return self.file(self.PLAN)

    @property
    def analysis(self) -> str:
        return self.file(self.ANALYSIS)

    @property
    def embeddings(self) -> str:
        """``analysis/embeddings.npz``: what ``gaussianem analyze`` computed of the latents."""
        return self.file(self.ANALYSIS, self.EMBEDDINGS)

    @property
    def coarse(self) -> "RunDir":
        """The coarse stage of a coarse-to-fine run (a run folder of its own)."""
        return RunDir(self.file(self.COARSE))

    def round(self, k: int) -> "RunDir":
        """Consensus round ``k`` (1-based) of a run trained with ``--consensus-rounds`` (a
        run folder of its own)."""
        return RunDir(self.file(f"round{int(k)}"))

    def last_round(self) -> int:
        """The highest consensus round begun in this folder (0: none)."""
        k = 0
        while os.path.isdir(self.round(k + 1).path):
            k += 1
        return k

    def epoch_checkpoint(self, epoch: int) -> str:
        return self.file(self.CHECKPOINTS, f"epoch_{int(epoch):03d}.pt")

    # ------------------------------------------------------------------ state
    def exists(self) -> bool:
        """Whether the folder holds a training run (finished, interrupted, or between
        coarse-to-fine stages)."""
        return any(os.path.exists(p) for p in (self.checkpoint, self.plan, self.coarse.checkpoint))

    def has_checkpoint(self) -> bool:
        return os.path.exists(self.checkpoint)

    # ------------------------------------------------------------------ the rules of a run folder
    def require_new(self, hint: str = NEW_RUN_HINT, holds: bool | None = None) -> None:
        """A new run goes only into a folder that holds no training run (its work is never
        started over silently): :class:`TrainingError` otherwise. ``hint``: how to go on, in
        the caller's words (the bundle names its ``resume true``); ``holds``: whether the
        folder holds one, when the caller has decided it (e.g. rank 0 for every process);
        by default :meth:`exists`."""
        if self.exists() if holds is None else holds:
            raise TrainingError(f"{self.path} already holds a training run: {hint}")

    def require_resumable(self, holds: bool | None = None, missing: str = CHECKPOINT) -> None:
        """A resumed run needs a training run in its folder: :class:`TrainingError`
        otherwise. ``holds``: whether it has one, when the caller has decided it (default
        :meth:`exists`); ``missing``: the file whose absence the message names."""
        if not (self.exists() if holds is None else holds):
            raise TrainingError(f"nothing to resume: {self.path} holds no training run (no {missing})")

    def finished(self) -> bool:
        """The run wrote its latents (the last thing training writes)."""
        return os.path.exists(self.latents_file)

    def read_config(self) -> dict:
        if not os.path.exists(self.config):
            raise ResultError(f"{self.path} is not a GaussianEM result: {self.CONFIG} is missing")
        try:
            with open(self.config) as f:
                return json.load(f)
        except ValueError as e:
            raise ResultError(f"{self.config} is not valid JSON ({e})") from None

    def write_config(self, d: dict) -> None:
        write_json(self.config, d)

    def epochs_asked(self) -> int | None:
        """The epochs the run was asked for (all stages), or None if the folder holds none."""
        if os.path.exists(self.config):
            return self.read_config().get("train", {}).get("epochs")
        if os.path.exists(self.plan):
            with open(self.plan) as f:
                return json.load(f).get("epochs")
        return None

    def epochs_done(self) -> int:
        """Epochs completed so far (from the log; 0 when none)."""
        done = 0
        for rec in self.read_log():
            if rec.get("kind") == "epoch":
                done = max(done, int(rec.get("epoch", 0)))
        return done

    # ------------------------------------------------------------------ latents and log
    def latents(self) -> dict:
        """The arrays of ``latents.npz`` (``z``, and ``z_conf``/``z_comp`` when split)."""
        if not self.finished():
            raise ResultError(f"{self.path} has no {self.LATENTS}: training has not finished (resume it with "
                              f"'gaussianem train ... -o {self.path} --resume')")
        with np.load(self.latents_file) as f:
            return {k: f[k] for k in f.files}

    def write_latents(self, arrays: dict) -> None:
        """Write ``latents.npz`` (last, atomically) and, when ``arrays`` has ``z``, cryoDRGN's
        ``z.pkl`` first: the float32 (N, zdim) array pickled as cryoDRGN's ``z.{epoch}.pkl``
        holds its z means (cryoDRGN pickles z_logvar after them; its tools read the first)."""
        if "z" in arrays:
            z = np.ascontiguousarray(np.asarray(arrays["z"], dtype=np.float32))
            with atomic_output(self.z_pkl) as tmp:
                with open(tmp, "wb") as f:
                    pickle.dump(z, f, protocol=4)
        with atomic_output(self.latents_file) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def append_log(self, rec: dict) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def append_attempt(self, rec: dict) -> None:
        with open(self.file(self.ATTEMPTS), "a") as f:
            f.write(json.dumps(rec) + "\n")

    def read_attempts(self) -> list[dict]:
        return self.read_log(self.file(self.ATTEMPTS))

    def read_log(self, path: str | None = None) -> list[dict]:
        """The log's records (lines that are not JSON, e.g. cut off by a crash, are skipped)."""
        path = path or self.log
        if not os.path.exists(path):
            return []
        out = []
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out
