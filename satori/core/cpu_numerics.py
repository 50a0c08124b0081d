"""Same inputs, same bits, on any x86-64 machine with AVX2: the CPU code paths that decide the numbers, pinned.

torch, the BLAS (MKL) and oneDNN it calls, and numpy each pick their kernels by the CPU's instruction set
(AVX-512 where there is one), and torch's reductions split their work by the thread count. Every choice
gives a float32 result that differs in the last bits, and the warm-up and GRPO grow those bits into
another model: the same code, seed and data made other weights, other benchmark scores and another
dvc.lock on another machine (measured: README, Same bits on every machine). So every process of the
project computes on the CPU with the code paths every x86-64 machine since 2013 has, on one thread.

Set through the environment, before torch or numpy loads (each reads these once, at load or first use),
by `import satori` (satori/__init__.py), which every stage, tool and test imports first; child processes
(ms-swift, torchrun's ranks, DVC's stages) inherit them. A value the user set is overridden: a machine's
own choice is exactly what must not decide the result.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from pathlib import Path

# SATORI_CPU_NUMERICS=native keeps the machine's own choices (faster on some CPUs, other bits): for speed
# comparisons, and for the test that shows the pinning is what makes the bits equal.
MODE_ENV = "SATORI_CPU_NUMERICS"
NATIVE = "native"

PINNED = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels (elementwise, reductions, fused AdamW, softmax...)
    "MKL_CBWR": "AVX2,STRICT",  # MKL's code branch (its GEMM: torch's float32 matmul); STRICT: thread-proof too
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions: the vision tower's patch embedding; some matmuls)
    "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT",  # no implicit bf16/tf32 down-conversion in oneDNN
    "OMP_NUM_THREADS": "1",  # torch splits a reduction by its thread count; one thread, one order
    "MKL_NUM_THREADS": "1",
    # numpy 2.4's dispatch groups above AVX2 (X86_V3); its AVX-512 exp/log/... differ from the AVX2 ones in the
    # last bits. Names are numpy's own and change with its version (pinned in pyproject.toml).
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}


def gpu_visible(environ: os._Environ | dict[str, str] = os.environ, dev: Path = Path("/dev")) -> bool:
    """An NVIDIA GPU this process may use: the paper profiles compute there, and the pinning would only slow
    their CPU side (data loading, image resizing) for bits that GPUs do not reproduce anyway."""
    if environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(dev.glob("nvidia[0-9]*"))


def cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        return " avx2" in cpuinfo.read_text(errors="replace")
    except OSError:
        return True  # cannot tell (not Linux): assume a recent CPU rather than warn on every run


def unpinned_environment(environ: os._Environ | dict[str, str] = os.environ) -> dict[str, str]:
    """environ without PINNED's keys and MODE_ENV: a child process's environment as a machine that never imported
    satori would give it (what the same-bits tests and the pinning benchmark start from)."""
    return {key: value for key, value in environ.items() if key not in PINNED and key != MODE_ENV}


def pin(environ: os._Environ | dict[str, str] = os.environ) -> dict[str, str]:
    """Set PINNED in environ unless this process runs natively (MODE_ENV, a visible GPU, not x86-64); returns
    what it set. Warns when torch or numpy had already loaded with other values: this process is not pinned
    then, though its children are."""
    if environ.get(MODE_ENV) == NATIVE or gpu_visible(environ) or platform.machine() not in ("x86_64", "AMD64"):
        return {}
    if not cpu_has_avx2():
        warnings.warn(
            "satori: this CPU has no AVX2, so torch runs other kernels than the machines that wrote dvc.lock: "
            "expect other bits, and dvc.lock and the README's numbers to differ",
            RuntimeWarning,
            stacklevel=2,
        )
    late = [  # this process's settings, when a library that reads them has already loaded
        f"{key}={environ.get(key)!r}"
        for key, value in PINNED.items()
        if environ is os.environ
        and environ.get(key) != value
        and ("numpy" if key.startswith("NPY_") else "torch") in sys.modules
    ]
    environ.update(PINNED)
    if late:
        warnings.warn(
            f"satori: torch or numpy was imported before satori, with {', '.join(late)}: this process computes "
            f"with the machine's own CPU code paths (its child processes are pinned). Import satori first",
            RuntimeWarning,
            stacklevel=2,
        )
    return dict(PINNED)
