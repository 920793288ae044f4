"""What a robot's odometry reports about a synthetic trajectory (NumPy only, no ROS).

Frames (REP 103 / REP 105): ``base_link`` is the robot body (x forward, y left, z up), the camera
hangs on it at the fixed mount :data:`T_BASE_CAMERA_LINK` (``base_link -> camera_link``), and its
optical frame follows through ``R_BODY_OPTICAL`` (``camera_link -> *_optical_frame``). The
synthetic trajectory (:mod:`spann3r_ros.synthetic.camera`) moves the camera, so the base poses
are derived from it through the inverse mount (:func:`base_poses`); the base therefore moves in
all six degrees of freedom, which is fine for a synthetic room.

The odometry model (:func:`odometry_poses`) is that of wheel or visual odometry:

* the ``odom`` frame coincides with the world at the first sample;
* the relative motion between successive samples, expressed in the earlier base frame, is
  integrated with its translation scaled by ``1 + drift`` (a wheel radius or scale error: on a
  straight path of length ``L`` the position error is ``drift * L``; on a closed loop this part
  cancels where the loop closes);
* each step also turns by a heading bias of ``HEADING_BIAS_PER_DRIFT * drift`` radians per metre
  travelled, about the base's z axis and always to the left (unequal wheels). On a straight
  path it adds a lateral error of ``0.005 * drift * L**2``, as large as the scale error at
  ``L = 200`` m; it is what keeps a loop from closing;
* white noise is added to every sample on top of the integrated pose, not integrated:
  ``noise_m`` metres per axis of the odom frame on the position and a rotation vector of
  ``noise_rad`` radians per axis, applied in the base frame.

Noise is drawn from ``seed`` alone, so the same trajectory and noise give the same poses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spann3r_model.geometry.frames import R_BODY_OPTICAL

#: Heading error per metre travelled, in radians, for ``drift = 1`` (scaled by the drift).
HEADING_BIAS_PER_DRIFT = 0.01


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


#: ``base_link -> camera_link``: 0.2 m forward, 0.05 m left, 0.35 m up, pitched down 5 degrees
#: (a positive rotation about the base's y axis turns x towards -z).
T_BASE_CAMERA_LINK = _rigid(_rot_y(np.deg2rad(5.0)), np.array([0.2, 0.05, 0.35]))
T_BASE_CAMERA_LINK.setflags(write=False)

#: ``camera_link -> *_optical_frame``: the optical axes (x right, y down, z forward) in the body.
T_CAMERA_LINK_OPTICAL = _rigid(R_BODY_OPTICAL, np.zeros(3))
T_CAMERA_LINK_OPTICAL.setflags(write=False)


@dataclass(frozen=True)
class OdometryNoise:
    """How far the odometry is from the truth (see the module docstring for the model).

    :param noise_m: standard deviation of the white position noise per axis, metres.
    :param noise_rad: standard deviation of the white rotation noise per axis (a rotation
        vector), radians.
    :param drift: integrated translation scale error, a fraction (0.01 = 1 % of the path
        length); also sets the heading bias. Must be below 0.5.
    :param seed: seed of the white noise.
    """

    noise_m: float = 0.0
    noise_rad: float = 0.0
    drift: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        """Reject negative or non-finite noise and drifts of 0.5 or more."""
        for name in ('noise_m', 'noise_rad', 'drift'):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        if self.drift >= 0.5:
            raise ValueError(f'drift must be below 0.5 (a fraction of the path), got '
                             f'{self.drift!r}')

    @property
    def heading_bias(self) -> float:
        """Heading error per metre travelled, radians."""
        return HEADING_BIAS_PER_DRIFT * self.drift


def _check_poses(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) == 0:
        raise ValueError(f'{name} must be [N, 4, 4] with N >= 1, got shape {T.shape}')
    return T


def _inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``[..., 4, 4]`` transform."""
    R_t = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = R_t
    out[..., :3, 3] = -(R_t @ T[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def rotvec_matrices(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[N, 3, 3]`` of rotation vectors ``[N, 3]`` (Rodrigues' formula)."""
    v = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1)
    axis = v / np.where(angle > 0, angle, 1.0)[..., None]
    K = np.zeros(v.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    K = K - np.swapaxes(K, -1, -2)
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def base_poses(T_world_optical: np.ndarray) -> np.ndarray:
    """``T_world_base`` of camera optical-frame poses, through the inverse of the mount.

    :param T_world_optical: ``[N, 4, 4]`` optical-frame-to-world poses.
    :return: ``[N, 4, 4]`` ``base_link``-to-world poses.
    """
    T_world_optical = _check_poses(T_world_optical, 'T_world_optical')
    T_base_optical = T_BASE_CAMERA_LINK @ T_CAMERA_LINK_OPTICAL
    return T_world_optical @ _inverse(T_base_optical)


def optical_poses(T_x_base: np.ndarray) -> np.ndarray:
    """Optical-frame poses of base poses (the inverse of :func:`base_poses`).

    :param T_x_base: ``[N, 4, 4]`` ``base_link`` poses in some frame ``x`` (world or odom).
    :return: ``[N, 4, 4]`` optical-frame poses in ``x``.
    """
    return _check_poses(T_x_base, 'T_x_base') @ T_BASE_CAMERA_LINK @ T_CAMERA_LINK_OPTICAL


def path_lengths(T_world_base: np.ndarray) -> np.ndarray:
    """``[N]`` distance the base has travelled at each sample (0 at the first), metres."""
    T = _check_poses(T_world_base, 'T_world_base')
    steps = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def odometry_poses(T_world_base: np.ndarray, noise: OdometryNoise) -> np.ndarray:
    """Return the odometry's base poses for ground-truth ones (model: the module docstring).

    :param T_world_base: ``[N, 4, 4]`` ground-truth ``base_link``-to-world poses, in time order.
    :param noise: the noise and drift.
    :return: ``[N, 4, 4]`` ``T_odom_base``; with no noise and no drift, ``T_world_base``.
    """
    T = _check_poses(T_world_base, 'T_world_base')
    out = T.copy()
    if noise.drift:
        steps = _inverse(T[:-1]) @ T[1:]  # motion from sample k-1 to k in base frame k-1
        for k, step in enumerate(steps, start=1):
            t = step[:3, 3]
            turn = _rot_z(noise.heading_bias * float(np.linalg.norm(t)))
            out[k] = out[k - 1] @ _rigid(turn @ step[:3, :3], (1.0 + noise.drift) * t)
    if noise.noise_m or noise.noise_rad:
        rng = np.random.default_rng(noise.seed)
        position_noise = rng.normal(0.0, noise.noise_m, (len(T), 3))
        rotation_noise = rng.normal(0.0, noise.noise_rad, (len(T), 3))
        out[:, :3, 3] += position_noise
        out[:, :3, :3] = out[:, :3, :3] @ rotvec_matrices(rotation_noise)
    return out


def pose_variances(T_world_base: np.ndarray, noise: OdometryNoise) -> np.ndarray:
    """Diagonal of a plausible pose covariance for each odometry sample.

    The white noise's variance plus that of the drift so far: ``(drift * s)**2`` on the
    position and ``(heading_bias * s)**2`` on the yaw, ``s`` the distance travelled.

    :param T_world_base: the ground-truth base poses given to :func:`odometry_poses`.
    :return: ``[N, 6]`` variances of x, y, z (m^2) and rotation about x, y, z (rad^2).
    """
    s = path_lengths(T_world_base)
    var = np.empty((len(s), 6))
    var[:, :3] = (noise.noise_m ** 2 + (noise.drift * s) ** 2)[:, None]
    var[:, 3:] = noise.noise_rad ** 2
    var[:, 5] += (noise.heading_bias * s) ** 2
    return var
