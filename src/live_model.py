"""The atomic model that moves with a GaussianEM result's map in a ChimeraX session.

A :class:`LiveModel` ties an open AtomicStructure, fitted into the consensus map, to the
engine's displacement field:

* its atoms' coordinates at opening, in the map's frame (``base``; a model placed by
  moving it, e.g. ``fitmap``, is used where it is shown, relative to the map), and the
  engine's :class:`~gaussianem.model.displace.AtomInterpolator` over them (weights computed
  once, bonds from ChimeraX's);
* the latent the model stands for (``reference``,
  :func:`gaussianem.analysis.reference.model_latent`, as ``gaussianem generate --reference
  auto``): displacements are taken relative to it, so the model shows its own state at its
  own latent and every other state relative to that, exactly as ``generate --model``
  writes it (a model fitted to the consensus map stands for one particular state, often an
  end of the motion, not the average);
* :meth:`fit_domains`: a copy of the model at a latent with its rigid domains fitted to
  that state's particles (:mod:`gaussianem.analysis.domain_fit`), coloured by domain.

Numerics come from the engine; this module turns ChimeraX atoms into its arrays and back.
"""

from __future__ import annotations

import numpy as np

DOMAIN_COLORS = np.array([[31, 119, 180, 255], [255, 127, 14, 255], [44, 160, 44, 255], [214, 39, 40, 255],
                          [148, 103, 189, 255], [140, 86, 75, 255]], np.uint8)    # one per domain (tab10)


def engine_model(structure, coords_map: np.ndarray):
    """The engine's :class:`~gaussianem.io.models.AtomicModel` of a ChimeraX structure's
    atoms (in its atom order) at ``coords_map`` (M, 3), the map's frame."""
    from gaussianem.io.models import AtomicModel
    atoms = structure.atoms
    residues = atoms.residues
    return AtomicModel(coords=np.asarray(coords_map, dtype=np.float64), elements=atoms.element_names,
                       atom_names=atoms.names, res_names=residues.names, chain_ids=residues.chain_ids,
                       res_seq=residues.numbers, res_index=structure.residues.indices(residues),
                       b_factors=atoms.bfactors, occupancies=atoms.occupancies)


class LiveModel:
    """An AtomicStructure moved with the latent (see the module docstring). ``base`` (its
    atoms' coordinates in the map's frame at the reference state) and ``to_model`` (map
    frame -> its coordinates) are given when restoring a session; otherwise its present
    coordinates, placed relative to ``map_position`` (the map's scene position), are
    the reference state. ``reference``: the latent it stands for (None: found now, or
    the consensus while the run has no particle latents)."""

    def __init__(self, result, structure, base=None, to_model=None, map_position=None, reference="auto"):
        if base is None:
            coords = np.array(structure.atoms.coords, dtype=np.float64)
            to_model = None
            if map_position is not None:
                t = structure.scene_position.inverse() * map_position
                if not t.is_identity(tolerance=1e-6):
                    to_model = t
            base = coords if to_model is None else to_model.inverse().transform_points(coords)
        self.result = result
        self.structure = structure
        self.base = np.asarray(base, dtype=np.float64)
        self.to_model = to_model
        a1, a2 = structure.bonds.atoms
        bonds = np.stack([structure.atoms.indices(a1), structure.atoms.indices(a2)], 1)
        self.model = engine_model(structure, self.base)
        if isinstance(reference, str):
            reference = self._find_reference()
        self.reference = None if reference is None else result.check_z(reference)[0]
        # the atoms follow the Gaussians of the state they stand for, and move relative to it
        self.interpolator = result.interpolator(self.base, name=f"model #{structure.id_string}",
                                                bonds=bonds[(bonds >= 0).all(1)], reference=self.reference,
                                                residues=self.model.sequence)

    def _find_reference(self):
        if self.result.z is None:
            return None
        from gaussianem.analysis.reference import model_latent
        return model_latent(self.result, self.model).z

    @property
    def alive(self) -> bool:
        return not self.structure.deleted

    def displacement(self, gaussian_displacement) -> np.ndarray:
        """Atom displacements (float64, (M, 3) or (B, M, 3)) for Gaussian displacements
        (N, 3) or (B, N, 3), relative to the reference state, with the model's bond lengths
        kept (as the engine's ``Result.displace_model``)."""
        import torch
        d = self.interpolator(torch.from_numpy(np.asarray(gaussian_displacement, dtype=np.float32)))
        d = d.numpy().astype(np.float64)
        return self.interpolator.keep_bonds(self.base + d) - self.base

    def coords(self, xyz_map: np.ndarray) -> np.ndarray:
        """Map-frame coordinates (..., 3) -> the structure's own coordinates."""
        if self.to_model is None:
            return xyz_map
        shape = xyz_map.shape
        return self.to_model.transform_points(xyz_map.reshape(-1, 3)).reshape(shape)

    def fit_domains(self, z, particles: int, steps: int, sort: str = "images", progress=None):
        """(copy, domains, fit): a copy of the structure at latent ``z`` with its rigid
        domains fitted to ``particles`` particles of that state, chosen by ``sort``
        (:func:`gaussianem.analysis.domain_fit.fitted_models`), its residues coloured by
        domain; not yet added to the session."""
        from gaussianem.analysis.domain_fit import fitted_models
        models, domains, fits = fitted_models(self.result, self.model, np.asarray(z)[None], self.interpolator,
                                              reference=self.reference, particles=particles, steps=steps,
                                              sort=sort, progress=progress or (lambda message: None))
        copy = self.structure.copy(name=f"{self.structure.name} domains fitted")
        copy.atoms.coords = self.coords(models[0].coords)
        copy.atoms.colors = DOMAIN_COLORS[domains.atom_labels % len(DOMAIN_COLORS)]
        copy.residues.ribbon_colors = DOMAIN_COLORS[domains.residue_labels % len(DOMAIN_COLORS)]   # same order
        return copy, domains, fits[0]
