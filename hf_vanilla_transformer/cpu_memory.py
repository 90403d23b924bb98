"""glibc's malloc tuned for CPU training and decoding, whose steps each allocate and free large tensors."""

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_REUSED_BLOCK_BYTES = 1 << 30


def reuse_freed_cpu_memory() -> bool:
    """Makes glibc's malloc keep freed blocks of up to 1 GiB for reuse instead of unmapping them.

    glibc maps every block above its mmap threshold (32 MiB at most by default) afresh from the kernel and unmaps
    it when freed, so each CPU training step faults in again the pages of its (N, V) logits, log-probabilities
    and their gradients (256 MB each at 8,192 tokens and V = 8000): allocating and filling one such tensor took
    72-96 ms, against 10 ms in reused memory. Beam search allocates (rows, V) scores several times a step
    (benchmarks/RESULTS.md). torch has no caching allocator on CPU (its tuning guide suggests preloading jemalloc
    or tcmalloc); this needs nothing installed. Applies to the whole process. Returns whether malloc took the
    settings: False where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(parameter, _REUSED_BLOCK_BYTES) for parameter in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
