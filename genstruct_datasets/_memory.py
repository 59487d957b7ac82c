"""Hand the memory that a finished stage freed back to the operating system."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

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


@contextlib.contextmanager
def system_memory_pool() -> Iterator[None]:
    """Have Arrow allocate from the C library's `malloc` (its "system" pool) inside the block.

    Arrow's default pool on Linux, mimalloc, keeps 40 to 50 MiB after `datasets` has read ten or more parquet
    files, whatever `release_unused` asks; the system pool keeps 11 to 14 MiB once [`release_freed_memory`] has
    trimmed `malloc`. Arrays made inside may outlive the block: each buffer frees itself into its own pool.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
