"""Every training option in one place: :class:`TrainConfig`.

Each field carries its default, its help text and (through its name) its command-line
flag: ``batch_size`` is ``--batch-size``. The CLI's parser is built from the fields
(:func:`add_arguments`, :func:`from_arguments`), and the ChimeraX bundle turns its keywords
into the same flags with :func:`command_line`, so an option is added or changed here and
nowhere else. The loss weights have their own dataclass (:class:`LossWeights`); four of
them have flags (:data:`WEIGHT_FLAGS`). :func:`resumed` is the one place that decides
what a resumed run keeps from its saved settings.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from gaussianem import __version__
from gaussianem.errors import TrainingError
from gaussianem.io.rundir import RunDir
from gaussianem.model.losses import LossWeights
from gaussianem.model.networks import DEFAULT_SPLIT

DEFAULT_EPOCHS = 20


def option(default=None, help: str = "", *, flag: str | None = None, choices=None, metavar=None,
           cli: bool = True, positional: bool = False, required: bool = False, default_text: str | None = None):
    """A :class:`TrainConfig` field with its command-line description."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "cli": cli,
            "positional": positional, "required": required, "default_text": default_text}
    if positional or required:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    particles: str = option(help="particles: RELION .star or cryoSPARC .cs", positional=True)
    consensus: str = option(help="consensus map (.mrc) the poses refer to", required=True)
    outdir: str = option(help="output folder", flag="-o", required=True)
    model: str | None = option(None, "fitted atomic model (.pdb/.cif): with --init model, one Gaussian per "
                                     "residue; maps and models from one latent space")
    datadir: str | None = option(None, "folder to resolve image paths against (default: the particle file's)")
    poses: str | None = option(None, "cryoDRGN inputs: pose.pkl (with --ctf; PARTICLES is then the images: "
                                     ".mrcs, a .txt list of stacks, or a .star/.cs)", metavar="PKL")
    ctf: str | None = option(None, "cryoDRGN inputs: ctf.pkl (with --poses)", metavar="PKL")
    ind: str | None = option(None, "cryoDRGN inputs: ind.pkl, the particles to use", metavar="PKL")
    epochs: int = option(DEFAULT_EPOCHS, "epochs in all, both stages of coarse to fine included (with "
                                         "--resume: default the run's own)")
    batch_size: int = option(64, "particles per step, all processes together (torchrun: shared between them)")
    lr: float = option(2e-3, "learning rate")
    zdim: int | None = option(None, "an unsplit latent of this size (one decoder moves and re-weights "
                                    "Gaussians); default: the split latent below")
    zdim_conf: int | None = option(None, "split latent, conformational part: moves Gaussians only",
                                   default_text=str(DEFAULT_SPLIT[0]))
    zdim_comp: int | None = option(None, "split latent, compositional part: changes amplitudes only",
                                   default_text=str(DEFAULT_SPLIT[1]))
    downsample: int | None = option(None, "train at this box (Fourier cropping)", default_text="min(box, 128)")
    num_gaussians: int | None = option(
        None, "number of Gaussians (at most one per map voxel above the threshold)", default_text=(
        "one per residue's worth of the molecule's volume, measured on the map smoothed to 2 A sigma: about "
        "1.2 per residue"))
    init: str = option("kmeans", "Gaussian initialisation ('model' needs --model)",
                       choices=["kmeans", "grid", "model"])
    atoms_per_gaussian: int | None = option(None, "with --init model: one Gaussian per N heavy atoms",
                                            default_text="one per residue")
    threshold: float | None = option(None, "map level for initialisation", default_text="mean + 3 sd")
    fit_steps: int = option(200, "steps fitting the Gaussians to the consensus map", cli=False)
    loss: str = option("l2", "image loss: l2, l1 (GaussianEM's) or corr", choices=["l1", "l2", "corr"])
    encoder_input: str = option("residual", "what the image encoder sees: the image minus the consensus "
                                            "projection with the particle's pose and CTF (residual), the image "
                                            "alone (as cryoDRGN), or both", choices=["residual", "image", "both"])
    lowpass_start: float | None = option(15.0, "the image loss starts low-pass filtered at this resolution in "
                                               "Angstrom and widens to Nyquist over --lowpass-epochs (0: full "
                                               "band from the start)")
    lowpass_epochs: float | None = option(None, "epochs over which the loss band widens to Nyquist",
                                          default_text="10, or half of --epochs when that is less than 20")
    centre_by: str = option("core", "each particle's common translation (a pose error) is removed from the "
                                    "displacements: core, the mass-weighted mean of the parts that move least (a "
                                    "domain moving against the rest keeps its motion); mass, of all (the default "
                                    "before session 12: it drags the rest against a moving domain); median, per "
                                    "axis; none: kept (poses trusted). docs/validation.md, \"The whole motion\"",
                            choices=["core", "mass", "median", "none"])
    segments: int = option(0, "rigid segments of the Gaussians that the latent moves as wholes, under the "
                              "per-Gaussian displacements (0: none). Experimental: docs/validation.md, \"The whole "
                              "motion\"", metavar="K")
    unsmear: int = option(0, "times in training (evenly spaced) the base Gaussians are refitted so that the "
                             "decoded states average to the consensus: the consensus of a flexible sample is their "
                             "smear, not a state (0: never). Experimental: with the default loss it lost the motion "
                             "on a hinge (docs/validation.md, \"The whole motion\")", metavar="N")
    cut_graph: int = option(3, "times in training (evenly spaced) the decoder's rigid domains are found and the "
                               "neighbour-distance term stops holding the edges between them, so a turning "
                               "domain's interface may stretch (0: never). Default 3 since session 21, with "
                               "--consensus-rounds 1 and --w-spacing 0: docs/validation.md, \"The whole motion, "
                               "session 21\"", metavar="N")
    consensus_rounds: int = option(1, "rounds trained first whose deformable reconstruction of the particles (bent "
                                      "into their mean state) becomes the next round's consensus, the next "
                                      "training starting from the round's networks: a consensus smeared by the "
                                      "motion holds the decoded motion back. Each round trains the full --epochs in "
                                      "OUTDIR/roundK, so 1 doubles the training time (0: none, a quicker first "
                                      "look). With --cut-graph 3 and --w-spacing 0, 1 round carried 0.84 of a hinge "
                                      "where neither carried 0.28: docs/validation.md, \"The whole motion, session "
                                      "21\"", metavar="N")
    distance_cut: float | None = option(None, "the neighbour-distance weight once the graph is cut (--cut-graph), "
                                              "on each domain's own edges (the domains are found under the full "
                                              "weight). Experimental: with --consensus-rounds 1, 0.1 lifted one "
                                              "hinge's arrival 0.57 -> 0.73 on one seed, not the other (0.63 -> "
                                              "0.61), and cost 0.02-0.10 elsewhere: docs/validation.md, \"The whole "
                                              "motion, session 18\"",
                                        flag="--w-distance-cut", metavar="W", default_text="--w-distance")
    domain_motion: bool = option(False, "from the first --cut-graph pass with 0.5 A RMS of decoded motion, the "
                                        "domains each pass finds move rigidly with the latent under the "
                                        "per-Gaussian displacements, and the alignment term charges only the "
                                        "per-Gaussian part. Experimental: with the default --consensus-rounds 1 and "
                                        "--w-spacing 0 it was not reliably better than those alone and cost 0.06 at SNR 0.03 "
                                        "(docs/validation.md, \"The whole motion, session 20\")")
    width_change: bool = option(False, "let the conformational decoder also change Gaussian widths (off by "
                                       "default: width changes can stand in for compositional change)")
    encoder_lowpass: float | None = option(None, "the image encoder reads the images low-pass filtered at this "
                                           "resolution in Angstrom (the loss is not filtered by it). For "
                                           "low-SNR data (about 0.01): 10 found the motion with 10,000 "
                                           "particles where the default found none, but costs about 0.01 of "
                                           "the motion read-out at SNR 0.1-1 and lost it on two runs of 34 "
                                           "(junk particles; 0.8 A pixels) (docs/validation.md, \"What "
                                           "costs motion at SNR 0.01\")", metavar="A")
    gaussian_features: bool = option(True, "the encoder also reads, per Gaussian, the residual's correlation "
                                           "with its projection in the particle's pose, pooled over the Gaussian "
                                           "embedding (a pose-free view of missing or extra density)")
    init_from: str | None = option(None, "start the networks from a finished run (same data and latent sizes), "
                                         "e.g. one trained with fewer Gaussians: coarse to fine", metavar="RUN")
    fine_gaussians: int | None = option(None, "coarse to fine: after --coarse-epochs on the default count, "
                                              "train on N Gaussians (0: never)", metavar="N",
                                        default_text="automatic when the training box resolves more detail "
                                                     "than the default count carries")
    coarse_epochs: int | None = option(None, "epochs of the coarse stage", default_text="half of --epochs")
    first_epoch: int = option(0, "a fine stage starts here (its low-pass and KL warm-up too)", cli=False)
    kl_warmup: float = option(5.0, "epochs over which the KL weight rises from 0")
    weights: LossWeights = field(default_factory=LossWeights, metadata={"cli": False})
    distance_robust: float = option(0.0, "> 0: neighbour distance changes beyond about this many Angstrom cost "
                                         "in proportion, not in square (a Charbonnier penalty), so the interface "
                                         "of a turning domain may stretch (0.1 carried a 30-degree hinge twice as "
                                         "far on clean data, but with 10%% junk particles it lost the motion: "
                                         "docs/validation.md); 0: the squared penalty", metavar="A")
    radius: float | None = option(None, "neighbour-graph radius in Angstrom",
                                  default_text="2.5 x the median nearest-neighbour distance")
    max_displacement: float = option(20.0, "bound of each displacement component (Angstrom)")
    device: str = option("auto", "auto, cpu or cuda[:N]")
    amp: bool = option(False, "mixed precision (bf16) on CUDA")
    seed: int = option(0, "random seed (particle order, initialisation)")
    invert: bool = option(False, "multiply images by -1 (for images with dark protein)")
    skip_consensus_check: bool = option(False, "train even when the consensus map does not clearly match the "
                                               "images better than its mirror image, its low-pass and itself "
                                               "rescaled (docs/engine.md, \"Consensus check\")")
    window: bool = option(True, "soft circular mask on the images", cli=False)
    cache: str | None = option(None, "keep the particles Fourier-cropped to the training box in this folder "
                                     "and reuse them in later runs of the same particles ('auto': "
                                     ".gaussianem_cache beside the particle file)", metavar="DIR")
    num_workers: int | None = option(None, "data-loading worker processes (Fourier cropping off the training "
                                           "thread)", default_text="0 on a CPU; on a GPU the CPU cores per "
                                                                   "process less one, at most 8")
    log_every: int = option(10, "log a step every N steps", cli=False)
    threads: int | None = option(None, "CPU threads for torch (1 on busy machines)", default_text="all cores")
    checkpoint_minutes: float = option(10.0, "minutes of training between checkpoints within an epoch (one is "
                                             "also written at each epoch's end and when a signal stops the run): "
                                             "at most this much work is lost when a run is killed", metavar="MIN")
    keep_checkpoints: int = option(2, "epoch checkpoints kept in OUTDIR/checkpoints (the latest N; 0: none); "
                                      "OUTDIR/checkpoint.pt, the latest state, is always kept", metavar="N")
    engine_version: str = field(default=__version__, metadata={"cli": False})

    def __post_init__(self):
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        if self.lowpass_start == 0:
            self.lowpass_start = None                     # "0: off" on the command line
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
        if self.distance_robust is None or self.distance_robust < 0:
            raise TrainingError(f"--distance-robust must be a length in Angstrom (> 0) or 0 for the squared "
                                f"penalty, got {self.distance_robust}")
        if self.distance_cut is not None and self.distance_cut < 0:
            raise TrainingError(f"--w-distance-cut must be a weight (>= 0), got {self.distance_cut}")
        if self.domain_motion and not self.cut_graph:
            raise TrainingError("--domain-motion moves the domains --cut-graph finds: give --cut-graph N (N >= 1)")
        for name in ("cut_graph", "unsmear", "segments", "consensus_rounds"):
            if getattr(self, name) is None or getattr(self, name) < 0:
                raise TrainingError(f"--{name.replace('_', '-')} must be a count (0 for none), got {getattr(self, name)}")
        if self.encoder_input not in ("residual", "image", "both"):
            raise TrainingError(f"unknown encoder input {self.encoder_input!r}: expected residual, image or both")
        if self.lowpass_start is not None and self.lowpass_start < 0:
            raise TrainingError(f"--lowpass-start must be a resolution in Angstrom (> 0) or 0 for off, "
                                f"got {self.lowpass_start}")
        if self.encoder_lowpass is not None and self.encoder_lowpass < 0:
            raise TrainingError(f"--encoder-lowpass must be a resolution in Angstrom (> 0) or 0 for the full band, "
                                f"got {self.encoder_lowpass}")
        if self.loss not in ("l1", "l2", "corr"):
            raise TrainingError(f"unknown loss {self.loss!r}: expected l1, l2 or corr")
        if self.fine_gaussians is not None and self.fine_gaussians < 0:
            raise TrainingError(f"--fine-gaussians must be a number of Gaussians (> 0) or 0 for one stage, "
                                f"got {self.fine_gaussians}")
        if self.coarse_epochs is not None and self.coarse_epochs < 1:
            raise TrainingError(f"--coarse-epochs must be at least 1, got {self.coarse_epochs}")
        if self.downsample is not None and (self.downsample % 2 or self.downsample < 8):
            raise TrainingError(f"--downsample must be an even box of at least 8 pixels, got {self.downsample}")

    def particle_files(self) -> dict:
        """The keyword arguments of :func:`gaussianem.io.particles.load_particles` for the
        training particles (also read back from a saved config by the analysis)."""
        return {"datadir": self.datadir, "poses": self.poses, "ctf": self.ctf, "ind": self.ind}

    def as_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = self.weights.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# what runs saved before a training setting existed did (a saved config without the key)
BEFORE_RECORDED = {"domain_motion": False, "consensus_rounds": 0, "distance_cut": None, "distance_robust": 0.0, "segments": 0, "unsmear": 0, "centre_by": "mass", "cut_graph": 0,
                   "encoder_lowpass": None}

# what a resumed run may change (the rest is the run's own: gaussianem.train.resume checks)
SESSION_FIELDS = ("epochs", "device", "num_workers", "threads", "checkpoint_minutes", "keep_checkpoints", "log_every")

# (flag, LossWeights field, help): the loss weights that have command-line flags
WEIGHT_FLAGS = (("--beta", "kl", "KL weight"),
                ("--w-distance", "distance", "neighbour distance-preservation weight (a domain hinge moves more "
                 "fully at 0.01, at some cost to smooth motions: docs/validation.md, \"Displaced models\")"),
                ("--w-alignment", "alignment", "neighbour displacement-alignment weight"),
                ("--w-spacing", "spacing", "weight of the term that keeps neighbouring Gaussians at least half "
                 "their rest distance apart (off by default since session 21: across a closing domain interface "
                 "it held the motion back; 1 before)"),
                ("--w-contrastive", "contrastive", "latent-neighbourhood term weight"))


def _flag(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _type(f):
    base = str(f.type).split("|")[0].strip()
    return {"int": int, "float": float, "str": str, "bool": bool}[base]


def cli_fields():
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True) and "help" in f.metadata]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every command-line option of :class:`TrainConfig` to ``parser``. Options not
    given stay unset (``argparse.SUPPRESS``), so the dataclass's defaults are the only ones."""
    for f in cli_fields():
        m = f.metadata
        default = None if f.default is MISSING else f.default
        text = m["default_text"] or (None if default in (None, False) or m["required"] else str(default))
        help_text = m["help"] + (f" (default: {text})" if text else "")
        if m["positional"]:
            parser.add_argument(f.name, help=help_text)
            continue
        names = [_flag(f)] + (["--" + f.name.replace("_", "-")] if m["flag"] else [])
        kw = {"dest": f.name, "help": help_text}
        if not m["required"]:
            kw["default"] = argparse.SUPPRESS
        if _type(f) is bool:
            kw["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kw.update(type=_type(f), choices=m["choices"], metavar=m["metavar"], required=m["required"])
        parser.add_argument(*names, **kw)
    for flag, name, help_text in WEIGHT_FLAGS:
        parser.add_argument(flag, dest="weight_" + name, type=float, default=argparse.SUPPRESS,
                            help=f"{help_text} (default: {getattr(LossWeights(), name):g})")


def from_arguments(args: argparse.Namespace, resume: bool = False) -> TrainConfig:
    """The :class:`TrainConfig` for parsed arguments. With ``resume`` and no ``--epochs``,
    the epochs are the run's own (:meth:`RunDir.epochs_asked`)."""
    given = {k: v for k, v in vars(args).items() if k in {f.name for f in fields(TrainConfig)}}
    weights = {k[len("weight_"):]: v for k, v in vars(args).items() if k.startswith("weight_")}
    if weights:
        given["weights"] = LossWeights(**weights)
    if resume and "epochs" not in given:
        given["epochs"] = RunDir(given["outdir"]).epochs_asked() or DEFAULT_EPOCHS
    return TrainConfig(**given)


def resumed(cfg: TrainConfig, saved: RunDir) -> TrainConfig:
    """The settings a resumed run goes on with: everything as saved in ``saved`` (the run
    itself, or the coarse stage of a coarse-to-fine run), except what may change between
    sessions (:data:`SESSION_FIELDS`: ``epochs`` to extend a run, the device, workers,
    threads, checkpoint policy and logging), which are ``cfg``'s; the output folder stays
    ``cfg.outdir``."""
    saved.require_resumable(holds=os.path.exists(saved.config), missing=RunDir.CONFIG)
    # a run saved before a setting existed goes on as it was trained
    old = TrainConfig.from_dict({**BEFORE_RECORDED, **saved.read_config()["train"]})
    return replace(old, outdir=cfg.outdir, **{k: getattr(cfg, k) for k in SESSION_FIELDS})


def command_line(options: dict) -> list[str]:
    """The ``gaussianem train`` arguments for ``options`` (field name -> value; None and
    False left out): how the ChimeraX bundle starts the engine with the user's keywords."""
    by_name = {f.name: f for f in cli_fields()}
    args: list[str] = []
    for name, value in options.items():
        if name not in by_name:
            raise TrainingError(f"unknown training option {name!r}")
        if value is None:
            continue
        f = by_name[name]
        if f.metadata["positional"]:
            args.insert(0, str(value))
        elif _type(f) is bool:
            default = f.default
            if bool(value) != bool(default):
                args.append(_flag(f) if value else "--no-" + f.name.replace("_", "-"))
        else:
            args += [_flag(f), str(value)]
    return args
