"""Structural checks that catch a truncated file which FFmpeg would open without complaint.

FFmpeg clamps what a container declares to what is there: a WAV cut in half declares (and decodes) half its length,
an Ogg file cut anywhere ends at its last whole page, an MP4 cut late in its ``moov`` index can lose a track. The
layout of these containers says what should be there, so each check compares it with the file's size:

- MP4/MOV (ISO base media): every top-level box (``size``, ``type``) ends within the file.
- WAV/RIFF: the ``RIFF`` size and every chunk (``data`` above all) end within the file.
- Ogg: the last page is whole and carries the end-of-stream flag.
- Raw ADTS AAC: no frame runs past the end of the file.

Each returns None when the file is whole, else a sentence saying what is missing.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

#: Top-level box types that start an MP4/MOV file (to recognise one that FFmpeg failed to open).
ISOBMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
#: RIFF sizes written by streaming encoders that did not know the length (not a truncation).
_UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)
#: Longest Ogg page: 27-byte header, 255 lacing values, 255 segments of 255 bytes.
_MAX_OGG_PAGE = 27 + 255 + 255 * 255


def _size(f: BinaryIO) -> int:
    f.seek(0, io.SEEK_END)
    return f.tell()


def isobmff_problem(f: BinaryIO) -> str | None:
    """MP4/MOV: a top-level box (``size``, ``type``; size 1 = 64-bit size follows, 0 = to the end) that is
    impossible or runs past the end of the file. The walk stops at bytes that are no box (junk some writers append
    after the last box, which FFmpeg skips)."""
    total = _size(f)
    offset = 0
    while offset + 8 <= total:
        f.seek(offset)
        size, kind = struct.unpack(">I4s", f.read(8))
        if not all(32 <= c < 127 for c in kind):
            return None  # not a box type (four printable characters)
        header = 8
        if size == 1:
            if offset + 16 > total:
                return None
            (size,) = struct.unpack(">Q", f.read(8))
            header = 16
        elif size == 0:  # the last box runs to the end of the file
            return None
        name = kind.decode("ascii")
        if size < header:
            return f"damaged MP4/MOV: its '{name}' box at byte {offset} declares an impossible size of {size} bytes"
        if offset + size > total:
            what = {"moov": " (the index of all streams)", "mdat": " (the audio and video data)"}.get(
                name, ""
            )
            return (
                f"truncated: its '{name}' box{what} declares {size} bytes at byte {offset} but the file ends "
                f"{offset + size - total} bytes short of it ({total} bytes)"
            )
        offset += size
    return None


def riff_problem(f: BinaryIO) -> str | None:
    """WAV: the ``RIFF`` size or a chunk (``data``: the samples) that runs past the end of the file."""
    total = _size(f)
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF":
        return None  # RF64 / BW64 and others: not checked
    (riff,) = struct.unpack("<I", head[4:8])
    offset = 12
    while offset + 8 <= total:
        f.seek(offset)
        kind, size = struct.unpack("<4sI", f.read(8))
        if size in _UNKNOWN_RIFF_SIZES and kind == b"data":
            return None  # written by a streaming encoder: the data runs to the end
        if offset + 8 + size > total:
            name = kind.decode("latin-1")
            what = " (the samples)" if kind == b"data" else ""
            return (
                f"truncated: its '{name}' chunk{what} declares {size} bytes at byte {offset} but the file ends "
                f"{offset + 8 + size - total} bytes short of it ({total} bytes)"
            )
        offset += 8 + size + (size & 1)  # chunks are padded to an even size
    if riff not in _UNKNOWN_RIFF_SIZES and riff + 8 > total:
        return f"truncated: its RIFF header declares {riff + 8} bytes but the file has {total}"
    return None


def ogg_problem(f: BinaryIO) -> str | None:
    """Ogg: the last page cut short, or no end-of-stream flag on it (the file stops mid-stream)."""
    total = _size(f)
    start = max(0, total - _MAX_OGG_PAGE)
    f.seek(start)
    tail = f.read()
    at = tail.rfind(b"OggS")
    while at >= 0 and len(tail) - at < 27:
        at = tail.rfind(b"OggS", 0, at)  # a capture pattern too close to the end for a header: look earlier
    if at < 0:
        return "truncated: no whole Ogg page at its end"
    segments = tail[at + 26]
    table = tail[at + 27 : at + 27 + segments]
    page_end = at + 27 + segments + sum(table)
    if len(table) < segments or page_end > len(tail):
        return f"truncated: its last Ogg page (at byte {start + at}) is cut short"
    if not tail[at + 5] & 0x04:
        return f"truncated: its last Ogg page (at byte {start + at}) does not end the stream"
    return None


def adts_problem(f: BinaryIO) -> str | None:
    """Raw ADTS AAC: a frame (7-byte header with a 13-bit length) that runs past the end of the file. The walk stops
    at bytes that are no frame header (a trailing tag)."""
    f.seek(0)
    data = f.read()
    offset = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag before the frames: 10-byte header, syncsafe size
        offset = 10 + (
            (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        )
    frames = 0
    while offset + 7 <= len(data) and data[offset] == 0xFF and data[offset + 1] & 0xF6 == 0xF0:
        length = (data[offset + 3] & 0x03) << 11 | data[offset + 4] << 3 | data[offset + 5] >> 5
        if length < 7:
            return f"damaged AAC: frame {frames} at byte {offset} declares an impossible length of {length} bytes"
        if offset + length > len(data):
            return (
                f"truncated: its AAC frame {frames} at byte {offset} declares {length} bytes but the file ends "
                f"{offset + length - len(data)} bytes short of it ({len(data)} bytes)"
            )
        offset += length
        frames += 1
    return None


__all__ = ["ISOBMFF_BOXES", "adts_problem", "isobmff_problem", "ogg_problem", "riff_problem"]
