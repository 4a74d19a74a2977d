"""Keep freed memory for reuse instead of handing it back to the OS (glibc only).

glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so each
large activation — CQL's [10 critics, 7680 rows, 256] tensors, a 100k-row rollout — pays page
faults on first touch, every time. On the 2-core benchmark machine that made a 40 MB ReLU 5×
slower and the eager fine-tune update 1.3× slower (docs/performance.md). Serving large blocks
from the heap and never trimming it is what a caching allocator does; it costs a process that
never shrinks below its peak, the usual trade for a training run.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
OPT_OUT = "WSRL_WM_SYSTEM_MALLOC"  # set to 1 to leave the allocator as it is


def keep_freed_memory() -> bool:
    """Apply the setting; False where it does not apply (not glibc, or opted out)."""
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT) == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # e.g. musl has no mallopt
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
