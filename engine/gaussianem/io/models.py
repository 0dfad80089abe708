"""Atomic models: reading, writing, simple geometry and molmap-like density.

An :class:`AtomicModel` is a flat set of per-atom arrays (coordinates in Angstrom,
element symbols, names, residue numbering, B-factors, occupancies) plus the parsed
``gemmi.Structure`` it came from, so that :func:`write_model` can write the model back
with everything the file held (headers, entities, insertion codes) and new coordinates.
The arrays follow the structure's atom order (first model only): chain by chain,
residue by residue, as in the file.

Besides I/O the module holds what the engine's tests and synthetic data need from an
atomic model: covalent bonds found by distance (:func:`bond_pairs`), a rigid hinge
motion (:func:`hinge_rotation`, :func:`default_hinge`), the part to delete for
compositional heterogeneity (:func:`default_removal`), a density map like ChimeraX's
``molmap`` (:func:`model_density`). The ideal test protein built in code lives in
:mod:`gaussianem.sim.testprotein`.

Density grids are indexed (z, y, x); voxel ``(i, j, k)`` has its centre at
``origin + (k, j, i) * apix``, with the default origin putting the model's (0, 0, 0) at
voxel ``box // 2`` on each axis (the engine's convention: origin at the box centre).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import gemmi
import numpy as np
from scipy.spatial import cKDTree

from gaussianem.errors import InputError
from gaussianem.io.atomic import write_text

MOLMAP_SIGMA_FACTOR = 0.225        # ChimeraX molmap: sigma = 0.225 * resolution (1/(pi*sqrt(2)))
_HYDROGENS = ("H", "D")
_THIRD_ROW = ("S", "SE", "P")      # longer covalent bonds: cutoff + 0.2 A
_PDB_EXT = (".pdb", ".ent")
_CIF_EXT = (".cif", ".mmcif")


@dataclass
class AtomicModel:
    """Per-atom arrays of one model, in file order. See the module docstring."""

    coords: np.ndarray          # (M, 3) float64, Angstrom
    elements: np.ndarray        # (M,) str, element symbols as gemmi spells them ("C", "Se")
    atom_names: np.ndarray      # (M,) str
    res_names: np.ndarray       # (M,) str
    chain_ids: np.ndarray       # (M,) str
    res_seq: np.ndarray         # (M,) int, residue sequence number (no insertion code)
    res_index: np.ndarray       # (M,) int, residue 0..R-1 in file order
    b_factors: np.ndarray       # (M,) float
    occupancies: np.ndarray     # (M,) float
    path: str | None = None
    _structure: gemmi.Structure | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.coords = np.array(self.coords, dtype=np.float64, copy=True).reshape(-1, 3)
        m = len(self.coords)
        for name in ("elements", "atom_names", "res_names", "chain_ids"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=str))
        self.res_seq = np.asarray(self.res_seq, dtype=np.int64)
        self.res_index = np.asarray(self.res_index, dtype=np.int64)
        self.b_factors = np.asarray(self.b_factors, dtype=np.float64)
        self.occupancies = np.asarray(self.occupancies, dtype=np.float64)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray) and len(v) != m:
                raise InputError(f"AtomicModel.{f.name} has {len(v)} entries for {m} atoms")

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def sequence(self) -> tuple[np.ndarray, np.ndarray]:
        """Each atom's chain id and residue place in the model ((M,) each): where an atom
        lies along its chain (:func:`gaussianem.model.displace.sequence_weights`)."""
        return self.chain_ids, self.res_index

    def n_residues(self) -> int:
        return int(self.res_index.max()) + 1 if len(self) else 0

    def chains(self) -> list[str]:
        """Chain identifiers in file order (each once)."""
        _, first = np.unique(self.chain_ids, return_index=True)
        return [str(self.chain_ids[i]) for i in sorted(first)]

    def atomic_numbers(self) -> np.ndarray:
        """(M,) int electron counts; unknown elements count as carbon (6)."""
        return _element_table(self.elements, lambda el: el.atomic_number or 6)

    def masses(self) -> np.ndarray:
        """(M,) float atomic masses in Dalton; unknown elements count as carbon."""
        return _element_table(self.elements, lambda el: el.weight if el.atomic_number else 12.011)

    def residue_centres(self, use_ca: bool = False) -> np.ndarray:
        """(R, 3) mean position of each residue's heavy atoms (all atoms if it has none).

        With ``use_ca`` a residue's CA atom is used instead where it has one.
        """
        r = self.n_residues()
        heavy = ~np.isin(np.char.upper(self.elements), _HYDROGENS)
        has_heavy = np.bincount(self.res_index[heavy], minlength=r) > 0
        use = heavy | ~has_heavy[self.res_index]
        counts = np.bincount(self.res_index[use], minlength=r)
        centres = np.stack([np.bincount(self.res_index[use], self.coords[use, a], minlength=r)
                            for a in range(3)], axis=1) / np.maximum(counts, 1)[:, None]
        if use_ca:
            ca = np.flatnonzero(self.atom_names == "CA")
            centres[self.res_index[ca]] = self.coords[ca]
        return centres

    def group_centres(self, atoms_per_group: int) -> np.ndarray:
        """(G, 3) centres of consecutive groups of ``atoms_per_group`` heavy atoms, in file
        order within each chain (one Gaussian per N heavy atoms)."""
        if atoms_per_group < 1:
            raise InputError(f"atoms per Gaussian must be at least 1, got {atoms_per_group}")
        heavy = np.flatnonzero(~np.isin(np.char.upper(self.elements), _HYDROGENS))
        out = []
        for chain in self.chains():
            idx = heavy[self.chain_ids[heavy] == chain]
            for s in range(0, len(idx), atoms_per_group):
                out.append(self.coords[idx[s:s + atoms_per_group]].mean(0))
        return np.asarray(out)

    def select(self, chain=None, residues: tuple[int, int] | None = None) -> np.ndarray:
        """(M,) bool mask: atoms of ``chain`` (an id or a list of ids; None = all) whose
        residue number lies in ``residues = (first, last)``, both ends included."""
        mask = np.ones(len(self), dtype=bool)
        if chain is not None:
            mask &= np.isin(self.chain_ids, [chain] if isinstance(chain, str) else list(chain))
        if residues is not None:
            first, last = residues
            mask &= (self.res_seq >= first) & (self.res_seq <= last)
        return mask

    def with_coords(self, xyz) -> AtomicModel:
        """A copy of this model with coordinates ``xyz`` (M, 3)."""
        xyz = np.array(xyz, dtype=np.float64, copy=True)
        if xyz.shape != self.coords.shape:
            raise InputError(f"coordinates of shape {xyz.shape} for a model of {len(self)} atoms")
        return dataclasses.replace(self, coords=xyz)


def _element_table(symbols: np.ndarray, value) -> np.ndarray:
    uniq, inv = np.unique(symbols, return_inverse=True)
    return np.array([value(gemmi.Element(str(s))) for s in uniq])[inv.reshape(-1)]


# ---------------------------------------------------------------------------------------
# Reading and writing

def read_model(path, keep_hetatm: bool = False, keep_hydrogens: bool = False) -> AtomicModel:
    """Read a PDB (.pdb/.ent) or mmCIF (.cif/.mmcif, optionally gzipped) file.

    Only the first model is kept and only the first alternative conformation of each
    atom. Hydrogens are dropped unless ``keep_hydrogens``; waters and ligands (every
    residue outside a polymer entity) unless ``keep_hetatm``. Raises ValueError naming
    the file when it is missing, cannot be parsed or holds no atoms after that.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"cannot read atomic model {path!r}: no such file")
    try:
        st = gemmi.read_structure(path)
    except Exception as e:  # gemmi raises RuntimeError/ValueError/OSError by case
        raise InputError(f"cannot read atomic model {path!r}: {e}") from None
    while len(st) > 1:
        del st[len(st) - 1]
    if len(st) == 0:
        raise InputError(f"atomic model {path!r} contains no models/atoms")
    st.setup_entities()
    st.remove_alternative_conformations()
    if not keep_hydrogens:
        st.remove_hydrogens()
    if not keep_hetatm:
        st.remove_ligands_and_waters()
    st.remove_empty_chains()
    if st[0].count_atom_sites() == 0:
        raise InputError(f"atomic model {path!r} contains no atoms"
                         + ("" if keep_hetatm else " (after removing waters and ligands)"))
    return _model_from_structure(st, path)


def _model_from_structure(st: gemmi.Structure, path: str | None) -> AtomicModel:
    cols = {k: [] for k in ("coords", "elements", "atom_names", "res_names", "chain_ids",
                            "res_seq", "res_index", "b_factors", "occupancies")}
    r = 0
    for chain in st[0]:
        for res in chain:
            for atom in res:
                p = atom.pos
                cols["coords"].append((p.x, p.y, p.z))
                cols["elements"].append(atom.element.name)
                cols["atom_names"].append(atom.name)
                cols["res_names"].append(res.name)
                cols["chain_ids"].append(chain.name)
                cols["res_seq"].append(res.seqid.num)
                cols["res_index"].append(r)
                cols["b_factors"].append(atom.b_iso)
                cols["occupancies"].append(atom.occ)
            r += 1
    return AtomicModel(**cols, path=path, _structure=st)


def gemmi_structure(model: AtomicModel) -> gemmi.Structure:
    """A gemmi.Structure holding the model's atoms, for models not read from a file."""
    st = gemmi.Structure()
    st.name = "model"
    gmodel = gemmi.Model("1")
    chain = res = None
    for i in range(len(model)):
        if chain is None or model.chain_ids[i] != chain.name:
            if chain is not None:
                chain.add_residue(res)
                gmodel.add_chain(chain)
            chain, res = gemmi.Chain(str(model.chain_ids[i])), None
        if res is None or model.res_index[i] != model.res_index[i - 1]:
            if res is not None:
                chain.add_residue(res)
            res = gemmi.Residue()
            res.name = str(model.res_names[i])
            res.seqid = gemmi.SeqId(int(model.res_seq[i]), " ")
            info = gemmi.find_tabulated_residue(res.name)
            res.het_flag = "A" if info is not None and info.is_standard() else "H"
        atom = gemmi.Atom()
        atom.name = str(model.atom_names[i])
        atom.element = gemmi.Element(str(model.elements[i]))
        atom.pos = gemmi.Position(*model.coords[i])
        atom.b_iso = float(model.b_factors[i])
        atom.occ = float(model.occupancies[i])
        res.add_atom(atom)
    if chain is not None:
        chain.add_residue(res)
        gmodel.add_chain(chain)
    st.add_model(gmodel)
    st.setup_entities()
    _set_full_sequences(st)
    return st


def _set_full_sequences(st: gemmi.Structure) -> None:
    """Give polymer entities a sequence spanning their residue numbers (gaps filled
    with UNK or N) so that mmCIF label_seq_id follows the author numbering."""
    for ent in st.entities:
        if ent.entity_type != gemmi.EntityType.Polymer or not ent.subchains:
            continue
        residues = st[0].get_subchain(ent.subchains[0])
        nums = [r.seqid.num for r in residues]
        if not nums or any(b <= a for a, b in zip(nums, nums[1:])):
            continue
        peptide = ent.polymer_type in (gemmi.PolymerType.PeptideL, gemmi.PolymerType.PeptideD)
        seq = ["UNK" if peptide else "N"] * (nums[-1] - nums[0] + 1)
        for r in residues:
            seq[r.seqid.num - nums[0]] = r.name
        ent.full_sequence = seq
    st.assign_label_seq_id(True)


def write_model(path, model: AtomicModel) -> None:
    """Write ``model`` as PDB (.pdb/.ent) or mmCIF (.cif/.mmcif), chosen by extension.

    Everything comes from the model's parsed structure (names, numbering, headers)
    except coordinates, B-factors and occupancies, which come from the arrays. The file
    appears atomically (written to a temporary file beside it, then renamed).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _PDB_EXT + _CIF_EXT:
        raise InputError(f"cannot write atomic model {path!r}: extension must be one of "
                         f"{', '.join(_PDB_EXT + _CIF_EXT)}")
    src = model._structure
    if src is None or src[0].count_atom_sites() != len(model):
        src = gemmi_structure(model)
    st = src.clone()
    atoms = [a for ch in st[0] for res in ch for a in res]
    for atom, xyz, b, occ in zip(atoms, model.coords, model.b_factors, model.occupancies):
        atom.pos = gemmi.Position(*xyz)
        atom.b_iso = float(b)
        atom.occ = float(occ)
    if ext in _PDB_EXT:
        text = st.make_pdb_string(gemmi.PdbWriteOptions())
    else:
        text = st.make_mmcif_document().as_string()
    write_text(path, text)


# ---------------------------------------------------------------------------------------
# Geometry

def bond_pairs(model: AtomicModel, cutoff: float = 2.0) -> np.ndarray:
    """(P, 2) int atom index pairs (i < j, sorted) of covalent bonds found by distance.

    A pair is bonded when closer than ``cutoff`` (``cutoff + 0.2`` when S, Se or P is
    involved, 1.3 A when one is a hydrogen; never H-H) and either in the same residue
    or a link between residues: a peptide bond C(i)-N(i+1) or a nucleic-acid O3'(i)-P(i+1)
    in the same chain, or a disulfide SG-SG.
    """
    if len(model) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = cKDTree(model.coords).query_pairs(r=cutoff + 0.2, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    i, j = pairs[:, 0], pairs[:, 1]
    el = np.char.upper(model.elements)
    is_h = np.isin(el, _HYDROGENS)
    is_heavy_row = np.isin(el, _THIRD_ROW)
    limit = np.where(is_heavy_row[i] | is_heavy_row[j], cutoff + 0.2, cutoff)
    limit = np.where(is_h[i] | is_h[j], 1.3, limit)
    limit = np.where(is_h[i] & is_h[j], 0.0, limit)
    d = np.linalg.norm(model.coords[i] - model.coords[j], axis=1)

    ri, rj = model.res_index[i], model.res_index[j]
    lo, hi = np.where(ri <= rj, i, j), np.where(ri <= rj, j, i)
    name_lo, name_hi = model.atom_names[lo], model.atom_names[hi]
    adjacent = (np.abs(ri - rj) == 1) & (model.chain_ids[i] == model.chain_ids[j])
    peptide = (name_lo == "C") & (name_hi == "N")
    link = adjacent & (peptide | ((name_lo == "O3'") & (name_hi == "P")))
    disulfide = (model.atom_names[i] == "SG") & (model.atom_names[j] == "SG") & (ri != rj)
    keep = (d < limit) & ((ri == rj) | link | disulfide)
    out = np.sort(pairs[keep], axis=1).astype(np.int64)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def bond_length_rms_change(model_a: AtomicModel, coords_b, pairs=None) -> float:
    """RMS over bonds of (|d_b| - |d_a|), bonds from ``bond_pairs(model_a)`` unless
    ``pairs`` (P, 2) is given; ``coords_b`` (M, 3) is the changed geometry."""
    if pairs is None:
        pairs = bond_pairs(model_a)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return 0.0
    b = np.asarray(coords_b, dtype=np.float64)
    a = model_a.coords
    da = np.linalg.norm(a[pairs[:, 0]] - a[pairs[:, 1]], axis=1)
    db = np.linalg.norm(b[pairs[:, 0]] - b[pairs[:, 1]], axis=1)
    return float(np.sqrt(np.mean((db - da) ** 2)))












# ---------------------------------------------------------------------------------------
# Density

