"""The malloc thresholds the command line sets (svhn_vae.allocator)."""

import platform

from svhn_vae.allocator import keep_freed_memory


def test_keep_freed_memory_sets_the_thresholds_exactly_on_glibc():
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
