"""Opening a media file or its bytes so that nothing but that file is read, and refusing what is not media.

- A path is opened as a Python file object, never handed to FFmpeg as a URL: ``pipe:0``, ``http://...``,
  ``concat:a|b`` or ``file:x`` are plain file names (a missing one is `MissingMediaError`, never standard input or
  the network).
- No protocol is allowed for nested opens (``protocol_whitelist``): a playlist (HLS), a concat list or a DASH
  manifest cannot make FFmpeg read other files or URLs.
- Demuxers that turn text into "media" are refused by name: FFmpeg's ``tty`` demuxer renders any text file of
  about 1 KB or more (.txt, .nfo, .m3u ...) as a 640x400 picture; subtitle, playlist and metadata formats hold
  no picture or sound.
- Truncated MP4/MOV, WAV and Ogg files, which FFmpeg opens without complaint, are refused (_integrity.py): a cut
  inside an MP4's trailing ``moov`` index could otherwise open with a stream missing and the full duration.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from favor_avsync._integrity import ISOBMFF_BOXES, adts_problem, isobmff_problem, ogg_problem, riff_problem
from favor_avsync.errors import MediaError, MissingMediaError

#: FFmpeg demuxers that are not audio, video or a picture: text rendered as a picture (tty and the text-art
#: formats), subtitles and captions, playlists and lists of other files, metadata, synthesiser scripts, network
#: session descriptions, raw data.
NON_MEDIA_FORMATS = frozenset(
    {
        # text rendered as a picture
        "tty", "bin", "xbin", "adf", "idf",
        # subtitles and captions
        "srt", "ass", "webvtt", "subviewer", "subviewer1", "microdvd", "mpl2", "mpsub", "pjs", "realtext", "sami",
        "stl", "vplayer", "jacosub", "lrc", "scc", "sup", "vobsub", "aqtitle", "dvbsub", "dvbtxt", "mcc",
        "tedcaptions", "rcwt", "ttml",
        # playlists, manifests and lists of other files or URLs
        "hls", "dash", "hds", "smoothstreaming", "concat", "sdp", "rtsp", "rtp", "sap", "tee",
        # metadata, scripts, raw data
        "ffmetadata", "sbg", "data", "lavfi",
    }
)  # fmt: skip
#: Video codecs of those text demuxers (refused too, whatever the container says).
NON_MEDIA_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
#: Signatures of text formats that fail to open once nested reads are refused (so FFmpeg names no format).
_TEXT_SIGNATURES = ((b"ffconcat version", "concat"), (b"#EXTM3U", "hls"), (b"<MPD", "dash"))
#: Structural truncation checks (_integrity.py) by FFmpeg demuxer name.
_STRUCTURE_CHECKS = (
    (("mov", "mp4"), isobmff_problem),
    (("wav",), riff_problem),
    (("ogg",), ogg_problem),
    (("aac",), adts_problem),
)
#: Read buffer of PyAV's Python I/O (its 32 KB default makes many small Python calls on large files).
_BUFFER_SIZE = 1 << 20


class MediaSource:
    """A path or bytes that can be opened several times, with a name for messages.

    Args:
        path_or_bytes: A file path (``str`` or ``os.PathLike``) or the encoded file in memory.
        max_pixels: Decoders refuse pictures larger than this (passed to FFmpeg as ``max_pixels``), so probing a
            file never decodes a huge picture.
    """

    def __init__(self, path_or_bytes: Any, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._structure_checked = False
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            self.data: bytes | None = bytes(path_or_bytes)
            self.path: Path | None = None
            self.name = f"<bytes: {len(self.data)} bytes>"
            if not self.data:
                raise MediaError("path_or_bytes: the media bytes are empty (0 bytes)")
            return
        if not isinstance(path_or_bytes, (str, os.PathLike)):
            raise ValueError(
                f"path_or_bytes must be a file path or bytes, got {type(path_or_bytes).__name__}: {path_or_bytes!r}"
            )
        if not os.fspath(path_or_bytes):  # Path("") is the working directory
            raise MissingMediaError("path_or_bytes: the file path is empty; give a media file")
        self.path = Path(path_or_bytes)
        self.data = None
        # As given (Path would turn "http://x" into "http:/x" in messages).
        given = os.fspath(path_or_bytes)
        self.name = given if isinstance(given, str) else str(self.path)
        if not self.path.exists():
            raise MissingMediaError(f"{self.name}: no such media file")
        if self.path.is_dir():
            raise MediaError(f"{self.name}: is a directory, not a media file")
        if not self.path.is_file():
            raise MediaError(
                f"{self.name}: not a regular file (a pipe or device?); save the media to a file first"
            )
        if self.path.stat().st_size == 0:
            raise MediaError(f"{self.name}: the file is empty (0 bytes)")

    def _file(self) -> BinaryIO:
        return io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")

    @contextlib.contextmanager
    def open(self, av: Any) -> Iterator[Any]:
        """The opened PyAV input container, for a ``with`` block; refuses non-media formats and truncated files."""
        with self._file() as file:
            container = self._open_container(av, file)
            try:
                yield container
            finally:
                container.close()

    def _open_container(self, av: Any, file: BinaryIO) -> Any:
        try:
            container = av.open(
                file,
                mode="r",
                buffer_size=_BUFFER_SIZE,
                # No nested I/O: whatever the format, FFmpeg reads only this file object.
                options={"protocol_whitelist": "none", "max_pixels": str(self.max_pixels)},
            )
        except av.FFmpegError as err:
            head = self._head()
            text = head.lstrip(b"\xef\xbb\xbf \t\r\n")  # without a UTF-8 byte-order mark or leading space
            kind = next((kind for sig, kind in _TEXT_SIGNATURES if text.startswith(sig)), None)
            if kind is not None:
                raise self._not_media(kind) from err
            if _is_text(head):
                raise MediaError(
                    f"{self.name}: a text file, not audio, video or an image; give the media file itself"
                ) from err
            if head[4:8] in ISOBMFF_BOXES:
                self._check_structure("mp4")  # a truncated MP4 says which box is cut
            raise MediaError(
                f"{self.name}: not a readable media file (corrupt or truncated?): {err}; give a complete video, "
                "audio or image file"
            ) from err
        try:
            fmt = container.format.name
            if any(f in NON_MEDIA_FORMATS for f in fmt.split(",")):
                raise self._not_media(fmt)
            for stream in container.streams.video:
                codec = stream.codec_context.name if stream.codec_context is not None else None
                if codec in NON_MEDIA_CODECS:
                    raise self._not_media(f"{fmt} ({codec} text rendered as a picture)")
            self._check_structure(fmt)
        except BaseException:
            container.close()
            raise
        return container

    def _not_media(self, kind: str) -> MediaError:
        return MediaError(
            f"{self.name}: FFmpeg reads it as '{kind}', which is not audio, video or an image (text, subtitles, "
            "a playlist or list of other files, or metadata); give the media file itself"
        )

    def _head(self) -> bytes:
        """The first KB of the file."""
        with self._file() as f:
            return f.read(1024)

    def _check_structure(self, fmt: str) -> None:
        """Refuse a truncated MP4/MOV, WAV, Ogg or ADTS file (see _integrity.py) that FFmpeg opened anyway (once per
        source: the file is opened several times per load)."""
        if self._structure_checked:
            return
        names = fmt.split(",")
        check = next((c for formats, c in _STRUCTURE_CHECKS if any(f in formats for f in names)), None)
        if check is None:
            return
        with self._file() as f:
            problem = check(f)
        if problem is not None:
            raise MediaError(f"{self.name}: {problem}; re-download or re-encode the file")
        self._structure_checked = True


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file read as text (UTF-8 without control characters other than white space)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a multi-byte character cut at the end of the head is still text
        if err.start < len(head) - 3:
            return False
        text = head[: err.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n\f" for c in text)


def pick_streams(container: Any) -> tuple[Any | None, Any | None]:
    """The first video stream that is not an attached cover picture, and the first audio stream (or None)."""
    video = next((s for s in container.streams.video if not _is_attached_picture(s)), None)
    audio = next(iter(container.streams.audio), None)
    return video, audio


def _is_attached_picture(stream: Any) -> bool:
    try:
        return bool(stream.disposition & stream.disposition.__class__.attached_pic)
    except (AttributeError, TypeError):  # pragma: no cover - very old PyAV
        return False


def decode(av: Any, container: Any, stream: Any, name: str) -> Any:
    """Frames of ``stream``, turning FFmpeg errors into a MediaError that names the file."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as err:
        raise MediaError(
            f"{name}: decoding the {stream.type} stream failed (corrupt?): {err}; re-download or re-encode the file"
        ) from err


def declared_stream_end(stream: Any) -> float | None:
    """Where the container says a stream ends (file clock, seconds), or None when it does not say."""
    if stream.duration is None or stream.start_time is None or stream.time_base is None:
        return None
    return float((stream.start_time + stream.duration) * stream.time_base)


def seconds(frame: Any) -> float | None:
    """A decoded frame's presentation time in seconds (None without a timestamp)."""
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


def seek(container: Any, stream: Any, at: float) -> None:
    """Seek to the key frame at or before ``at`` seconds (decoding then continues forward from there)."""
    if stream.time_base is None:
        return
    container.seek(int(at / stream.time_base), stream=stream, backward=True, any_frame=False)


def progress_bar(show: bool, total: float | None, desc: str) -> Any:
    """A tqdm bar in seconds, or None when not shown."""
    if not show:
        return None
    from tqdm.auto import tqdm  # lazily: tqdm is the [media] extra

    return tqdm(total=round(total, 1) if total else None, desc=desc, unit="s", leave=False)


__all__ = [
    "NON_MEDIA_CODECS",
    "NON_MEDIA_FORMATS",
    "MediaSource",
    "pick_streams",
    "progress_bar",
    "seconds",
    "seek",
]
