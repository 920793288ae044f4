"""Freed tensor memory is reused instead of faulted in again (glibc on Linux)."""

import json
import subprocess
import sys

# Six feature maps as large as the heads' biggest (224 x 224 x 128 floats, 25.7 MB each) are
# allocated, filled and freed repeatedly, as every released-model frame does; the script prints
# the page faults of each round.
SCRIPT = """
import json, resource, sys
import torch
from spann3r_model.backends.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == 'tuned' else None
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    maps = [torch.ones(224 * 224 * 128) for _ in range(6)]
    del maps
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({'tuned': tuned, 'faults': faults}))
"""


def _rounds(mode: str) -> dict:
    out = subprocess.run([sys.executable, '-c', SCRIPT, mode], check=True, capture_output=True,
                         text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_feature_maps_are_not_faulted_in_again():
    assert sys.platform.startswith('linux')  # a glibc setting; the project targets Linux
    tuned = _rounds('tuned')
    assert tuned['tuned'] is True
    # Each round touches 37,632 pages. Left alone, glibc usually (not always: its thresholds
    # adapt) returns them to the system at every free and faults them in again, so no baseline
    # is asserted; with the thresholds set, the last rounds must reuse them.
    assert max(tuned['faults'][-3:]) < 1000, tuned
