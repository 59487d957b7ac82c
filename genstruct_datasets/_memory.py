"""Hand the memory that a finished stage freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Return freed memory to the OS: what Arrow's memory pool and, with glibc, malloc's free lists keep.

    Allocators keep what a stage frees for reuse, in pieces; over the hundreds of shards of a long build those
    pieces add up, and the process's resident memory creeps up with the size of the corpus. Called between
    shards, this keeps it level (see `benchmarks/README.md`). It takes a few milliseconds.
    """
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
