"""Build the Cython kernels. Metadata lives in pyproject.toml.

Every ``ext/_<topic>_cy.pyx`` becomes ``flk_fast.kernels._<topic>_cy``.
Switches (read here only): FLK_FAST_DEBUG, FLK_FAST_SANITIZE, FLK_FAST_CYTHON_TRACE,
FLK_FAST_OPENMP (0: build without OpenMP even when the compiler has it; default on
when the compiler links -fopenmp). Each takes 1/true/yes/on or 0/false/no/off/empty
and stops the build on anything else. A compile error stops the build (setuptools'
CompileError): no package is installed without its extensions.
"""

import os
import pathlib
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name: str, default: bool = False) -> bool:
    """A boolean build switch, with flk_fast._env.parse_flag's values (that module
    cannot be imported before the package is built): a typo stops the build instead
    of silently building something else."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SystemExit(
        f"flk_fast build: {name}={text!r} is not a boolean; use one of 1, true, yes, "
        "on (on) or 0, false, no, off (off)"
    )


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

# Without OpenMP (Apple clang has no -fopenmp) `cimport openmp` still includes <omp.h>:
# this stand-in makes every prange loop run on the calling thread alone.
_ONE_THREAD_OMP_H = """\
#ifndef FLK_ONE_THREAD_OMP_H
#define FLK_ONE_THREAD_OMP_H
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif
"""


def _have_openmp() -> bool:
    """Whether the C compiler compiles and links a program with -fopenmp."""
    if not _flag("FLK_FAST_OPENMP", default=True):
        return False
    from setuptools._distutils import ccompiler, sysconfig

    cc = ccompiler.new_compiler()
    sysconfig.customize_compiler(cc)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objs = cc.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            cc.link_executable(objs, os.path.join(tmp, "omp_probe"),
                               extra_postargs=["-fopenmp"])
        except Exception:  # CompileError, LinkError, or no compiler at all
            return False
    return True


OPENMP = _have_openmp()
include_dirs = [np.get_include(), "ext"]
if OPENMP:
    # OpenMP lets the large-n kernels (coherence) use every core inside nogil loops.
    omp_flags = ["-fopenmp"]
else:
    stub_dir = pathlib.Path("build", "one-thread-omp")
    stub_dir.mkdir(parents=True, exist_ok=True)
    (stub_dir / "omp.h").write_text(_ONE_THREAD_OMP_H)
    include_dirs.insert(0, str(stub_dir))
    omp_flags = []
cflags = ["-O3", *omp_flags]
lflags: list[str] = list(omp_flags)
if DEBUG:
    cflags = ["-O0", "-g", "-UNDEBUG", *omp_flags]
if SANITIZE:
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    lflags += ["-fsanitize=address,undefined"]
if TRACE:
    macros += [("CYTHON_TRACE_NOGIL", "1")]

extensions = [
    Extension(
        f"flk_fast.kernels.{pyx.stem}",
        [str(pyx)],
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=cflags,
        extra_link_args=lflags,
    )
    for pyx in sorted(pathlib.Path("ext").glob("_*_cy.pyx"))
]
if not extensions:
    # Never a silent pure build: the numeric kernels are compiled-only (an sdist or
    # checkout without ext/ would otherwise install a package whose kernels all fail).
    raise SystemExit(
        "flk_fast build: no ext/_*_cy.pyx found next to setup.py; build from a full "
        "checkout or sdist"
    )
print("flk_fast build: accelerated "
      f"({len(extensions)} Cython modules, openmp={OPENMP}, debug={DEBUG}, "
      f"sanitize={SANITIZE})")
setup(
    ext_modules=cythonize(extensions, compiler_directives=directives, nthreads=2,
                          include_path=["ext"]),
)
