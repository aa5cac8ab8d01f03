"""keep_freed_host_memory: after it, a large tensor freed and allocated again is not page-faulted
in again (glibc keeps it in the heap instead of unmapping it)."""

from __future__ import annotations

import resource
import sys

import pytest
import torch
from sae_core.train.host_alloc import keep_freed_host_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_large_tensors_are_reused_without_page_faults() -> None:
    assert keep_freed_host_memory()
    for _ in range(3):  # warm up: the heap grows to hold the block once
        t = torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's default mmap threshold
        del t
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        t = torch.ones(64 * 2**20 // 4)
        del t
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 16384, faults  # an mmap'd 64 MiB block costs 16k faults each time: 82k for 5
