"""Process-wide CPU settings: applied by the application's helper, never by the session."""

import torch

from spann3r_model.backends.process import apply_process_settings
from spann3r_model.config import EngineConfig
from spann3r_model.session import StreamingSession


def test_a_session_changes_no_process_wide_setting(parity_model):
    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    StreamingSession(parity_model, engine_config=EngineConfig(device='cpu', num_threads=other))
    assert torch.get_num_threads() == before


def test_the_helper_sets_the_threads_and_reports_them():
    before = torch.get_num_threads()
    try:
        applied = apply_process_settings(EngineConfig(device='cpu', num_threads=3,
                                                      keep_freed_memory=False))
        assert torch.get_num_threads() == 3
        assert applied == {'num_threads': 3, 'keep_freed_memory': False}
        # 0 keeps whatever the process uses
        assert apply_process_settings(EngineConfig(num_threads=0, keep_freed_memory=False)) == {
            'num_threads': 3, 'keep_freed_memory': False}
    finally:
        torch.set_num_threads(before)
