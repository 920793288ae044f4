"""Image size from a JPEG or PNG header, read before anything is decoded (ROS-free).

A compressed image can claim a size far beyond its payload (a decompression bomb): a few hundred
bytes of PNG that say 40000x40000 pixels. Reading the claimed size from the header lets the
caller refuse such an image before the decoder allocates for it.
"""

from __future__ import annotations

import struct
from typing import Optional

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SIGNATURE = b'\xff\xd8\xff'
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT/JPG/DAC.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field.
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}


def png_size(data: bytes) -> Optional[tuple[int, int]]:
    """Return ``(width, height)`` from a PNG's IHDR chunk, or None when it has none."""
    if len(data) < 24 or data[:8] != PNG_SIGNATURE or data[12:16] != b'IHDR':
        return None
    width, height = struct.unpack('>II', data[16:24])
    return width, height


def jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """Return ``(width, height)`` from a JPEG's first start-of-frame segment, or None."""
    if data[:3] != JPEG_SIGNATURE:
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xD9:  # end of image before any frame
            return None
        (length,) = struct.unpack('>H', data[pos + 2:pos + 4])
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack('>HH', data[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    return None


def claimed_size(data: bytes) -> Optional[tuple[int, int]]:
    """Return the ``(width, height)`` a JPEG or PNG header claims, or None for anything else."""
    return png_size(data) if data[:8] == PNG_SIGNATURE else jpeg_size(data)
