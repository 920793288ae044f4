"""spann3r-eval and spann3r-reconstruct end to end on small synthetic data."""

import json
import weakref

import cv2
import numpy as np
import pytest
import torch

from spann3r_model.checkpoint_safetensors import save_safetensors
from spann3r_model.config import EngineConfig, ModelConfig
from spann3r_model.evaluation.predictions import load_predictions, write_frame, write_info
from spann3r_model.io.ply import read_ply
from spann3r_model.results import FrameResult
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R
from spann3r_ros.cli import reconstruct as reconstruct_module
from spann3r_ros.cli.eval import main as eval_main
from spann3r_ros.cli.reconstruct import main as reconstruct_main
from spann3r_ros.cli.reconstruct import reconstruct, unordered_order
from spann3r_ros.cli.synth import main as synth_main
from spann3r_ros.cli.synth import write_scannet
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth')
    assert synth_main(['--out', str(root), '--name', 'room', '--frames', '4', '--width', '160',
                       '--height', '120', '--scannet']) == 0
    return root


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.safetensors'
    save_safetensors(Spann3R(ModelConfig.preset('tiny')), ModelConfig.preset('tiny'), path)
    return path


def _first_camera_points(depth_m, K, T_cam0_cam):
    """``[H, W, 3]`` points of a pinhole depth map in camera 0's frame."""
    v, u = np.mgrid[:depth_m.shape[0], :depth_m.shape[1]].astype(np.float64)
    pts_cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth_m, (v - K[1, 2]) / K[1, 1] * depth_m,
                        depth_m], axis=-1)
    return pts_cam @ T_cam0_cam[:3, :3].T + T_cam0_cam[:3, 3]


def test_the_generators_geometry_scores_zero(tmp_path):
    # The expected pointmaps come from the generator's own depth and poses and the pinhole
    # model, not from the evaluation's loaders: square frames at the evaluation size make the
    # official crop the identity, and the depth is what the ScanNet layout stores (millimetres).
    size = 64
    scene = SyntheticScene(SyntheticConfig(width=size, height=size, num_frames=4, seed=3))
    write_scannet(scene, tmp_path / 'data', 'room', progress=False)
    frames = list(scene.frames())
    T_cam0_world = np.linalg.inv(frames[0].T_world_cam)
    pred_dir = tmp_path / 'pred'
    for f in frames:
        T_cam0_cam = T_cam0_world @ f.T_world_cam
        depth_m = np.round(f.depth.astype(np.float64) * 1000.0) / 1000.0
        pts = _first_camera_points(depth_m, f.K, T_cam0_cam)
        result = FrameResult(index=f.index, stamp=f.stamp, pts3d=pts.astype(np.float32),
                             conf=np.full((size, size), 5.0, np.float32), rgb=f.rgb,
                             crop=None, T_world_cam=T_cam0_cam, focal=float(f.K[0, 0]))
        write_frame(pred_dir, result, source=f.index)
    write_info(pred_dir, {'crop_centre': 'image'})
    out = tmp_path / 'report'
    assert eval_main([str(tmp_path / 'data'), '--predictions', str(pred_dir), '--out',
                      str(out)]) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['evaluated_pixels'] == 4 * size * size  # the room is closed: depth everywhere
    m = report['metrics']
    assert m['acc'] < 1e-5 and m['comp'] < 1e-5 and m['nc'] > 0.999
    assert report['alignment']['factor'] == pytest.approx(1.0, rel=1e-5)
    assert report['ate']['rmse'] < 1e-5 and report['ate']['scale'] == pytest.approx(1.0, rel=1e-5)
    assert (out / 'trajectory.png').exists() and (out / 'ground_truth.ply').exists()


def test_offline_eval_with_checkpoint_reports_latency(synth_root, tiny_checkpoint, tmp_path):
    out = tmp_path / 'report'
    assert eval_main([str(synth_root), '--checkpoint', str(tiny_checkpoint), '--device',
                      'cpu', '--no-pose', '--out', str(out), '--max-frames', '3', '--image-size',
                      '64']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['n_frames'] == 3 and report['latency']['n'] == 3
    assert report['latency']['p50_ms'] > 0 and np.isfinite(report['metrics']['acc'])
    assert (out / 'latency.png').exists() and (out / 'errors.png').exists()


def test_eval_errors_are_clear(synth_root, tmp_path, capsys):
    assert eval_main([str(tmp_path / 'nothing'), '--predictions', str(tmp_path)]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert eval_main([str(synth_root), '--predictions', str(tmp_path)]) == 2
    assert 'no predictions' in capsys.readouterr().err


def test_reconstruct_writes_all_outputs_and_eval_reads_them(synth_root, tiny_checkpoint,
                                                            tmp_path):
    out = tmp_path / 'rec'
    assert reconstruct_main([str(synth_root / 'scans' / 'room'), '--out', str(out),
                             '--checkpoint', str(tiny_checkpoint), '--device', 'cpu',
                             '--no-pose', '--quiet', '--image-size', '64']) == 0
    preds = load_predictions(out)
    assert preds.pts3d.shape == (4, 64, 64, 3) and list(preds.source) == [0, 1, 2, 3]
    ply = read_ply(out / 'points.ply')
    assert len(ply['x'] if 'x' in ply else ply['xyz']) > 0
    info = json.loads((out / 'reconstruction.json').read_text())
    assert info['n_frames'] == 4 and info['input_kind'] == 'scannet'
    assert not (tmp_path / 'rec.partial').exists()
    report_dir = tmp_path / 'report'
    assert eval_main([str(synth_root), '--predictions', str(out), '--out',
                      str(report_dir), '--no-icp']) == 0
    assert json.loads((report_dir / 'report.json').read_text())['n_frames'] == 4


def _chain_score(session, images, prefix, k):
    """Official ranking score of stepping view ``k`` after the views ``prefix``, from scratch.

    The score is the mean of ``(c - 1) / c`` of the refined previous view plus that of view ``k``.
    """
    session.reset()
    for i in prefix:
        session.step(images[i], float(i))
    out = session.step(images[k], float(k))
    conf_prev, conf_new = out.refined.conf, session.flush().conf
    return float(np.mean((conf_prev - 1) / conf_prev) + np.mean((conf_new - 1) / conf_new))


def test_unordered_is_the_greedy_most_confident_chain(tiny_checkpoint):
    # Expected: the pair with the highest score over all ordered pairs, then each time the view
    # with the highest score after the chain so far, every trial replayed from a reset session
    # (the function restores saved states instead).
    session = StreamingSession.from_checkpoint(str(tiny_checkpoint),
                                               engine_config=EngineConfig(device='cpu',
                                                                          image_size=32),
                                               estimate_pose=False)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    order = unordered_order(session, images)
    pairs = {(i, j): _chain_score(session, images, [i], j)
             for i in range(4) for j in range(4) if i != j}
    expected = list(max(pairs, key=pairs.get))
    while len(expected) < 4:
        rest = [k for k in range(4) if k not in expected]
        scores = {k: _chain_score(session, images, expected, k) for k in rest}
        expected.append(max(scores, key=scores.get))
    # these views make every choice matter: neither index order nor the first remaining view
    assert expected[2] != min(set(range(4)) - set(expected[:2]))
    assert order == expected


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_streamed_reconstruction_writes_what_the_whole_sequence_in_memory_gives(
        tiny_frames, tiny_checkpoint, tmp_path):
    # The expected files come from every frame decoded first and every result held, then written
    # with the export writers: what spann3r-reconstruct did before it streamed.
    from spann3r_model.io.atomic import atomic_write
    from spann3r_model.io.ply import write_ply
    from spann3r_model.io.trajectory import write_transforms_json, write_tum
    from spann3r_ros.cli.frame_sources import iter_frames
    scene = tmp_path / 'images'
    scene.mkdir()
    for f in tiny_frames:
        cv2.imwrite(str(scene / f'{f.index:03d}.png'), np.ascontiguousarray(f.rgb[..., ::-1]))
    session = StreamingSession.from_checkpoint(
        str(tiny_checkpoint), engine_config=EngineConfig(device='cpu', image_size=64))
    frames = list(iter_frames(scene))
    results = [r for stamp, rgb, _ in frames if (r := session.step(rgb, stamp).refined)]
    results.append(session.flush())
    expected = tmp_path / 'expected'
    for r in results:
        write_frame(expected, r, r.index)
        png = cv2.imencode('.png', np.ascontiguousarray(r.rgb[..., ::-1]))[1]
        atomic_write(expected / 'imgs' / f'img_{r.index:04d}.png', png.tobytes())
    keep = [np.isfinite(r.pts3d).all(-1) & ((r.conf - 1) / r.conf > 1e-3) for r in results]
    write_ply(expected / 'points.ply', np.concatenate([r.pts3d[k] for r, k in zip(results, keep)]),
              np.concatenate([r.rgb[k] for r, k in zip(results, keep)]),
              np.concatenate([r.conf[k] for r, k in zip(results, keep)]))
    poses = np.stack([r.T_world_cam for r in results])
    write_tum(expected / 'trajectory.tum', [r.stamp for r in results], poses)
    write_transforms_json(expected / 'transforms.json', width=64, height=64,
                          focal=results[0].focal, T_world_cams=poses,
                          file_paths=[f'imgs/img_{i:04d}.png' for i in range(len(results))],
                          ply_file_path='points.ply')

    session.reset()
    info = reconstruct(session, scene, tmp_path / 'rec', progress=False)
    got = _files(tmp_path / 'rec')
    assert json.loads(got.pop('reconstruction.json')) == info
    assert info['order'] == [0, 1, 2, 3, 4] and info['frames_with_pose'] == 5
    assert info['names'] == [name for _, _, name in frames]
    assert got.keys() == _files(expected).keys()
    assert got == _files(expected)


def test_ordered_reconstruction_holds_one_decoded_frame_at_a_time(tiny_checkpoint, tmp_path,
                                                                  monkeypatch):
    alive = {'frames': 0, 'results': 0}
    seen = []

    def track(obj, kind):
        alive[kind] += 1
        weakref.finalize(obj, lambda: alive.__setitem__(kind, alive[kind] - 1))
        return obj

    def frames(path, topic=None):
        rng = np.random.default_rng(0)
        for i in range(12):
            seen.append(dict(alive))  # what is still alive when the next frame is decoded
            yield float(i), track(rng.integers(0, 256, (48, 64, 3), np.uint8), 'frames'), f'f{i}'

    session = StreamingSession.from_checkpoint(
        str(tiny_checkpoint), engine_config=EngineConfig(device='cpu', image_size=32),
        estimate_pose=False)
    step = session.step

    def tracked_step(rgb, stamp):
        out = step(rgb, stamp)
        if out.refined is not None:
            track(out.refined, 'results')
        return out

    monkeypatch.setattr(session, 'step', tracked_step)
    monkeypatch.setattr(reconstruct_module, 'iter_frames', frames)
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), np.zeros((8, 8, 3), np.uint8))
    info = reconstruct(session, tmp_path / 'in', tmp_path / 'rec', progress=False)
    assert info['n_frames'] == 12 and len(seen) == 12
    # Frames 0 and 1 are read ahead to check that there are two; from frame 2 on nothing decoded
    # earlier, and at most the result of the step before, is alive when a frame is decoded.
    assert seen[1]['frames'] == 1
    assert max(s['frames'] for s in seen[2:]) == 0
    assert max(s['results'] for s in seen) <= 1
    assert len(load_predictions(tmp_path / 'rec').pts3d) == 12
