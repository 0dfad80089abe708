"""What the ChimeraX 0.1.71 wheel lacks, mended in the installed core (tools/install_chimerax.py
runs these; docs/headless_chimerax.md says why each is needed):

- grako, the atom-spec parser's dependency, patched for Python 3.11 (:func:`patch_grako`);
- ``chimerax/core/nogui.py``, the text-only UI the wheel lacks: tools/chimerax/nogui.py,
  our own, copied in (:func:`write_nogui`);
- a ``.dist-info`` per built-in bundle, carrying the classifiers the toolshed looks for
  (:func:`write_bundle_dist_infos`, from tools/chimerax/builtin_bundles_1.7.1.json);
- ``ffmpeg`` where ChimeraX's ``movie encode`` looks first (:func:`link_ffmpeg`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILTIN_BUNDLES_JSON = HERE / "chimerax" / "builtin_bundles_1.7.1.json"
NOGUI = HERE / "chimerax" / "nogui.py"      # the text of chimerax/core/nogui.py
# collections names that moved to collections.abc (Python 3.10), as grako uses them
GRAKO_ABC_NAMES = ("Mapping", "Iterable", "Callable", "MutableMapping", "Sequence")


def log(msg: str) -> None:
    print(f"[install_chimerax] {msg}", flush=True)


def patch_grako() -> None:
    import importlib.util

    spec = importlib.util.find_spec("grako")
    if spec is None or spec.origin is None:
        raise SystemExit("install_chimerax: grako is not installed")
    names = "|".join(GRAKO_ABC_NAMES)
    patched = []
    for py in Path(spec.origin).parent.rglob("*.py"):
        text = py.read_text()
        new = re.sub(rf"\bcollections\.({names})\b", r"collections.abc.\1", text)
        # `from collections import defaultdict, Mapping` -> split the abc names out.
        def split_import(m: re.Match) -> str:
            items = [s.strip() for s in m.group(2).split(",")]
            plain = [s for s in items if s not in GRAKO_ABC_NAMES]
            abc = [s for s in items if s in GRAKO_ABC_NAMES]
            out = []
            if plain:
                out.append(f"{m.group(1)}from collections import {', '.join(plain)}")
            if abc:
                out.append(f"{m.group(1)}from collections.abc import {', '.join(abc)}")
            return "\n".join(out)
        new = re.sub(r"^([ \t]*)from collections import ([\w, ]+)$", split_import, new,
                     flags=re.M)
        if new != text:
            if "collections.abc." in new and "import collections.abc" not in new:
                new = re.sub(r"^import collections$", "import collections\nimport collections.abc",
                             new, count=1, flags=re.M)
            py.write_text(new)
            patched.append(py.name)
    if patched:
        log(f"patched grako for Python 3.11: {', '.join(sorted(patched))}")


def write_nogui(cx: Path) -> None:
    target = cx / "core" / "nogui.py"
    source = NOGUI.read_text()
    if not target.exists() or target.read_text() != source:
        target.write_text(source)
        log(f"wrote {target}")


def load_builtin_bundles() -> dict:
    if not BUILTIN_BUNDLES_JSON.is_file():
        raise SystemExit(
            f"install_chimerax: {BUILTIN_BUNDLES_JSON} is missing.\n"
            "It lists ChimeraX 1.7.1's built-in bundles (it is part of the repository:\n"
            "'git checkout tools/chimerax' restores it). Without it the toolshed\n"
            "registers no bundle and ChimeraX has no 'open', 'volume', ... commands.")
    return json.loads(BUILTIN_BUNDLES_JSON.read_text())


def write_bundle_dist_infos(cx: Path, bundles: dict) -> int:
    """One dist-info per built-in bundle, carrying its ChimeraX classifiers.

    The toolshed finds bundles by these classifiers (METADATA) and finds a bundle's
    packages from the ``__init__.py`` rows of its RECORD. RECORD lists only those
    ``__init__.py`` files and the dist-info itself, so uninstalling a bundle's record
    never removes the core's other files.
    """
    site = cx.parent
    stale = {p.name for p in site.glob("ChimeraX_*.dist-info")
             if (p / "INSTALLER").is_file()
             and (p / "INSTALLER").read_text().strip() == "gaussianem-install-chimerax"}
    written = 0
    for name, b in bundles.items():
        pkg_dir = site / Path(*b["package"].split("."))
        if not (pkg_dir / "__init__.py").is_file():
            log(f"warning: {name}: package {b['package']} not in the wheel; skipped")
            continue
        info_name = f"{name.replace('-', '_')}-{b['version']}.dist-info"
        info = site / info_name
        stale.discard(info_name)
        info.mkdir(exist_ok=True)
        md = [
            "Metadata-Version: 2.1",
            f"Name: {name}",
            f"Version: {b['version']}",
            f"Summary: {b['summary']}",
            *(f"Classifier: {c}" for c in b["classifiers"]),
        ]
        (info / "METADATA").write_text("\n".join(md) + "\n")
        (info / "INSTALLER").write_text("gaussianem-install-chimerax\n")
        rows = sorted(str(p.relative_to(site)) + ",," for p in pkg_dir.rglob("__init__.py"))
        rows += [f"{info_name}/{f},," for f in ("METADATA", "INSTALLER", "RECORD")]
        (info / "RECORD").write_text("\n".join(rows) + "\n")
        written += 1
    for old in stale:  # from an older bundle list
        shutil.rmtree(site / old)
    return written


def link_ffmpeg() -> Path:
    """``<env>/bin/ffmpeg`` -> the imageio-ffmpeg package's ffmpeg binary, where ChimeraX's
    ``movie encode`` looks first (``chimerax.app_bin_dir``)."""
    import importlib
    importlib.invalidate_caches()
    import imageio_ffmpeg
    exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
    link = Path(sys.prefix) / "bin" / ("ffmpeg.exe" if os.name == "nt" else "ffmpeg")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(exe)
    log(f"ffmpeg for movie encode: {link} -> {exe}")
    return link
