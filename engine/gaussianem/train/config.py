"""Every training option in one place: :class:`TrainConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from gaussianem import __version__
from gaussianem.errors import TrainingError
from gaussianem.model.losses import LossWeights


DEFAULT_SPLIT = (8, 1)      # latent sizes (conformational, compositional) when none is given


@dataclass
class TrainConfig:
    particles: str
    consensus: str
    outdir: str
    model: str | None = None          # fitted atomic model (.pdb/.cif): Gaussians per residue
    datadir: str | None = None
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    zdim: int | None = None           # an unsplit latent of this size (when conf/comp are not given)
    zdim_conf: int | None = None      # default: split, DEFAULT_SPLIT (when zdim is not given)
    zdim_comp: int | None = None
    downsample: int | None = None     # training box; default min(particle box, 128)
    num_gaussians: int | None = None  # default: gaussians.auto_count (~1.2 per residue)
    init: str = "kmeans"              # kmeans | grid | model
    atoms_per_gaussian: int | None = None  # with init "model": one Gaussian per N heavy atoms
                                           # (default: one per residue)
    threshold: float | None = None
    fit_steps: int = 200
    loss: str = "l2"                  # l2 | l1 (GaussianEM) | corr
    encoder_input: str = "residual"   # residual (image minus consensus projection) | image | both
    lowpass_start: float | None = 15.0  # Angstrom: the image loss starts band-limited here ...
    lowpass_epochs: float | None = None  # ... and reaches Nyquist after this many epochs
                                         # (default, fixed at the start: min(10, epochs / 2))
    width_change: bool = False        # conformational decoder may also change widths
    gaussian_features: bool = True    # encoder also reads per-Gaussian residual correlations
    init_from: str | None = None      # a finished run whose networks start this one (coarse to fine)
    fine_gaussians: int | None = None  # coarse to fine (gaussianem.train.stages): None automatic, N, 0 off
    coarse_epochs: int | None = None  # epochs of the coarse stage (default half of --epochs)
    first_epoch: int = 0              # a fine stage starts here (its low-pass and KL warm-up too)
    kl_warmup: float = 5.0            # epochs over which the KL weight rises from 0
    weights: LossWeights = field(default_factory=LossWeights)
    radius: float | None = None       # neighbour-graph radius (Angstrom)
    max_displacement: float = 20.0
    device: str = "auto"
    amp: bool = False
    seed: int = 0
    invert: bool = False
    window: bool = True
    num_workers: int = 0
    log_every: int = 10
    threads: int | None = None        # CPU threads for torch (default: torch's choice)
    keep_checkpoints: bool = True
    engine_version: str = __version__

    def __post_init__(self):
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        if (self.zdim_conf is None) != (self.zdim_comp is None) or \
                (self.zdim_conf is not None and (self.zdim_conf > 0) != (self.zdim_comp > 0)):
            raise TrainingError("--zdim-conf and --zdim-comp go together: give both (> 0) or neither")
        if self.zdim_conf is None:
            # the split latent is the default: on realistic sets its conformational PC1
            # follows the motion where an unsplit latent's PC1 is the composition
            # (docs/validation.md, robustness matrix); --zdim N alone asks for an unsplit one
            self.zdim_conf, self.zdim_comp = (0, 0) if self.zdim else DEFAULT_SPLIT
        if self.zdim_conf > 0:
            self.zdim = self.zdim_conf + self.zdim_comp
        elif not self.zdim or self.zdim < 1:
            raise TrainingError(f"--zdim must be at least 1, got {self.zdim}")
        if self.lowpass_epochs is None:
            self.lowpass_epochs = min(10.0, (self.epochs - self.first_epoch) / 2)
        if self.encoder_input not in ("residual", "image", "both"):
            raise TrainingError(f"unknown encoder input {self.encoder_input!r}: expected residual, image or both")
        if self.lowpass_start is not None and self.lowpass_start < 0:
            raise TrainingError(f"--lowpass-start must be a resolution in Angstrom (> 0) or 0 for off, "
                                f"got {self.lowpass_start}")
        if self.loss not in ("l1", "l2", "corr"):
            raise TrainingError(f"unknown loss {self.loss!r}: expected l1, l2 or corr")
        if self.fine_gaussians is not None and self.fine_gaussians < 0:
            raise TrainingError(f"--fine-gaussians must be a number of Gaussians (> 0) or 0 for one stage, "
                                f"got {self.fine_gaussians}")
        if self.coarse_epochs is not None and self.coarse_epochs < 1:
            raise TrainingError(f"--coarse-epochs must be at least 1, got {self.coarse_epochs}")
        if self.downsample is not None and (self.downsample % 2 or self.downsample < 8):
            raise TrainingError(f"--downsample must be an even box of at least 8 pixels, got {self.downsample}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = self.weights.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
