"""The consensus map's grid, and the engine frame defined on it.

The engine works in Angstrom with (0, 0, 0) at voxel index ``box // 2`` of the consensus
map (the centre RELION projects about). Atomic models and ChimeraX live in the map's
physical frame, where voxel (i, j, k) (x, y, z indices) sits at ``origin + (i, j, k) *
apix``. :class:`Grid` converts between the two, so that every generated map lands on
the consensus map's grid and overlays it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Grid:
    box: int                    # voxels per edge (cubic maps)
    apix: float                 # Angstrom per voxel
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # xyz of voxel 0, Angstrom

    def __post_init__(self):
        self.box = int(self.box)
        self.apix = float(self.apix)
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3)

    @property
    def centre(self) -> np.ndarray:
        """Physical position (Angstrom) of the engine frame's origin, voxel box//2."""
        return self.origin + (self.box // 2) * self.apix

    def to_engine(self, xyz) -> np.ndarray:
        return np.asarray(xyz, dtype=np.float64) - self.centre

    def to_physical(self, xyz) -> np.ndarray:
        return np.asarray(xyz, dtype=np.float64) + self.centre

    def as_dict(self) -> dict:
        return {"box": self.box, "apix": self.apix, "origin": [float(v) for v in self.origin]}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(d["box"], d["apix"], np.asarray(d["origin"]))

    def scaled(self, box: int, apix: float | None = None) -> "Grid":
        """``box`` voxels of ``apix`` (default: the same physical extent) about the same centre."""
        apix = self.apix * self.box / box if apix is None else float(apix)
        return Grid(box, apix, self.centre - (box // 2) * apix)
