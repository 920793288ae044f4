"""``spann3r-export BAG --out DIR`` on bags recorded by other tools, and its refusals."""

import json
import logging

import cv2
import foreign_bags as fb
import numpy as np
import pytest

from spann3r_model.data.scannet import find_scenes, ScanNetScene
from spann3r_model.evaluation.gt_views import load_views
from spann3r_ros.bags.export_options import ExportOptions
from spann3r_ros.cli.export import main
from training.datasets.scannet import ScanNetLayout

FRAMES = fb.FRAMES
REEXPORT = 're-export the bag with spann3r-export --intrinsics fx,fy,cx,cy or --calibration FILE'


def _export(bag, out, *options):
    """Run the CLI as a user does; return ``(exit code, scene or None)``."""
    rc = main([str(bag), '--out', str(out), *options])
    return rc, (ScanNetScene(find_scenes(out)[0]) if rc == 0 else None)


def _manifest(scene):
    return json.loads((scene.scene_dir / 'manifest.json').read_text())


def _assert_nothing_written(out):
    assert not out.exists()
    assert not out.with_name(out.name + '.partial').exists()


def _assert_poses(scene, expected):
    assert len(scene) == len(expected)
    for fid, T in zip(scene.frame_ids, expected):
        np.testing.assert_allclose(scene.pose(fid), T, atol=1e-6)


def _refused(capsys, bag, out, *options):
    """Run the CLI expecting a refusal; return its message."""
    capsys.readouterr()
    assert main([str(bag), '--out', str(out), *options]) == 2
    _assert_nothing_written(out)
    err = capsys.readouterr().err
    assert err.startswith('spann3r-export: error: ') and err.count('\n') == 1
    return err


@pytest.mark.parametrize('storage,distro,world', [
    ('sqlite3', 'humble', 'map'), ('mcap', 'humble', 'odom'),
    ('sqlite3', 'jazzy', 'odom'), ('mcap', 'jazzy', 'map')])
def test_realsense_bag_takes_poses_from_the_root_of_the_tf_tree(tmp_path, capsys, caplog,
                                                               storage, distro, world):
    bag = fb.realsense_bag(tmp_path / 'rs', storage, distro, fb.RealSense(world=world))
    caplog.set_level(logging.INFO, logger='spann3r_ros')
    rc, scene = _export(bag, tmp_path / 'out')
    assert rc == 0
    chain = [world, 'camera_link', 'camera_color_optical_frame']
    described = 'tf ' + ' -> '.join(chain)
    assert f'pose source: {described}' in caplog.text
    assert f'poses: {described}' in capsys.readouterr().out
    manifest = _manifest(scene)
    assert manifest['counts'] == {'exported': FRAMES, 'skipped': 0, 'skipped_by_reason': {}}
    assert manifest['pose'] == {
        'source': 'tf', 'requested': 'auto', 'description': described, 'chain': chain,
        'topic': None,
        'reason': f"the images' frame 'camera_color_optical_frame' is in the TF tree rooted at "
                  f"'{world}'"}
    assert manifest['topics']['pose'] == f'tf:{world}:camera_color_optical_frame'
    assert manifest['topics']['depth'] == fb.REALSENSE_DEPTH  # not the unaligned stream
    assert manifest['camera_frame'] == 'camera_color_optical_frame'
    assert manifest['image_size'] == {'width': fb.WIDTH, 'height': fb.HEIGHT}
    # TF runs at 30 Hz between the images: every pose is interpolated, and exact.
    _assert_poses(scene, [fb.T_world_camera(i) for i in range(FRAMES)])
    intrinsics = manifest['intrinsics']
    assert intrinsics['known'] and intrinsics['source'] == 'camera_info'
    assert intrinsics['origin'] == fb.REALSENSE_INFO
    assert intrinsics['depth_source'] == 'camera_info'
    assert intrinsics['calibrated_size'] == [fb.WIDTH, fb.HEIGHT] and intrinsics['hint'] is None
    np.testing.assert_array_equal(scene.K_color, fb.K_TRUE)
    np.testing.assert_array_equal(scene.K_depth, fb.K_TRUE)
    for fid in scene.frame_ids:
        np.testing.assert_array_equal(scene.depth_mm(fid), fb.depth_mm_of(fid))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('fmt', ['jpeg', 'rgb8; jpeg compressed bgr8'])
def test_phone_jpeg_bag_exports_without_intrinsics_and_poses(tmp_path, caplog, storage, fmt):
    bag = fb.phone_bag(tmp_path / 'phone', storage, fmt)
    caplog.set_level(logging.INFO, logger='spann3r_ros')
    rc, scene = _export(bag, tmp_path / 'out')
    assert rc == 0
    assert 'pose source: none (the bag has no TF; no pose topic)' in caplog.text
    assert 'intrinsics: unknown' in caplog.text and REEXPORT in caplog.text
    manifest = _manifest(scene)
    assert manifest['counts']['exported'] == FRAMES == len(scene)
    assert manifest['pose']['source'] == 'none' and manifest['topics']['pose'] == 'none'
    assert manifest['pose']['reason'] == 'the bag has no TF; no pose topic'
    assert manifest['intrinsics'] == {
        'known': False, 'source': 'unknown', 'origin': None, 'K_color': None, 'K_depth': None,
        'depth_source': None, 'calibrated_size': None, 'distortion_model': None,
        'distortion': None, 'hint': REEXPORT}
    assert not (scene.scene_dir / 'intrinsic').exists()  # nothing that looks like a real K
    assert not scene.has_intrinsics
    for fid in scene.frame_ids:
        assert scene.color_path(fid).read_bytes() == fb.jpeg_of(fid)  # the app's own bytes
        assert np.isnan(scene.pose(fid)).all()
        assert scene.depth_mm(fid).shape == (fb.HEIGHT, fb.WIDTH) and not scene.depth_mm(fid).any()


def test_readers_that_need_intrinsics_refuse_a_scene_without(tmp_path):
    bag = fb.phone_bag(tmp_path / 'phone', 'sqlite3', odometry=True)
    rc, scene = _export(bag, tmp_path / 'out')
    assert rc == 0
    with pytest.raises(ValueError, match='exported from a bag without camera_info; ' + REEXPORT):
        scene.K_depth
    with pytest.raises(ValueError, match=REEXPORT):
        load_views(scene, scene.frame_ids[:2], size=16)
    with pytest.raises(ValueError, match=f'scene phone: .*phone has no intrinsics: .*{REEXPORT}'):
        ScanNetLayout(str(tmp_path / 'out'), num_frames=2, min_gap=1, max_gap=2, image_size=16)


def test_phone_odometry_is_the_pose_topic_and_intrinsics_can_be_given(tmp_path):
    bag = fb.phone_bag(tmp_path / 'phone', 'mcap', odometry=True)
    rc, scene = _export(bag, tmp_path / 'a', '--intrinsics', '30.5, 30,15.25,11.75')
    assert rc == 0
    manifest = _manifest(scene)
    assert manifest['pose']['source'] == 'topic' and manifest['pose']['topic'] == '/odom'
    assert manifest['pose']['description'] == 'topic /odom'
    assert manifest['pose']['reason'] == 'the bag has no TF; /odom is the only pose topic'
    _assert_poses(scene, [fb.T_world_camera(i) for i in range(FRAMES)])
    assert manifest['intrinsics']['source'] == 'intrinsics_option'
    assert manifest['intrinsics']['K_color'] == fb.K_TRUE.tolist()
    np.testing.assert_array_equal(scene.K_color, fb.K_TRUE)
    np.testing.assert_array_equal(scene.K_depth, fb.K_TRUE)
    calibration = fb.calibration_yaml(tmp_path / 'phone_camera.yaml')
    rc, scene = _export(bag, tmp_path / 'b', '--calibration', str(calibration))
    assert rc == 0
    intrinsics = _manifest(scene)['intrinsics']
    assert intrinsics['source'] == 'calibration_file' and intrinsics['origin'] == str(calibration)
    assert intrinsics['distortion_model'] == 'plumb_bob'
    assert intrinsics['distortion'] == [0.1, -0.05, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(scene.K_depth, fb.K_TRUE)
    dataset = ScanNetLayout(str(tmp_path / 'b'), num_frames=2, min_gap=1, max_gap=2,
                            image_size=16)
    frame = dataset.load_frame('phone', dataset.scene_frames('phone')[3])
    np.testing.assert_array_equal(frame.K, fb.K_TRUE)
    np.testing.assert_allclose(frame.T_world_cam, fb.T_world_camera(3), atol=1e-6)


def test_bare_mcap_file_and_folder_of_mcap_files(tmp_path):
    single = fb.foxglove_mcap(tmp_path / 'single')
    split = fb.foxglove_mcap(tmp_path / 'split', parts=2)
    assert [p.name for p in split] == ['rec_0.mcap', 'rec_1.mcap']
    assert not list(tmp_path.rglob('metadata.yaml'))
    expected = [fb.T_world_camera(i) for i in range(FRAMES)]
    for bag, out in ((single[0], tmp_path / 'o1'), (tmp_path / 'single', tmp_path / 'o2'),
                     (tmp_path / 'split', tmp_path / 'o3')):
        rc, scene = _export(bag, out)
        assert rc == 0, bag
        manifest = _manifest(scene)
        assert manifest['counts']['exported'] == FRAMES
        assert manifest['pose']['chain'] == ['odom', 'base_link', 'camera']
        assert manifest['intrinsics']['origin'] == '/camera/calibration'
        assert manifest['topics']['depth'] is None
        _assert_poses(scene, expected)
    assert find_scenes(tmp_path / 'o1')[0].name == 'rec_0'


def test_ros1_bag_without_camera_info(tmp_path, capsys):
    bag = fb.ros1_bag(tmp_path / 'openni.bag')
    rc, scene = _export(bag, tmp_path / 'out')
    assert rc == 0
    assert 'poses: tf world -> kinect -> openni_rgb_optical_frame; intrinsics: unknown' in \
        capsys.readouterr().out
    manifest = _manifest(scene)
    assert manifest['counts']['exported'] == FRAMES
    assert manifest['topics']['image'] == fb.ROS1_COLOR
    assert manifest['topics']['depth'] == fb.ROS1_DEPTH
    assert manifest['bag_topics']['/tf'] == 'tf/msg/tfMessage'
    assert manifest['camera_frame'] == '/openni_rgb_optical_frame'
    assert not manifest['intrinsics']['known'] and not scene.has_intrinsics
    _assert_poses(scene, [fb.T_world_camera(i) for i in range(FRAMES)])
    for fid in scene.frame_ids:
        np.testing.assert_array_equal(scene.depth_mm(fid), fb.depth_mm_of(fid))
        # bgr8 is turned into RGB (swapped channels would be off by ~100 grey levels).
        assert np.abs(scene.color(fid).astype(float) - fb.rgb_of(fid)).mean() < 3


def test_static_mounting_alone_is_no_pose_source(tmp_path):
    bag = fb.realsense_bag(tmp_path / 'rs', 'mcap', opts=fb.RealSense(world=None))
    rc, scene = _export(bag, tmp_path / 'out')
    assert rc == 0
    pose = _manifest(scene)['pose']
    assert pose['source'] == 'none' and len(scene) == FRAMES
    assert pose['reason'] == (
        "TF above 'camera_color_optical_frame' is static only (camera_link -> "
        "camera_color_optical_frame): a mounting, and 'camera_link' is not attached to any "
        'moving frame; no pose topic')


def test_refusals_name_the_problem_and_write_nothing(tmp_path, capsys):
    out = tmp_path / 'out'
    err = _refused(capsys, tmp_path / 'missing', out)
    assert 'bag ' + str(tmp_path / 'missing') + ' does not exist' in err
    err = _refused(capsys, fb.imageless_bag(tmp_path / 'tf_only', 'sqlite3'), out)
    assert "no colour image topic in the bag; topics: ['/tf']" in err
    err = _refused(capsys, fb.odd_encoding_bag(tmp_path / 'odd', 'mcap'), out)
    assert "cannot decode the images of /sensor/image: unsupported colour encoding " \
        "'bayer_rggb12p'" in err and 'choose another topic with --image-topic' in err
    not_a_bag = tmp_path / 'notes.txt'
    not_a_bag.write_text('hello')
    err = _refused(capsys, not_a_bag, out)
    assert 'is not a bag: expected a rosbag2 directory, a .mcap or .db3 file' in err
    renamed = tmp_path / 'capture.bin'
    renamed.write_bytes(fb.foxglove_mcap(tmp_path / 'fox')[0].read_bytes())
    assert 'it looks like a .mcap file: rename it to capture.mcap' in \
        _refused(capsys, renamed, out)
    (tmp_path / 'empty').mkdir()
    assert 'no metadata.yaml and no .mcap, .db3 or .bag file in it' in \
        _refused(capsys, tmp_path / 'empty', out)


def test_tf_that_never_reaches_the_images_is_refused(tmp_path, capsys):
    bag = fb.realsense_bag(tmp_path / 'rs', 'sqlite3')
    out = tmp_path / 'out'
    err = _refused(capsys, bag, out, '--pose', 'tf:map:camera_rgb_frame')
    assert "cannot resolve the pose chain map -> camera_rgb_frame: frame 'camera_rgb_frame' " \
        'never appears in TF' in err and "the images are in frame 'camera_color_optical_frame'" \
        in err
    # TF stamped on another clock (1000 s later): the frame is in the tree, no lookup succeeds.
    late = fb.realsense_bag(tmp_path / 'late', 'mcap', opts=fb.RealSense(tf_shift_ns=10**12))
    for option in ((), ('--pose', 'tf:map:camera_color_optical_frame')):
        err = _refused(capsys, late, out, *option)
        assert 'no image could be given a pose from tf map -> camera_link -> ' \
            'camera_color_optical_frame: map -> camera_link at 1700000000.000000 s lies ' \
            'outside its samples' in err
        assert 'the images span [1700000000.000, 1700000000.900] s, the moving TF map -> ' \
            'camera_link [1700000999.940, 1700001000.940] s' in err
        assert 'pass --pose none to export without poses' in err
    rc, scene = _export(late, out, '--pose', 'none')
    assert rc == 0 and len(scene) == FRAMES and _manifest(scene)['pose']['reason'] == '--pose none'


def test_bad_intrinsics_and_calibration_files_are_refused(tmp_path, capsys):
    bag = fb.phone_bag(tmp_path / 'phone', 'sqlite3')
    out = tmp_path / 'out'
    for value, expected in (('30,30,15', 'four numbers fx,fy,cx,cy'),
                            ('fx,fy,cx,cy', 'four numbers fx,fy,cx,cy'),
                            ('30,nan,15,11', 'four numbers fx,fy,cx,cy'),
                            ('0,30,15,11', 'the focal lengths must be > 0'),
                            ('30,30,150,11', 'principal point (150, 11) from intrinsics_option '
                                             'lies outside the 32x24 images')):
        assert expected in _refused(capsys, bag, out, '--intrinsics', value)
    opencv = tmp_path / 'opencv.yaml'
    opencv.write_text('%YAML:1.0\ncamera_matrix: !!opencv-matrix\n  rows: 3\n  cols: 3\n'
                      '  dt: d\n  data: [30, 0, 15, 0, 30, 11, 0, 0, 1]\n')
    kalibr = tmp_path / 'camchain.yaml'
    kalibr.write_text('cam0:\n  camera_model: pinhole\n  intrinsics: [30, 30, 15, 11]\n'
                      '  resolution: [32, 24]\n')
    wrong_shape = fb.calibration_yaml(tmp_path / 'shape.yaml')
    wrong_shape.write_text(wrong_shape.read_text().replace('rows: 3\n  cols: 3',
                                                           'rows: 2\n  cols: 2', 1))
    other_size = fb.calibration_yaml(tmp_path / 'vga.yaml', width=640, height=480)
    for path, expected in (
            (opencv, 'is an OpenCV FileStorage file, not a ROS calibration'),
            (kalibr, 'is not a ROS camera calibration file (no image_width, image_height, '
                     'camera_matrix): expected the YAML that ROS camera_calibration'),
            (wrong_shape, 'camera_matrix must be 3x3 with rows*cols finite values, got rows=2'),
            (other_size, 'are for 640x480 images, the images are 32x24'),
            (tmp_path / 'none.yaml', 'does not exist')):
        assert expected in _refused(capsys, bag, out, '--calibration', str(path))
    with pytest.raises(ValueError, match='not both'):
        ExportOptions(intrinsics='30,30,15,11', calibration=str(other_size))
    with pytest.raises(SystemExit):
        main([str(bag), '--out', str(out), '--intrinsics', '30,30,15,11', '--calibration',
              str(other_size)])
    _assert_nothing_written(out)


def test_undecodable_compressed_images_are_refused(tmp_path, capsys):
    rec = fb.Recorder(tmp_path / 'h264', 'mcap')
    for i in range(3):
        rec.write('/camera/image/compressed', rec.compressed(fb.image_ns(i), 'cam',
                                                             b'\x00\x00\x00\x01' * 8, 'h264'),
                  fb.image_ns(i))
    bag = rec.close()
    err = _refused(capsys, bag, tmp_path / 'out')
    assert "cannot decode the images of /camera/image/compressed: cannot decode compressed " \
        "image (format 'h264')" in err
    assert cv2.imdecode(np.frombuffer(b'\x00\x00\x00\x01' * 8, np.uint8), cv2.IMREAD_COLOR) \
        is None
