"""Build the Cython kernels. Metadata lives in pyproject.toml.

Every ``ext/_<topic>_cy.pyx`` becomes ``flk_fast.kernels._<topic>_cy``.
Switches (read here only): FLK_FAST_DEBUG, FLK_FAST_SANITIZE, FLK_FAST_CYTHON_TRACE.
"""

import os
import pathlib

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


DEBUG, SANITIZE, TRACE = (
    _flag("FLK_FAST_DEBUG"),
    _flag("FLK_FAST_SANITIZE"),
    _flag("FLK_FAST_CYTHON_TRACE"),
)
directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "nonecheck": False,
    "linetrace": TRACE,
}
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION")]
# OpenMP lets the large-n kernels (coherence) use every core inside nogil loops.
cflags = ["-O3", "-fopenmp"]
lflags: list[str] = ["-fopenmp"]
if DEBUG:
    cflags = ["-O0", "-g", "-UNDEBUG", "-fopenmp"]
if SANITIZE:
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    lflags += ["-fsanitize=address,undefined"]
if TRACE:
    macros += [("CYTHON_TRACE_NOGIL", "1")]

extensions = [
    Extension(
        f"flk_fast.kernels.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include(), "ext"],
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=lflags,
    )
    for pyx in sorted(pathlib.Path("ext").glob("_*_cy.pyx"))
]
print(f"flk_fast build: {'accelerated' if extensions else 'pure'} "
      f"({len(extensions)} Cython modules, debug={DEBUG}, sanitize={SANITIZE})")
setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, nthreads=2,
                          include_path=["ext"]),
)
