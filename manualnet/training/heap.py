"""The C heap kept warm for training: the process-level speed setting, in one place.

A training step frees and allocates the same few MB of activations every step. glibc's malloc gives the free
memory at the top of its heap back to the kernel once more than its trim threshold is free, and maps blocks
over its mmap threshold afresh, so the next step's tensors page-fault in again (every page zeroed by the
kernel). ``keep_freed_memory`` raises both thresholds, so the memory a step frees serves the next one, as
PyTorch's CUDA caching allocator keeps GPU memory. The process then holds its peak heap until it exits, so
``manualnet train``, whose process is the run's, sets it; the Python API leaves the caller's process alone.
``python scripts/bench_heap.py`` measures what it saves (docs/performance.md, "The memory allocator").
"""

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers, from glibc's <malloc.h>
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB free at the heap's top
MMAP_THRESHOLD = 32 * 2**20  # blocks up to 32 MiB come from the heap (the most glibc <= 2.34 takes on 64 bits)


@functools.cache
def keep_freed_memory():
    """Set both thresholds, once per process. True when set; False where the C library is not glibc (macOS,
    Windows, musl: their allocators are left as they are) or glibc refused a value."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: another libc's mallopt may mean otherwise)
    except (OSError, TypeError, AttributeError):
        return False
    # the mmap threshold first: a glibc that refuses it (a 32-bit one caps it lower) is then left as it was
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                      TRIM_THRESHOLD))
