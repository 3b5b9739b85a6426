"""Build hook: compile the pf.conf front end's hot modules with mypyc, or install pure Python.

Everything else about the package is in pyproject.toml. The compiled modules are built from
the very same ``.py`` files (there is no second implementation); ``pfha.conf`` falls back to
the sources when no build is present, when it is older than the sources, or when
``PFHA_CONF_PURE=1`` is set (see ``pfha/conf/__init__.py``).

The build is skipped, and the install goes on in pure Python, when ``PFHA_NO_COMPILE=1`` is
set, when mypyc cannot be imported, or when compiling fails (no C compiler, no Python.h): a
faster parser is never worth a failed install.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CONF = HERE / "src" / "pfha" / "conf"


def compiled_modules() -> list[str]:
    """The module list lives in pfha/conf/__init__.py (it also decides what to load)."""
    text = (CONF / "__init__.py").read_text()
    found = re.search(r"^COMPILED_MODULES = \(([^)]*)\)", text, re.M)
    if found is None:
        raise SystemExit("setup.py: COMPILED_MODULES not found in pfha/conf/__init__.py")
    return re.findall(r'"(\w+)"', found.group(1))


def warn(message: str) -> None:
    print(f"pfha setup.py: {message}; pf.conf front end stays pure Python", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """build_ext that gives up (pure Python) instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure: fall back
            warn(f"compiling failed ({error})")
            return
        # a build that found nothing to redo keeps its old files: mark them as current, since
        # pfha.conf trusts them only when newer than the sources
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                os.utime(path)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            warn(f"compiling {ext.name} failed ({error})")


def ext_modules() -> list:
    if os.environ.get("PFHA_NO_COMPILE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        warn("mypyc not available")
        return []
    paths = [f"src/pfha/conf/{name}.py" for name in compiled_modules()]
    old = os.getcwd()
    os.chdir(HERE)  # mypyc takes paths relative to the project
    try:
        return mypycify(paths, opt_level="3", group_name="pfha_conf_native")
    except BaseException as error:  # mypy errors end in SystemExit
        warn(f"mypyc refused the sources ({error})")
        return []
    finally:
        os.chdir(old)


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
