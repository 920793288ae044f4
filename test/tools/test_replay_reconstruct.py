"""spann3r-eval and spann3r-reconstruct end to end on small synthetic data."""

import json

import numpy as np
import pytest
import torch

from spann3r_model.checkpoint import save_safetensors
from spann3r_model.config import EngineConfig, ModelConfig
from spann3r_model.export import read_ply
from spann3r_model.results import FrameResult
from spann3r_model.session import StreamingSession
from spann3r_model.spann3r import Spann3R
from spann3r_ros import replay
from spann3r_ros.gt_views import load_views, to_first_camera
from spann3r_ros.predictions import load_predictions, write_frame, write_info
from spann3r_ros.reconstruct import main as reconstruct_main
from spann3r_ros.reconstruct import unordered_order
from spann3r_ros.scannet import ScanNetScene
from spann3r_ros.synthetic_cli import main as synth_main


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


def test_ground_truth_against_itself_scores_zero(synth_root, tmp_path):
    scene = ScanNetScene(synth_root / 'scans' / 'room')
    views = load_views(scene, scene.frame_ids, centre='image')
    gt_cam0, valid, T0 = to_first_camera(views)
    pred_dir = tmp_path / 'pred'
    for i, v in enumerate(views):
        T_cam0_cam = np.linalg.inv(T0) @ v.T_world_cam.astype(np.float64)
        result = FrameResult(index=i, stamp=float(i), pts3d=gt_cam0[i].astype(np.float32),
                             conf=np.full(valid[i].shape, 5.0, np.float32), rgb=v.rgb,
                             crop=None, T_world_cam=T_cam0_cam, focal=100.0)
        write_frame(pred_dir, result, source=i)
    write_info(pred_dir, {'crop_centre': 'image'})
    out = tmp_path / 'report'
    assert replay.main([str(synth_root), '--predictions', str(pred_dir), '--out',
                        str(out)]) == 0
    report = json.loads((out / 'report.json').read_text())
    m = report['metrics']
    assert m['acc'] < 1e-5 and m['comp'] < 1e-5 and m['nc'] > 0.999
    assert report['alignment']['factor'] == pytest.approx(1.0, rel=1e-6)
    assert report['ate']['rmse'] < 1e-5 and report['ate']['scale'] == pytest.approx(1.0)
    assert (out / 'trajectory.png').exists() and (out / 'ground_truth.ply').exists()


def test_offline_eval_with_checkpoint_reports_latency(synth_root, tiny_checkpoint, tmp_path):
    out = tmp_path / 'report'
    assert replay.main([str(synth_root), '--checkpoint', str(tiny_checkpoint), '--device',
                        'cpu', '--no-pose', '--out', str(out), '--max-frames', '3', '--image-size',
                        '64']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['n_frames'] == 3 and report['latency']['n'] == 3
    assert report['latency']['p50_ms'] > 0 and np.isfinite(report['metrics']['acc'])
    assert (out / 'latency.png').exists() and (out / 'errors.png').exists()


def test_eval_errors_are_clear(synth_root, tmp_path, capsys):
    assert replay.main([str(tmp_path / 'nothing'), '--predictions', str(tmp_path)]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert replay.main([str(synth_root), '--predictions', str(tmp_path)]) == 2
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
    assert replay.main([str(synth_root), '--predictions', str(out), '--out',
                        str(report_dir), '--no-icp']) == 0
    assert json.loads((report_dir / 'report.json').read_text())['n_frames'] == 4


def test_unordered_picks_the_most_confident_chain(tiny_checkpoint):
    session = StreamingSession.from_checkpoint(str(tiny_checkpoint),
                                               engine_config=EngineConfig(device='cpu',
                                                                          image_size=32),
                                               estimate_pose=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    order = unordered_order(session, images)
    assert sorted(order) == [0, 1, 2]
    # The first pair is the argmax of the pair score over all ordered pairs.
    from spann3r_ros.reconstruct import _pair_score
    scores = {(i, j): _pair_score(session, images[i], images[j])
              for i in range(3) for j in range(3) if i != j}
    assert tuple(order[:2]) == max(scores, key=scores.get)


