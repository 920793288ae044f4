"""Where an export's intrinsics come from: camera_info, ``--intrinsics`` or a calibration file.

The calibration file is the YAML that ROS ``camera_calibration`` and camera_info_manager write
(``image_width``, ``image_height``, ``camera_name``, ``camera_matrix: {rows, cols, data}``,
``distortion_model``, ``distortion_coefficients``, ...). When none of the three is available
the intrinsics are *unknown*: the export goes on (Spann3R needs none), writes no intrinsics
file, and readers that need them refuse the scene with ``scannet.SUPPLY_HINT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from spann3r_model.data.scannet import SUPPLY_HINT
from spann3r_ros.formats.message_fields import camera_info_K

SOURCES = ('camera_info', 'intrinsics_option', 'calibration_file', 'unknown')
_CALIBRATION_KEYS = ('image_width', 'image_height', 'camera_matrix')


@dataclass(frozen=True)
class Intrinsics:
    """Colour intrinsics and their provenance.

    :param K: ``[3, 3]`` float64, None when unknown.
    :param source: one of :data:`SOURCES`.
    :param origin: the camera_info topic or the calibration file.
    :param size: ``(width, height)`` the intrinsics were calibrated for, when stated.
    :param distortion_model: e.g. ``plumb_bob``, when stated.
    :param distortion: the distortion coefficients, when stated.
    """

    K: Optional[np.ndarray]
    source: str
    origin: Optional[str] = None
    size: Optional[tuple[int, int]] = None
    distortion_model: Optional[str] = None
    distortion: Optional[tuple[float, ...]] = None

    @property
    def known(self) -> bool:
        """Whether there is a K at all."""
        return self.K is not None

    def describe(self) -> str:
        """One line for the console."""
        if self.K is None:
            return 'unknown'
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        where = f' {self.origin}' if self.origin else ''
        return f'{self.source}{where} (fx {fx:g}, fy {fy:g}, cx {cx:g}, cy {cy:g})'

    def check_image(self, width: int, height: int) -> None:
        """Refuse intrinsics made for another resolution or with the centre off the image.

        :raises ValueError: naming the mismatch and how to supply the right intrinsics.
        """
        if self.K is None:
            return
        if self.size is not None and self.size != (width, height) and all(self.size):
            raise ValueError(f'the intrinsics from {self.source} {self.origin} are for '
                             f'{self.size[0]}x{self.size[1]} images, the images are '
                             f'{width}x{height}; pass the right ones with --intrinsics '
                             'fx,fy,cx,cy or --calibration FILE')
        cx, cy = self.K[0, 2], self.K[1, 2]
        if not (0 < cx < width and 0 < cy < height):
            raise ValueError(f'the principal point ({cx:g}, {cy:g}) from {self.source} lies '
                             f'outside the {width}x{height} images')


def _pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def parse_intrinsics(text: str) -> Intrinsics:
    """Parse ``--intrinsics fx,fy,cx,cy`` (pixels).

    :raises ValueError: unless there are four finite numbers with positive focal lengths.
    """
    parts = [p.strip() for p in str(text).split(',')]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(np.isfinite(values)):
        raise ValueError(f'--intrinsics must be four numbers fx,fy,cx,cy (pixels), got {text!r}')
    fx, fy, cx, cy = values
    if fx <= 0 or fy <= 0:
        raise ValueError(f'--intrinsics: the focal lengths must be > 0, got fx={fx:g}, '
                         f'fy={fy:g}')
    return Intrinsics(_pinhole(fx, fy, cx, cy), 'intrinsics_option')


def _matrix(data: dict, key: str, rows: int, cols: Optional[int], path: Path) -> np.ndarray:
    entry = data.get(key)
    if not isinstance(entry, dict) or 'data' not in entry:
        raise ValueError(f'{path}: {key} must be a mapping with rows, cols and data')
    try:
        values = np.asarray(entry['data'], dtype=np.float64).ravel()
        shape = (int(entry.get('rows', rows)), int(entry.get('cols', cols or values.size)))
    except (TypeError, ValueError):
        raise ValueError(f'{path}: {key} holds values that are not numbers') from None
    if shape[0] != rows or (cols is not None and shape[1] != cols) or \
            values.size != shape[0] * shape[1] or not np.isfinite(values).all():
        expected = f'{rows}x{cols}' if cols else f'{rows} row(s)'
        raise ValueError(f'{path}: {key} must be {expected} with rows*cols finite values, got '
                         f'rows={entry.get("rows")}, cols={entry.get("cols")} and '
                         f'{values.size} values')
    return values.reshape(shape)


def load_calibration(path: Path) -> Intrinsics:
    """Read a ROS camera calibration YAML (``camera_calibration`` / camera_info_manager).

    :raises ValueError: for a missing file, another format, or a matrix of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f'calibration file {path} does not exist')
    text = path.read_text(errors='replace')
    fmt = ('expected the YAML that ROS camera_calibration / camera_info_manager writes '
           '(image_width, image_height, camera_matrix: {rows: 3, cols: 3, data: [...]}, '
           'distortion_model, distortion_coefficients)')
    if text.lstrip().startswith('%YAML:1') or '!!opencv-matrix' in text:
        raise ValueError(f'{path} is an OpenCV FileStorage file, not a ROS calibration: {fmt}')
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f'{path} is not YAML ({exc.__class__.__name__}): {fmt}') from None
    missing = [k for k in _CALIBRATION_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f'{path} is not a ROS camera calibration file (no {", ".join(missing)})'
                         f': {fmt}')
    K = _matrix(data, 'camera_matrix', 3, 3, path)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0]:
        raise ValueError(f'{path}: camera_matrix is not a pinhole matrix '
                         f'[fx 0 cx; 0 fy cy; 0 0 1] with fx, fy > 0: {K.ravel().tolist()}')
    try:
        size = (int(data['image_width']), int(data['image_height']))
    except (TypeError, ValueError):
        raise ValueError(f'{path}: image_width and image_height must be integers') from None
    distortion = None
    if 'distortion_coefficients' in data:
        distortion = tuple(_matrix(data, 'distortion_coefficients', 1, None, path).ravel())
    return Intrinsics(K, 'calibration_file', str(path.resolve()), size,
                      data.get('distortion_model'), distortion)


def from_camera_info(msg: Any, topic: str) -> Intrinsics:
    """Intrinsics of a ``sensor_msgs/CameraInfo`` of either ROS generation.

    :raises ValueError: when its K has no positive focal lengths.
    """
    K, width, height = camera_info_K(msg)
    d = getattr(msg, 'd', None)
    d = msg.D if d is None else d
    return Intrinsics(K, 'camera_info', topic, (width, height), msg.distortion_model or None,
                      tuple(float(v) for v in d))


def manifest_entry(colour: Intrinsics, K_depth: Optional[np.ndarray], depth_source: Optional[str]
                   ) -> dict:
    """Build the manifest's ``intrinsics`` object."""
    return {
        'known': colour.known,
        'source': colour.source,
        'origin': colour.origin,
        'K_color': None if colour.K is None else colour.K.tolist(),
        'K_depth': None if K_depth is None else np.asarray(K_depth).tolist(),
        'depth_source': depth_source,
        'calibrated_size': None if colour.size is None else list(colour.size),
        'distortion_model': colour.distortion_model,
        'distortion': None if colour.distortion is None else list(colour.distortion),
        'hint': None if colour.known else SUPPLY_HINT,
    }
