"""Build crossent's optional compiled kernel; the package metadata lives in pyproject.toml.

``crossent._ckernel`` is plain C loaded through ctypes (see ``crossent/_kernel.py``). It is
optional: where no compiler is found the install still succeeds and crossent runs its NumPy
kernel. No ``-march=native``: on x86-64 Linux the hot functions carry AVX-512, AVX2 and
baseline clones chosen at load time, so one build runs on any x86-64 CPU.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2", "/fp:precise"]
else:
    # -fopenmp-simd: the `omp simd` reductions only, no OpenMP runtime
    compile_args = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=gnu11"]

setup(
    ext_modules=[
        Extension(
            "crossent._ckernel",
            sources=["src/crossent/_kernel.c"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
