"""Generator -> bag -> exporter round trips and the exporter's error handling."""

import json

import cv2
import numpy as np
import pytest

from spann3r_model.data.scannet import (
    depth_to_millimetres,
    find_scenes,
    ScanNetScene,
    ScanNetWriter,
)
from spann3r_ros.bags import export as bag_export
from spann3r_ros.bags.export import export_bag
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.bags.writer import BagOptions, link_pose, OPTICAL_FRAME, write_synthetic_bag
from spann3r_ros.cli.export import main
from spann3r_ros.synthetic.scene import SyntheticConfig, SyntheticScene

STORAGES = [('sqlite3', 'bag2'), ('mcap', 'bag2m'), ('ros1', 'bag1.bag')]


def _scene(out):
    return ScanNetScene(find_scenes(out)[0])


@pytest.mark.parametrize('storage,name', STORAGES)
@pytest.mark.parametrize('pose', ['auto', f'tf:map:{OPTICAL_FRAME}'])
def test_lossless_round_trip(tmp_path, tiny_scene, tiny_frames, storage, name, pose):
    bag = write_synthetic_bag(tiny_scene, tmp_path / name, storage, BagOptions())
    manifest = export_bag(bag, tmp_path / 'out', ExportOptions(color_format='png', pose=pose),
                          progress=False)
    scene = _scene(tmp_path / 'out')
    assert manifest['counts']['exported'] == len(tiny_frames) == len(scene)
    assert manifest['counts']['skipped'] == 0
    assert np.array_equal(scene.K_color, tiny_frames[0].K)
    assert np.array_equal(scene.K_depth, tiny_frames[0].K)
    for fid, frame in zip(scene.frame_ids, tiny_frames):
        assert np.array_equal(scene.color(fid), frame.rgb)
        assert np.array_equal(scene.depth_mm(fid), depth_to_millimetres(frame.depth))
        assert np.abs(scene.pose(fid) - frame.T_world_cam).max() < 1e-6
    stored = json.loads((scene.scene_dir / 'manifest.json').read_text())
    assert stored['topics']['image'] == '/camera/color/image_raw'
    assert stored['frames'][2]['stamp'] == pytest.approx(tiny_frames[2].stamp)
    assert not (tmp_path / 'out.partial').exists()


def test_float_depth_and_compressed_depth(tmp_path, tiny_scene, tiny_frames):
    for depth in ('32FC1', 'compressedDepth'):
        bag = write_synthetic_bag(tiny_scene, tmp_path / depth, 'mcap',
                                  BagOptions(depth=depth))
        export_bag(bag, tmp_path / f'out_{depth}', ExportOptions(color_format='png'),
                   progress=False)
        scene = _scene(tmp_path / f'out_{depth}')
        for fid, frame in zip(scene.frame_ids, tiny_frames):
            assert np.array_equal(scene.depth_mm(fid), depth_to_millimetres(frame.depth))


def test_jpeg_bytes_are_kept_and_topics_must_be_chosen(tmp_path, tiny_scene, tiny_frames):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3',
                              BagOptions(raw_color=False, compressed='jpeg', jpeg_quality=80))
    export_bag(bag, tmp_path / 'out', ExportOptions(), progress=False)
    scene = _scene(tmp_path / 'out')
    for fid, frame in zip(scene.frame_ids, tiny_frames):
        ok, expected = cv2.imencode('.jpg', np.ascontiguousarray(frame.rgb[..., ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert scene.color_path(fid).read_bytes() == expected.tobytes()


def test_ambiguous_topics_list_candidates(tmp_path, tiny_scene, capsys):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3',
                              BagOptions(raw_color=True, compressed='png'))
    # Raw and compressed: the raw one wins. With --image-topic the compressed one is used.
    export_bag(bag, tmp_path / 'o1', ExportOptions(
        image_topic='/camera/color/image_raw/compressed', color_format='png'), progress=False)
    with pytest.raises(ValueError, match='not in the bag'):
        export_bag(bag, tmp_path / 'o2', ExportOptions(image_topic='/nope'), progress=False)
    assert main([str(bag), '--out', str(tmp_path / 'o3'), '--depth-topic', '/x']) == 2
    assert '/camera/aligned_depth_to_color/image_raw' in capsys.readouterr().err
    assert not (tmp_path / 'o3').exists()


def test_tf_interpolation_matches_analytic_motion(tmp_path):
    scene = SyntheticScene(SyntheticConfig(width=64, height=48, num_frames=6, fps=5.0,
                                           angular_speed=0.5))
    # TF at 3x the image rate, offset so that no TF stamp equals an image stamp.
    bag = write_synthetic_bag(scene, tmp_path / 'b', 'mcap',
                              BagOptions(tf_rate=3, tf_offset=0.5, gt_pose=False))
    opts = ExportOptions(pose=f'tf:map:{OPTICAL_FRAME}', color_format='png', max_dt=0.1)
    manifest = export_bag(bag, tmp_path / 'out', opts, progress=False)
    exported = _scene(tmp_path / 'out')
    # Image 0 precedes the first TF sample (by 1/30 s): within the tolerance the nearest sample
    # is used. All other images fall between two TF samples 1/15 s apart and are interpolated.
    assert manifest['counts']['exported'] == 6
    for fid, frame in zip(exported.frame_ids, scene.frames()):
        rel = frame.stamp - scene.config.start_time
        err = np.abs(exported.pose(fid) - scene.pose_at(rel)).max()
        step = np.abs(scene.pose_at(rel + 1 / 30) - scene.pose_at(rel)).max()
        if fid == 0:
            assert err == pytest.approx(step, abs=1e-9)
        else:
            assert err < 0.05 * step and err < 1e-3, (err, step)
    # Without tolerance the frame before the first TF sample is skipped, and counted.
    m2 = export_bag(bag, tmp_path / 'out2', ExportOptions(pose=opts.pose, max_dt=0.0,
                                                         color_format='png'), progress=False)
    assert m2['counts']['skipped_by_reason'] == {'no_pose': 1}
    assert m2['counts']['exported'] == 5


def test_link_pose_chain_is_consistent(tiny_scene):
    T = tiny_scene.pose_at(0.3)
    T_link = link_pose(T)
    assert not np.allclose(T_link, T)
    assert np.allclose(T_link[:3, 3], T[:3, 3])


def test_pose_chain_errors(tmp_path, tiny_scene):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3', BagOptions())
    with pytest.raises(ValueError, match='pose chain'):
        export_bag(bag, tmp_path / 'o', ExportOptions(pose='tf:map:no_such_frame'),
                   progress=False)
    with pytest.raises(ValueError, match='--pose must be'):
        ExportOptions(pose='tf:map')
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'o.partial').exists()


def test_missing_truncated_and_corrupt_bags(tmp_path, tiny_scene):
    with pytest.raises(ValueError, match='does not exist'):
        export_bag(tmp_path / 'none', tmp_path / 'o', progress=False)
    for storage, name, member in (('mcap', 'm', 'm.mcap'), ('ros1', 'r.bag', None),
                                  ('sqlite3', 's', 's.db3')):
        bag = write_synthetic_bag(tiny_scene, tmp_path / name, storage, BagOptions())
        f = bag / member if member else bag
        data = f.read_bytes()
        f.write_bytes(data[:len(data) // 2])
        out = tmp_path / f'out_{storage}'
        with pytest.raises(ValueError, match='bag'):
            export_bag(bag, out, ExportOptions(pose='auto'), progress=False)
        assert not out.exists()
    garbage = tmp_path / 'g.bag'
    garbage.write_bytes(b'not a bag at all' * 10)
    with pytest.raises(ValueError, match='cannot open bag'):
        export_bag(garbage, tmp_path / 'og', progress=False)


def test_interrupted_export_leaves_no_finished_output_and_resumes(tmp_path, tiny_scene,
                                                                   monkeypatch):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3', BagOptions())
    out = tmp_path / 'out'
    original = ScanNetWriter.write_frame
    calls = []

    def failing(self, index, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(index)
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(ScanNetWriter, 'write_frame', failing)
    with pytest.raises(KeyboardInterrupt):
        export_bag(bag, out, ExportOptions(color_format='png'), progress=False)
    assert not out.exists() and (tmp_path / 'out.partial').exists()
    monkeypatch.setattr(ScanNetWriter, 'write_frame', original)
    written = []
    monkeypatch.setattr(ScanNetWriter, 'write_frame',
                        lambda self, i, *a, **k: (written.append(i), original(self, i, *a, **k)))
    manifest = export_bag(bag, out, ExportOptions(color_format='png'), progress=False)
    assert manifest['counts']['exported'] == 5
    assert sorted(written) == [2, 3, 4]  # frames 0 and 1 were kept from the first run
    assert len(_scene(out)) == 5 and not (tmp_path / 'out.partial').exists()
    with pytest.raises(ValueError, match='already exists'):
        export_bag(bag, out, progress=False)


def test_every_and_min_translation(tmp_path, tiny_scene):
    bag = write_synthetic_bag(tiny_scene, tmp_path / 'b', 'sqlite3', BagOptions())
    m = export_bag(bag, tmp_path / 'o1', ExportOptions(every=2, color_format='png'),
                   progress=False)
    assert m['counts']['exported'] == 3
    m = export_bag(bag, tmp_path / 'o2', ExportOptions(min_translation=10.0), progress=False)
    assert m['counts']['exported'] == 1
    assert bag_export.parse_pose_spec('topic:/a') == ('topic', '/a')
