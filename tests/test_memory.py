import gc
import re
from pathlib import Path

import pyarrow as pa
import pytest

from genstruct_datasets._memory import _malloc_trim, release_freed_memory, system_memory_pool

STATUS = Path("/proc/self/status")


def anonymous_mib() -> float:
    return int(re.search(r"^RssAnon:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE).group(1)) / 1024


@pytest.mark.skipif(not STATUS.exists() or _malloc_trim() is None, reason="reads /proc and needs glibc's malloc_trim")
def test_freed_memory_goes_back_to_the_os():
    release_freed_memory()  # what earlier tests freed, so that the chunks below come from fresh pages
    before = anonymous_mib()
    chunks = [b"x" * 65536 for _ in range(3200)]  # 200 MiB in heap chunks, below glibc's mmap threshold
    top = b"y" * 65536  # allocated last: the heap cannot shrink from the top by itself
    del chunks
    gc.collect()
    held = anonymous_mib()
    # What a shard leaves behind: freed, but still the process's memory as far as the OS can tell.
    assert held - before > 150
    release_freed_memory()
    assert held - anonymous_mib() > 150
    assert top


def test_arrow_allocates_from_malloc_inside_the_block_only():
    default = pa.default_memory_pool().backend_name
    with pytest.raises(KeyError), system_memory_pool():
        assert pa.default_memory_pool().backend_name == "system"
        made_inside = pa.array(range(100_000))
        raise KeyError  # the pool is restored on the way out of a failed build too
    assert pa.default_memory_pool().backend_name == default
    assert made_inside.sum().as_py() == sum(range(100_000))  # still valid, and freed into its own pool
    del made_inside
