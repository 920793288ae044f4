"""Small, validating readers for the image, depth and matrix files of the dataset layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_rgb(path: Path) -> np.ndarray:
    """Return ``[H, W, 3]`` uint8 RGB.

    :raises ValueError: if the file is missing or not a readable image.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_raw(path: Path) -> np.ndarray:
    """Return an image file's pixels unchanged (16-bit PNG, PFM, EXR ...).

    :raises ValueError: if the file is missing or cannot be decoded.
    """
    if not Path(path).is_file():
        raise ValueError(f'missing file {path}')
    if str(path).lower().endswith('.exr'):
        try:
            data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error as err:
            raise ValueError(f'cannot read {path}: OpenCV reads EXR only when the environment '
                             'variable OPENCV_IO_ENABLE_OPENEXR=1 is set before the process '
                             'starts') from err
    else:
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ValueError(f'cannot decode {path}')
    return data


def read_depth_png(path: Path, scale: float) -> np.ndarray:
    """Return a 16-bit depth PNG as float32 metres (``value / scale``)."""
    raw = read_raw(path)
    if raw.ndim != 2:
        raise ValueError(f'{path}: expected a single-channel depth image, got {raw.shape}')
    return np.nan_to_num(raw.astype(np.float32), nan=0.0) / np.float32(scale)


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a whitespace-separated matrix text file and check its shape."""
    if not Path(path).is_file():
        raise ValueError(f'missing file {path}')
    matrix = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if matrix.shape != shape:
        raise ValueError(f'{path}: expected a {shape[0]}x{shape[1]} matrix, got {matrix.shape}')
    return matrix


def read_lines(path: Path) -> list[str]:
    """Return the non-empty, stripped lines of a text file."""
    if not Path(path).is_file():
        raise ValueError(f'missing file {path}')
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
