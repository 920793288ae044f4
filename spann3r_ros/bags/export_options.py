"""The settings of one bag export, checked as a user types them (see ``spann3r-export --help``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from spann3r_ros.bags.camera_intrinsics import Intrinsics, load_calibration, parse_intrinsics
from spann3r_ros.bags.pose_source import parse_pose_spec


@dataclass(frozen=True)
class ExportOptions:
    """Settings of one export (see ``spann3r-export --help``)."""

    image_topic: Optional[str] = None
    depth_topic: Optional[str] = None
    camera_info_topic: Optional[str] = None
    pose: str = 'auto'
    every: int = 1
    min_translation: float = 0.0
    max_dt: float = 0.02
    scene: Optional[str] = None
    color_format: str = 'jpg'
    jpeg_quality: int = 95
    intrinsics: Optional[str] = None
    calibration: Optional[str] = None

    def __post_init__(self) -> None:
        """Validate the values a user types."""
        if self.every < 1:
            raise ValueError(f'--every must be >= 1, got {self.every}')
        if self.min_translation < 0 or self.max_dt < 0:
            raise ValueError('--min-translation and --max-dt must be >= 0')
        if self.color_format not in ('jpg', 'png'):
            raise ValueError(f'--color-format must be jpg or png, got {self.color_format!r}')
        parse_pose_spec(self.pose)
        if self.intrinsics is not None and self.calibration is not None:
            raise ValueError('pass --intrinsics or --calibration, not both')
        if self.intrinsics is not None:
            parse_intrinsics(self.intrinsics)

    def supplied_intrinsics(self) -> Optional[Intrinsics]:
        """Return the intrinsics given on the command line, if any (reads ``--calibration``).

        :raises ValueError: for a calibration file that is missing or of another format.
        """
        if self.intrinsics is not None:
            return parse_intrinsics(self.intrinsics)
        if self.calibration is not None:
            return load_calibration(Path(self.calibration))
        return None
