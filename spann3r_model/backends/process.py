"""Process-wide CPU settings an application applies once: torch threads and the allocator.

A library constructor must not change the process it runs in, so :class:`StreamingSession`
sets none of this. Applications (the node, the command-line tools, the benchmarks) call
:func:`apply_process_settings` with their engine configuration before they build a session.
"""

from __future__ import annotations

import torch

from spann3r_model.backends.allocator import keep_freed_memory
from spann3r_model.config import EngineConfig


def apply_process_settings(engine_config: EngineConfig) -> dict[str, object]:
    """Apply the engine's process-wide settings; return what was applied.

    :param engine_config: ``num_threads`` (0 keeps torch's thread count) and
        ``keep_freed_memory`` (glibc only, see :mod:`spann3r_model.backends.allocator`).
    :return: ``{'num_threads': threads torch now uses, 'keep_freed_memory': whether the
        allocator thresholds were set}``.
    """
    if engine_config.num_threads > 0:
        torch.set_num_threads(engine_config.num_threads)
    kept = keep_freed_memory() if engine_config.keep_freed_memory else False
    return {'num_threads': torch.get_num_threads(), 'keep_freed_memory': kept}
