#!/usr/bin/env python3
"""Build the ChimeraX-GaussianEM bundle wheel from bundle_info.xml with plain setuptools.

    python tools/build_bundle.py            # -> dist/ChimeraX_GaussianEM-<version>-py3-none-any.whl
    python tools/build_bundle.py --install  # ... and pip-install it into this Python

ChimeraX's own bundle builder ("devel build ." in the ChimeraX app) is not on PyPI, so this
script does the same job for the headless core used in tests: it reads bundle_info.xml,
writes the "ChimeraX :: Bundle" classifier and the ChimeraXClassifier lines as the wheel's
classifiers (that is how the toolshed finds the bundle and its commands and tools), and
packages src/ (with src/docs/**, if present) as ``chimerax.gaussianem``, with the
repository's LICENSE in the wheel's ``.dist-info/licenses/``. The engine package
``gaussianem`` is not bundled; the wheel declares it as a dependency.

``--install`` pip-installs the wheel with --no-deps --force-reinstall and deletes the
toolshed's cache of installed bundles, so the next ChimeraX session sees the new bundle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLE_INFO = REPO / "bundle_info.xml"
SRC = REPO / "src"
DIST = REPO / "dist"
LICENSE = REPO / "LICENSE"


def _text(root: ET.Element, tag: str, default: str = "") -> str:
    e = root.find(tag)
    return " ".join((e.text or "").split()) if e is not None and e.text else default


def read_bundle_info(path: Path = BUNDLE_INFO) -> dict:
    """The parts of bundle_info.xml a pure-Python bundle wheel needs."""
    root = ET.parse(path).getroot()
    if root.tag != "BundleInfo":
        raise ValueError(f"{path}: root element is {root.tag!r}, not BundleInfo")
    package = root.get("package", "")
    categories = [c.get("name") for c in root.iterfind("Categories/Category")]
    # The same "Bundle" line ChimeraX's bundle builder writes:
    # ChimeraX :: Bundle :: categories :: session versions :: module :: supersedes :: custom init
    bundle_line = " :: ".join([
        "ChimeraX :: Bundle", ",".join(categories),
        f"{root.get('minSessionVersion', '')},{root.get('maxSessionVersion', '')}",
        package, root.get("supersedes", ""), root.get("customInit", ""),
    ])
    cx_lines = []
    for e in root.iterfind("Classifiers/ChimeraXClassifier"):
        line = " ".join(e.text.split())
        cx_lines.append(line if line.startswith("ChimeraX") else "ChimeraX :: " + line)
    data_dirs = [e.text.strip() for e in root.iterfind("DataFiles/DataDir")]
    data_files = [e.text.strip() for e in root.iterfind("DataFiles/DataFile")]
    return {
        "name": root.get("name"),
        "version": root.get("version"),
        "package": package,
        "author": _text(root, "Author"),
        "email": _text(root, "Email"),
        "url": _text(root, "URL"),
        "license": _text(root, "License"),
        "synopsis": _text(root, "Synopsis"),
        "description": (root.findtext("Description") or "").strip(),
        "dependencies": [f"{d.get('name')}{d.get('version', '')}"
                         for d in root.iterfind("Dependencies/Dependency")],
        "classifiers": [e.text.strip() for e in root.iterfind("Classifiers/PythonClassifier")]
                       + [bundle_line] + cx_lines,
        "package_data": [f"{d}/**/*" for d in data_dirs] + data_files,
    }


def _pyproject(info: dict, packages: list[str]) -> str:
    """A pyproject.toml for setuptools; JSON strings are valid TOML basic strings."""
    q = json.dumps
    lines = [
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {q(info['name'])}",
        f"version = {q(info['version'])}",
        f"description = {q(info['synopsis'])}",
        'readme = {file = "README.txt", content-type = "text/plain"}',
        f"license = {{text = {q(info['license'])}}}",
        f"authors = [{{name = {q(info['author'])}, email = {q(info['email'])}}}]",
        f"dependencies = {q(info['dependencies'])}",
        f"classifiers = {q(info['classifiers'])}",
        f"urls = {{Home = {q(info['url'])}}}",
        "",
        "[tool.setuptools]",
        f"packages = {q(packages)}",
        f"package-dir = {{{q(info['package'])} = \"src\"}}",
        "include-package-data = false",
        'license-files = ["LICENSE"]',
        "",
        "[tool.setuptools.package-data]",
        f"{q(info['package'])} = {q(info['package_data'])}",
        "",
    ]
    return "\n".join(lines)


def build_wheel(dist: Path = DIST, quiet: bool = True) -> Path:
    """Build the bundle wheel into dist/ and return its path."""
    info = read_bundle_info()
    if not (SRC / "__init__.py").is_file():
        raise SystemExit(f"build_bundle: {SRC}/__init__.py is missing")
    if not LICENSE.is_file():
        raise SystemExit(f"build_bundle: {LICENSE} is missing")
    # chimerax.gaussianem from src/, and its subpackages. No chimerax/__init__.py goes
    # into the wheel: that file belongs to the ChimeraX core.
    packages = [info["package"]] + sorted(
        info["package"] + "." + ".".join(p.parent.relative_to(SRC).parts)
        for p in SRC.rglob("__init__.py")
        if p.parent != SRC and "__pycache__" not in p.parts)
    dist.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build_bundle_") as tmp:
        # Build in a staging copy so no build/ or *.egg-info lands in the repository.
        stage = Path(tmp)
        shutil.copytree(SRC, stage / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (stage / "README.txt").write_text(info["description"] + "\n")
        shutil.copyfile(LICENSE, stage / "LICENSE")
        (stage / "pyproject.toml").write_text(_pyproject(info, packages))
        out = stage / "out"
        code = ("import sys, setuptools.build_meta as b; "
                "print(b.build_wheel(sys.argv[1]))")
        r = subprocess.run([sys.executable, "-c", code, str(out)], cwd=stage,
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise SystemExit("build_bundle: setuptools failed to build the wheel")
        if not quiet:
            sys.stdout.write(r.stdout)
        name = r.stdout.strip().splitlines()[-1]
        wheel = _restore_name_case(out / name, info["name"], info["version"], dist)
    return wheel


def _restore_name_case(built: Path, name: str, version: str, dist: Path) -> Path:
    """Copy the wheel to dist/ as ``ChimeraX_GaussianEM-...``, not ``chimerax_gaussianem-...``.

    Current setuptools lower-cases the wheel's file name and its dist-info folder. The
    toolshed takes a bundle's name from that folder, so the bundle would be called
    "chimerax-gaussianem" here but "ChimeraX-GaussianEM" in the ChimeraX app (whose
    bundle builder keeps the case), and saved sessions name the bundle. Only names
    change: file contents and their RECORD hashes stay as built.
    """
    import zipfile

    stem = f"{name.replace('-', '_')}-{version}"
    old_info = built.name.split("-")[0] + f"-{version}.dist-info/"
    new_info = f"{stem}.dist-info/"
    wheel = dist / (stem + "-" + built.name.split("-", 2)[2])
    with zipfile.ZipFile(built) as zin, \
            zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.startswith(old_info):
                item.filename = new_info + item.filename[len(old_info):]
                if item.filename.endswith("/RECORD"):
                    data = data.decode().replace(old_info, new_info).encode()
            zout.writestr(item, data)
    for stale in dist.glob(f"{built.name.split('-')[0]}-*.whl"):
        if stale != wheel and stale.name != wheel.name:
            stale.unlink()  # a lower-case twin from an older build
    return wheel


def toolshed_cache_dirs() -> list[Path]:
    """Where the toolshed may have cached its list of installed bundles.

    ``$XDG_CACHE_HOME/ChimeraX/<major.minor>/toolshed`` for this environment's
    XDG_CACHE_HOME (or ~/.cache) and for the repository's scratch folder (.cache/).
    """
    try:
        from importlib.metadata import version
        major_minor = ".".join(version("ChimeraX-Core").split(".")[:2])
    except Exception:
        major_minor = "1.7"
    bases = {Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")),
             REPO / ".cache" / "chimerax" / "xdg" / "cache"}
    return [b / "ChimeraX" / major_minor / "toolshed" for b in sorted(bases)]


def install_wheel(wheel: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--force-reinstall", "--disable-pip-version-check", str(wheel)],
                   check=True)
    for d in toolshed_cache_dirs():
        if d.exists():
            shutil.rmtree(d)
            print(f"cleared toolshed cache {d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", action="store_true",
                    help="pip-install the wheel into this Python (--no-deps --force-reinstall)")
    ap.add_argument("--dist", type=Path, default=DIST, help="output folder (default dist/)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show setuptools' output")
    args = ap.parse_args(argv)
    wheel = build_wheel(args.dist, quiet=not args.verbose)
    print(f"built {wheel}")
    if args.install:
        install_wheel(wheel)
        print(f"installed {wheel.name} into {sys.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
