"""The words of a result's analysis, named once.

Torch-free and importing nothing, so that the command line's options and the ChimeraX
bundle's commands offer the same choices without loading the engine.

- :data:`MAP_KINDS`: how a latent's map is made. ``gaussians``: rendered from the decoded
  Gaussians; ``deformed``: the consensus map carried by the decoded Gaussian motions and
  amplitude changes (:meth:`gaussianem.analysis.result.Result.volume`).
- :data:`LATENT_PARTS`: whose principal components, of all of z (``all``) or of the
  conformational (``conf``) or compositional (``comp``) part of a split latent
  (:meth:`gaussianem.analysis.result.Result.pca`); :func:`pc_label` names one component.
"""

MAP_KINDS = ("gaussians", "deformed")
LATENT_PARTS = ("all", "conf", "comp")


def pc_label(pc: int, part: str = "all") -> str:
    """A principal component's name in messages, file and map names: ``PC1`` of all of z,
    ``conf PC1`` / ``comp PC1`` of a part of a split latent."""
    return f"PC{int(pc)}" if part == "all" else f"{part} PC{int(pc)}"
