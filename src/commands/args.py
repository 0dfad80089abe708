"""Argument types and keyword lists that several ``gaussianem`` commands share.

The choices of the map kind and the latent part are the engine's words
(:mod:`gaussianem.analysis.vocabulary`), so the commands offer what the engine accepts.
"""

from __future__ import annotations

from chimerax.core.commands import (Annotation, EnumOf, Float2Arg, IntArg, ListOf, NonNegativeIntArg,
                                    OpenFileNameArg, PositiveIntArg)
from chimerax.core.errors import UserError

from gaussianem.analysis.vocabulary import LATENT_PARTS, MAP_KINDS

DEVICES = ["auto", "cpu", "cuda"]
MapKindArg = EnumOf(list(MAP_KINDS))
# Which principal components, of all of z or of the conformational / compositional part.
# The keyword is latentPart (``part``, its first name, is still taken by show and
# trajectory, but abbreviates ``particle``/``particles``, so it is not offered elsewhere).
LatentPartArg = EnumOf(list(LATENT_PARTS))
IntsArg = ListOf(IntArg)
# a path through latent space, as gaussianem trajectory and gaussianem movie take it (latent_paths.py)
PATH_KEYWORDS = [("pc", PositiveIntArg), ("steps", PositiveIntArg), ("range", Float2Arg),
                 ("latent_part", LatentPartArg), ("from_particle", NonNegativeIntArg),
                 ("to_particle", NonNegativeIntArg), ("from_cluster", NonNegativeIntArg),
                 ("to_cluster", NonNegativeIntArg), ("k", PositiveIntArg), ("map", MapKindArg)]


def latent_part(part, latent_part) -> str:
    """The latent part asked for with ``latentPart`` (or its older name ``part``)."""
    if part is not None and latent_part is not None and part != latent_part:
        raise UserError(f"latentPart {latent_part} and part {part} disagree: give latentPart only")
    return latent_part or part or "all"


class _ModelOrFileArg(Annotation):
    """``#N`` (an open model of one class) or the name of a file to open."""
    model_arg = None
    what = "model"

    @classmethod
    def parse(cls, text, session):
        if text.lstrip().startswith("#"):
            return cls.model_arg().parse(text, session)
        return OpenFileNameArg.parse(text, session)


class MapOrFileArg(_ModelOrFileArg):
    name = "an open map (#N) or a map file"

    @staticmethod
    def model_arg():
        from chimerax.map import MapArg
        return MapArg


class StructureOrFileArg(_ModelOrFileArg):
    name = "an open atomic model (#N) or a .pdb/.cif file"

    @staticmethod
    def model_arg():
        from chimerax.atomic import AtomicStructureArg
        return AtomicStructureArg
