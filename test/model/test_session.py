"""StreamingSession: equal to the whole-sequence loop, provisional output, persistence, errors."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
import torch

from spann3r_model.config import EngineConfig, MemoryConfig
from spann3r_model.preprocess import preprocess
from spann3r_model.session import StreamingSession

CPU = EngineConfig(device='cpu')


def _session(model, memory, **kw):
    kw.setdefault('estimate_pose', False)
    return StreamingSession(model, memory, CPU, **kw)


@pytest.fixture(scope='module')
def streamed(parity_model, parity_configs, parity_frames):
    session = _session(parity_model, parity_configs[1], provisional=True)
    outs = [session.step(rgb, stamp=0.1 * i) for i, rgb in enumerate(parity_frames)]
    return outs, session.flush(), session


def test_streaming_equals_forward_sequence(streamed, parity_model, parity_configs,
                                           parity_frames):
    outs, last, _ = streamed
    imgs = [torch.from_numpy(preprocess(f).img)[None] for f in parity_frames]
    with torch.no_grad():
        seq = parity_model.forward_sequence(imgs, parity_configs[1])
    assert outs[0].refined is None and outs[0].provisional is None
    refined = [o.refined for o in outs[1:]] + [last]
    assert [r.index for r in refined] == list(range(12))
    for j, r in enumerate(refined):
        assert not r.provisional and r.stamp == pytest.approx(0.1 * j)
        assert r.pts3d.shape == (224, 224, 3) and r.conf.shape == (224, 224)
        np.testing.assert_allclose(r.pts3d, seq.preds[j]['pts3d'][0].numpy(), atol=1e-6)
        np.testing.assert_allclose(r.conf, seq.preds[j]['conf'][0].numpy(), atol=1e-6)
        np.testing.assert_array_equal(r.rgb, parity_frames[j])
    for i, o in enumerate(outs[1:]):
        p = o.provisional
        assert p.provisional and p.index == i + 1
        np.testing.assert_allclose(p.pts3d, seq.preds_all[i][1]['pts3d'][0].numpy(), atol=1e-6)


def test_provisional_equals_official_head2(streamed, parity_dir):
    outs, last, _ = streamed
    official = load_file(str(parity_dir / 'outputs_head2_intermediate.safetensors'))
    for i in range(10):
        p = outs[i + 1].provisional
        theirs = official[f'step{i:02d}.res2.pts3d_in_other_view'][0].numpy()
        assert np.abs(p.pts3d[::4, ::4] - theirs).max() < 1e-4
        theirs = official[f'step{i:02d}.res2.conf'][0].numpy()
        assert np.abs(p.conf[::4, ::4] - theirs).max() < 1e-4
    # The provisional result of the last frame is what flush() returns.
    np.testing.assert_array_equal(outs[-1].provisional.pts3d, last.pts3d)


def test_flush_does_not_change_the_session(streamed):
    _, last, session = streamed
    again = session.flush()
    np.testing.assert_array_equal(again.pts3d, last.pts3d)
    assert session.frame_count == 12


def test_save_and_resume(parity_model, parity_configs, parity_frames, tmp_path):
    memory = parity_configs[1]
    a = _session(parity_model, memory)
    for i, rgb in enumerate(parity_frames[:6]):
        a.step(rgb, float(i))
    path = tmp_path / 'session.safetensors'
    save_file(a.state_dict(), str(path), metadata={'meta': json.dumps(a.metadata())})
    tokens_at_save = a.memory.num_tokens
    rest_a = [a.step(rgb, float(6 + i)).refined for i, rgb in enumerate(parity_frames[6:])]
    rest_a.append(a.flush())

    b = _session(parity_model, memory)
    from safetensors import safe_open
    with safe_open(str(path), 'pt') as f:
        meta = json.loads(f.metadata()['meta'])
    b.load_state(load_file(str(path)), meta)
    assert b.frame_count == 6 and b.memory.num_tokens == tokens_at_save
    rest_b = [b.step(rgb, float(6 + i)).refined for i, rgb in enumerate(parity_frames[6:])]
    rest_b.append(b.flush())
    for ra, rb in zip(rest_a, rest_b):
        assert ra.index == rb.index
        np.testing.assert_allclose(ra.pts3d, rb.pts3d, atol=1e-6)
    assert b.memory_stats == a.memory_stats

    other = _session(parity_model, MemoryConfig(work_mem_size=2, long_mem_size=1300))
    with pytest.raises(ValueError, match='different model architecture, memory'):
        other.load_state(load_file(str(path)), meta)
    with pytest.raises(ValueError, match='format'):
        b.load_state({}, {'format': 'something else'})


def test_bad_frames_are_rejected_without_side_effects(parity_model, parity_configs,
                                                      parity_frames):
    s = _session(parity_model, parity_configs[1])
    s.step(parity_frames[0], 0.0)
    for bad in (np.zeros((10, 10), np.uint8), parity_frames[1].astype(np.float32),
                np.zeros((1, 400, 3), np.uint8)):
        with pytest.raises(ValueError):
            s.step(bad, 1.0)
    assert s.frame_count == 1
    assert s.step(parity_frames[1], 1.0).refined.index == 0


def test_reset_flush_and_engine_validation(parity_model, parity_configs, parity_frames):
    s = _session(parity_model, parity_configs[1])
    assert s.flush() is None
    s.step(parity_frames[0], 0.0)
    assert s.flush() is None
    s.step(parity_frames[1], 1.0)
    s.reset()
    assert s.frame_count == 0 and s.memory is None
    assert s.step(parity_frames[2], 2.0).refined is None
    with pytest.raises(ValueError, match='CUDA'):
        StreamingSession(parity_model, engine_config=EngineConfig(device='cpu', precision='fp16'))
    with pytest.raises(ValueError, match='Spann3R'):
        StreamingSession(torch.nn.Linear(2, 2))


def test_pose_estimation_attaches_focal_and_pose(parity_model, parity_configs, parity_frames):
    s = StreamingSession(parity_model, parity_configs[1], CPU, estimate_pose=True)
    results = [s.step(rgb, float(i)).refined for i, rgb in enumerate(parity_frames[:4])][1:]
    results.append(s.flush())
    assert results[0].focal is not None and np.isfinite(results[0].focal)
    assert results[0].focal > 0
    assert all(r.focal == results[0].focal for r in results)
    poses = [r.T_world_cam for r in results if r.T_world_cam is not None]
    assert poses, 'PnP found no pose at all'
    for T in poses:
        assert T.shape == (4, 4) and np.allclose(T[3], [0, 0, 0, 1])
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5)


def test_from_checkpoint_round_trip(parity_model, parity_configs, parity_frames, tmp_path):
    from spann3r_model.checkpoint_safetensors import save_safetensors

    path = tmp_path / 'weights.safetensors'
    save_safetensors(parity_model, parity_configs[0], path)
    loaded = StreamingSession.from_checkpoint(str(path), CPU, parity_configs[1],
                                              estimate_pose=False)
    direct = _session(parity_model, parity_configs[1])
    for i, rgb in enumerate(parity_frames[:3]):
        a, b = direct.step(rgb, float(i)), loaded.step(rgb, float(i))
    np.testing.assert_array_equal(a.refined.pts3d, b.refined.pts3d)
    np.testing.assert_array_equal(direct.flush().conf, loaded.flush().conf)


def test_bf16_autocast_on_the_cpu_keeps_float32_results_and_state(parity_model, parity_configs,
                                                                   parity_frames):
    bf16 = EngineConfig(device='cpu', precision='bf16')
    ref = _session(parity_model, parity_configs[1])
    s = StreamingSession(parity_model, parity_configs[1], bf16, estimate_pose=False)
    for i, rgb in enumerate(parity_frames[:3]):
        a, b = ref.step(rgb, float(i)).refined, s.step(rgb, float(i)).refined
    # Autocast really runs (the results differ from float32) and stays close to float32.
    assert b.pts3d.dtype == np.float32 and b.conf.dtype == np.float32
    assert not np.array_equal(a.pts3d, b.pts3d)
    scale = np.abs(a.pts3d).max()
    assert np.abs(a.pts3d - b.pts3d).max() < 0.05 * scale
    assert s._prev.feat.dtype == torch.bfloat16
    assert s.memory.keys.dtype == torch.float32 and torch.isfinite(s.memory.attn).all()
    # The state keeps the dtypes computed in (the memory is float32), so that continuing from
    # it gives exactly what the running session gives.
    tensors, meta = s.state_dict(), s.metadata()
    assert tensors['prev.query'].dtype == torch.bfloat16
    assert all(t.dtype in (torch.float32, torch.int64) for k, t in tensors.items()
               if k.startswith('memory.'))
    restored = StreamingSession(parity_model, parity_configs[1], bf16, estimate_pose=False)
    restored.load_state(tensors, meta)
    for i, rgb in enumerate(parity_frames[3:5], start=3):
        a, b = s.step(rgb, float(i)).refined, restored.step(rgb, float(i)).refined
        assert np.array_equal(a.pts3d, b.pts3d) and np.array_equal(a.conf, b.conf)
    assert np.array_equal(s.flush().pts3d, restored.flush().pts3d)
    # A float32 session continues a bfloat16 state (widened), and the other way round.
    fp32 = _session(parity_model, parity_configs[1])
    fp32.load_state(restored.state_dict(), restored.metadata())
    assert fp32._prev.feat.dtype == torch.float32 and fp32._pending[0].dtype == torch.float32
    assert np.isfinite(fp32.step(parity_frames[5], 5.0).refined.pts3d).all()
    s.load_state(fp32.state_dict(), fp32.metadata())
    assert np.isfinite(s.step(parity_frames[6], 6.0).refined.pts3d).all()


def test_intrinsics_are_kept_per_camera_and_saved(parity_model, parity_configs, parity_frames):
    from spann3r_model.data.crop import compute_crop
    from spann3r_model.geometry.camera import estimate_focal_posed
    from spann3r_model.pose_estimation import pnp_mask
    s = StreamingSession(parity_model, parity_configs[1], CPU, estimate_pose=True)
    height, width = parity_frames[0].shape[:2]
    K0 = np.array([[200.0, 0.0, width / 2 + 7.0], [0.0, 215.0, height / 2 - 5.0], [0, 0, 1]])
    results = []
    for i, rgb in enumerate(parity_frames[:6]):
        camera = i % 2
        out = s.step(rgb, float(i), camera=camera, K=K0 if camera == 0 else None)
        results.append(out.refined)
    results = results[1:] + [s.flush()]
    assert [r.camera for r in results] == [0, 1, 0, 1, 0, 1]
    expected_K0 = compute_crop(width, height).input_to_model_intrinsics(K0)
    for r in results[0::2]:
        assert r.intrinsics == 'camera_info'
        np.testing.assert_array_equal(r.K, expected_K0)
        assert r.focal == expected_K0[0, 0]
    # Camera 1's focal comes from its own first frame (index 1), camera 0's is never estimated.
    first = results[1]
    focal1 = estimate_focal_posed(first.pts3d, mask=pnp_mask(first.conf))
    for r in results[1::2]:
        assert r.intrinsics == 'estimated' and r.focal == focal1
        np.testing.assert_array_equal(r.K[:2, 2], (112.0, 112.0))
    meta = json.loads(json.dumps(s.metadata()))
    assert meta['focals'] == {'1': focal1} and meta['focal'] is None
    assert meta['prev']['camera'] == 1
    resumed = StreamingSession(parity_model, parity_configs[1], CPU, estimate_pose=True)
    resumed.load_state(s.state_dict(), meta)
    nxt = resumed.step(parity_frames[6], 6.0, camera=1)
    assert nxt.refined.camera == 1 and nxt.refined.focal == focal1
    with pytest.raises(ValueError, match='pinhole'):
        s.step(parity_frames[0], 7.0, camera=0, K=np.zeros((3, 3)))
    # A state saved with one focal (before per-camera focals) gives it to camera 0.
    old = dict(meta, focal=123.0)
    del old['focals'], old['first_index']
    old['prev'] = {k: v for k, v in meta['prev'].items() if k not in ('camera', 'K')}
    resumed.load_state(s.state_dict(), old)
    assert resumed.step(parity_frames[6], 6.0).refined.focal == 123.0
