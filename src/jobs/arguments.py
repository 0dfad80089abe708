"""The engine's command lines for the bundle's jobs, built from the engine's own option
names: ``gaussianem analyze`` (gaussianem/cli/analyze.py) and ``gaussianem reconstruct``
(gaussianem/cli/reconstruct.py). ``train``'s come from the engine's
:func:`gaussianem.train.config.command_line`."""

from __future__ import annotations


def analyze_args(outdir: str, *, k=None, pcs=None, steps=None, umap=None, skip_volumes=False, map_kind=None,
                 range_sd=None, seed=None, device=None) -> list[str]:
    """The engine's ``analyze`` arguments for these options (None: the engine's default)."""
    args = ["analyze", outdir]
    for flag, value in (("--kmeans", k), ("--pcs", pcs), ("--trajectory-steps", steps), ("--map", map_kind),
                        ("--seed", seed), ("--device", device)):
        if value is not None:
            args += [flag, str(value)]
    if range_sd is not None:
        args += ["--range", f"{range_sd[0]:g}", f"{range_sd[1]:g}"]
    if umap is not None:
        args.append("--umap" if umap else "--no-umap")
    if skip_volumes:
        args.append("--skip-volumes")
    return args


def reconstruct_args(outdir: str, output: str, *, cluster=None, k=None, particles=None, pc_range=None,
                     latent_part=None, state=None, particle=None, z=None, box=None, replace=False,
                     device=None) -> list[str]:
    """The engine's ``reconstruct`` arguments (gaussianem/cli/reconstruct.py) for these options."""
    args = ["reconstruct", outdir, "-o", output, "--progress", "json"]
    if cluster is not None:
        args += ["--kmeans", str(k or 8), "--cluster", ",".join(str(int(c)) for c in cluster)]
    if particles is not None:
        args += ["--select", particles]
    if pc_range is not None:
        args += ["--pc-range", ",".join(f"{v:g}" for v in pc_range)]
        if latent_part is not None:
            args += ["--part", latent_part]
    for flag, value in (("--state", state), ("--particle", particle), ("--box", box), ("--device", device)):
        if value is not None:
            args += [flag, str(value)]
    if z is not None:
        args += ["--z", " ".join(f"{float(v):.7g}" for v in z)]
    if replace:
        args.append("--force")
    return args
