"""Media that is refused instead of misread (issue 10, item 2): real files written with PyAV and damaged copies.

Each bad input ends in a `MediaError` (a ``ValueError``) naming the file, what is wrong and the remedy, or (for
arguments) a ``ValueError`` naming the argument and the limit. Nothing is read but the named file or the bytes.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from favor_avsync import MediaError, MediaLimits, MissingMediaError, load_media
from favor_avsync.testing import make_test_clip

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 6 s MP4 (h264 + AAC) as FFmpeg writes it: ftyp, free, mdat, then the moov index at the end."""
    return make_test_clip(tmp_path_factory.mktemp("refused") / "six.mp4", container="mp4", duration=6.0).path


def _top_level_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    boxes, offset = {}, 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes[kind.decode()] = (offset, size)
        offset += size
    return boxes


# ---------------------------------------------------------------------------------------------- damaged containers


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.72, 0.8, 0.99])
def test_mp4_cut_inside_its_moov_index(clip, tmp_path, fraction):
    # Cuts late in the moov atom used to load with audio=None (its track gone) and the full 6 s duration.
    data = clip.read_bytes()
    start, size = _top_level_boxes(data)["moov"]
    assert start + size == len(data)  # the index is the last box
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: start + int(size * fraction)])
    match = r"cut\.mp4: truncated: its 'moov' box \(the index of all streams\) declares \d+ bytes .* short"
    with pytest.raises(MediaError, match=match + r".*re-download or re-encode"):
        load_media(cut)
    with pytest.raises(MediaError, match=r"<bytes: \d+ bytes>: truncated: its 'moov' box"):
        load_media(cut.read_bytes())
    assert load_media(clip).audio is not None  # the whole file still loads


def test_mp4_box_with_impossible_size(clip, tmp_path):
    data = bytearray(clip.read_bytes())
    start, _ = _top_level_boxes(bytes(data))["moov"]
    data[start : start + 4] = struct.pack(">I", 3)  # smaller than a box header
    path = tmp_path / "bad.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(
        MediaError, match=r"bad\.mp4: damaged MP4/MOV: its 'moov' box .* impossible size of 3 bytes"
    ):
        load_media(path)


@pytest.mark.parametrize("junk", [b"\x00\x01\x02\x03\xff\xfe\xfd\xfc" * 4, b"\x00" * 64])
def test_mp4_with_bytes_after_its_last_box_still_loads(clip, tmp_path, junk):
    # Some writers append bytes that are no box; FFmpeg skips them, and so does the box walk.
    path = tmp_path / "tail.mp4"
    path.write_bytes(clip.read_bytes() + junk)
    media = load_media(path)
    assert media.num_frames == 12 and media.audio is not None


def test_matroska_cut_says_what_is_missing(tmp_path):
    spec = make_test_clip(tmp_path / "six.mkv", container="mkv", duration=6.0)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(spec.path.read_bytes()[: int(spec.path.stat().st_size * 0.4)])
    with pytest.raises(
        MediaError,
        match=r"cut\.mkv: truncated: it declares 6\.00 s but only \d\.\d\d s could be decoded "
        r"\(video to \d\.\d\d s, audio to \d\.\d\d s; \d\.\d\d s missing\); re-download or re-encode",
    ):
        load_media(cut)


@pytest.mark.parametrize(
    ("container", "match"),
    [
        # FFmpeg clamps a cut WAV's declared length to what is there, and ends a cut Ogg at its last whole page:
        # both used to load as a shorter clip without a word.
        (
            "wav",
            r"truncated: its 'data' chunk \(the samples\) declares 192000 bytes at byte \d+ but the file ends",
        ),
        ("ogg", r"truncated: its last Ogg page \(at byte \d+\) is cut short"),
        ("mp3", r"truncated or damaged: its audio stream declares 6\.00 s but decoding stops at \d\.\d\d s "),
    ],
)
def test_cut_audio_files(tmp_path, container, match):
    spec = make_test_clip(tmp_path / f"six.{container}", container=container, duration=6.0)
    assert load_media(spec.path).duration == pytest.approx(6.0, abs=0.05)
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(spec.path.read_bytes()[: spec.path.stat().st_size // 2])
    with pytest.raises(MediaError, match=rf"cut\.{container}: {match}.*re-download or re-encode the file"):
        load_media(cut)


def test_raw_aac_cut_inside_a_frame(tmp_path):
    # Raw ADTS AAC declares no length; each frame declares its own, so a cut inside the last one shows.
    data = make_test_clip(tmp_path / "six.aac", container="aac", duration=6.0).path.read_bytes()
    path = tmp_path / "cut.aac"
    path.write_bytes(data[:-3])
    with pytest.raises(
        MediaError,
        match=r"cut\.aac: truncated: its AAC frame \d+ at byte \d+ declares \d+ bytes but the file ends 3 bytes short",
    ):
        load_media(path)


def test_streaming_wav_with_unknown_sizes_still_loads(tmp_path):
    # A WAV written to a pipe cannot know its length: RIFF and data sizes 0xFFFFFFFF mean "to the end of the file".
    data = bytearray(make_test_clip(tmp_path / "six.wav", container="wav", duration=6.0).path.read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.find(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(data))
    assert load_media(path).duration == pytest.approx(6.0, abs=0.05)


def test_ogg_cut_on_a_page_boundary_is_refused(tmp_path):
    # A cut exactly after a whole page leaves a valid-looking file; its last page lacks the end-of-stream flag.
    data = make_test_clip(tmp_path / "six.ogg", container="ogg", duration=6.0).path.read_bytes()
    last = data.rfind(b"OggS")
    path = tmp_path / "pages.ogg"
    path.write_bytes(data[:last])
    with pytest.raises(
        MediaError, match=r"pages\.ogg: truncated: its last Ogg page \(at byte \d+\) does not end"
    ):
        load_media(path)


def test_declared_stream_that_cannot_be_decoded(tmp_path):
    # A Matroska file that declares an audio track but holds no audio packet: it used to load as video only.
    path = tmp_path / "silent_track.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 9 * i % 256, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
    with pytest.raises(
        MediaError,
        match=r"silent_track\.mkv: damaged: it declares an audio stream \(pcm_s16le\) but none of it could be "
        r"decoded; .*ffmpeg -i IN -an -c copy OUT",
    ):
        load_media(path)


# ---------------------------------------------------------------------------------------------- not media


_TEXTS = {
    "notes.txt": "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" * 40,
    "release.nfo": "=== Release notes ===\nSource: somewhere\n" * 60,
    "film.srt": "".join(f"{i}\n00:00:{i:02d},000 --> 00:00:{i:02d},900\nLine {i}\n\n" for i in range(1, 60)),
    "film.ass": "[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize\n"
    "Style: Default,Arial,20\n\n[Events]\nFormat: Layer, Start, End, Style, Text\n"
    + "".join(f"Dialogue: 0,0:00:{i:02d}.00,0:00:{i:02d}.90,Default,Line {i}\n" for i in range(50)),
    "film.vtt": "WEBVTT\n\n"
    + "".join(f"00:00:{i:02d}.000 --> 00:00:{i:02d}.900\nLine {i}\n\n" for i in range(50)),
    "meta.txt": ";FFMETADATA1\ntitle=x\n"
    + "".join(f"[CHAPTER]\nTIMEBASE=1/1000\nSTART={i}000\nEND={i}999\ntitle=c{i}\n" for i in range(40)),
    "songs.m3u": "".join(f"/music/song{i}.mp3\n" for i in range(100)),
    "beats.sbg": "-SE\nalpha: 200+10/50\n" + "NOW alpha\n" * 120,
}
_KINDS = {
    "notes.txt": "'tty'",
    "release.nfo": "'tty'",
    "film.srt": "'srt'",
    "film.ass": "'ass'",
    "film.vtt": "'webvtt'",
    "meta.txt": "'ffmetadata'",
    "songs.m3u": "text",
    "beats.sbg": "'sbg'",
}


@pytest.mark.parametrize("name", sorted(_TEXTS))
def test_text_subtitles_and_metadata_are_not_media(tmp_path, name):
    # A text file of 1 KB or more used to decode as one 640x400 picture of the rendered text (FFmpeg's tty).
    path = tmp_path / name
    path.write_text(_TEXTS[name])
    assert path.stat().st_size >= 1024
    kind = _KINDS[name]
    expected = (
        rf"FFmpeg reads it as {kind}, which is not audio, video or an image"
        if kind != "text"
        else "a text file"
    )
    with pytest.raises(MediaError, match=rf"{re.escape(name)}: {expected}.*give the media file itself"):
        load_media(path)
    with pytest.raises(MediaError, match=r"<bytes: \d+ bytes>: "):
        load_media(path.read_bytes())


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("list.ffconcat", "ffconcat version 1.0\nfile 'six.mp4'\nfile 'six.mp4'\n", "concat"),
        ("play.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\nsix.mp4\n#EXT-X-ENDLIST\n", "hls"),
    ],
)
def test_lists_of_other_files_are_refused_not_followed(clip, tmp_path, monkeypatch, name, text, kind):
    # Beside a real clip that they name: FFmpeg's concat and hls demuxers would decode it (read another file).
    (tmp_path / "six.mp4").write_bytes(clip.read_bytes())
    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MediaError, match=rf"{name}: FFmpeg reads it as '{kind}', which is not audio, video"):
        load_media(name)
    with pytest.raises(MediaError, match=rf"<bytes: \d+ bytes>: FFmpeg reads it as '{kind}'"):
        load_media(text.encode())


# ---------------------------------------------------------------------------------------------- protocol names


@pytest.mark.parametrize(
    "name", ["pipe:0", "pipe:", "file:six.mp4", "concat:six.mp4|six.mp4", "http://127.0.0.1:9/x.mp4", "fd:0"]
)
def test_protocol_names_are_file_names(clip, tmp_path, monkeypatch, name):
    (tmp_path / "six.mp4").write_bytes(clip.read_bytes())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingMediaError, match=rf"{re.escape(name)}: no such media file"):
        load_media(name)


def test_an_empty_path_is_a_missing_file_not_the_working_directory(tmp_path, monkeypatch):
    """``load_media("")`` said ": is a directory, not a media file" (Path("") is the working directory)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingMediaError, match="path_or_bytes: the file path is empty"):
        load_media("")


def test_pipe_name_never_reads_standard_input(clip, tmp_path):
    # With a valid clip on standard input, "pipe:0" must still be a (missing) file, not a read of stdin (a hang
    # when nothing is written to it).
    code = (
        "from favor_avsync import load_media, MissingMediaError\n"
        "try:\n    load_media('pipe:0')\nexcept MissingMediaError as e:\n    print('missing:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=clip.read_bytes(), capture_output=True, cwd=tmp_path, timeout=60
    )
    assert done.stdout.decode().strip() == "missing: pipe:0: no such media file", done.stderr.decode()


def test_image_pattern_name_reads_only_that_file(tmp_path, monkeypatch):
    # FFmpeg's image2 demuxer expands "img%03d.png" to img001.png, img002.png ...: given as a URL it would read
    # those files instead of the one named.
    make_test_clip(tmp_path / "img%03d.png", container="png", colours=[(255, 0, 0)])
    for i in (1, 2):
        make_test_clip(tmp_path / f"img{i:03d}.png", container="png", colours=[(0, 0, 255)])
    monkeypatch.chdir(tmp_path)
    frames = load_media("img%03d.png").frames
    assert frames.shape[0] == 1
    assert frames[0, :, 10, 10].tolist() == [255, 0, 0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(MediaError, match=r"clip\.mp4: not a regular file \(a pipe or device\?\)"):
        load_media(fifo)


def test_a_file_really_named_like_a_protocol_is_that_file(clip, tmp_path, monkeypatch):
    (tmp_path / "pipe:0").write_bytes(clip.read_bytes())
    monkeypatch.chdir(tmp_path)
    media = load_media("pipe:0")
    assert media.num_frames == 12 and media.audio is not None


# ---------------------------------------------------------------------------------------------- limits


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` RGB pixels and holds one compressed row (a small hostile file)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_huge_png_is_refused_before_decoding(tmp_path):
    # 20000 x 20000 declared in a few KB: decoding would take 1.2 GB of RGB before anything could object.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(
        MediaError,
        match=r"bomb\.png: the picture's size could not be read within limits\.max_pixels=40,000,000 .*"
        r"MediaLimits\(max_pixels=\.\.\.\)",
    ):
        load_media(path)


def test_pixel_limit_on_images_and_video(tmp_path):
    image = make_test_clip(tmp_path / "one.png", container="png", size=(640, 480))
    video = make_test_clip(tmp_path / "v.mkv", container="mkv", size=(640, 480), duration=1.0)
    small = MediaLimits(max_pixels=640 * 480 - 1)
    # A video stream declares its size: refused before decoding, with the size.
    with pytest.raises(
        MediaError,
        match=r"v\.mkv: its pictures are 640 x 480 = 307,200 pixels, over limits\.max_pixels=307,199",
    ):
        load_media(video.path, limits=small)
    # A PNG's size is only known by decoding it, which FFmpeg refuses past the limit.
    with pytest.raises(
        MediaError, match=r"one\.png: the picture's size could not be read within limits\.max_pixels"
    ):
        load_media(image.path, limits=small)
    for spec in (image, video):
        assert load_media(spec.path, limits=MediaLimits(max_pixels=640 * 480)).frames.shape[-2:] == (480, 640)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 1e6}, r"fps must be at most limits\.max_fps=240 frames per second, got 1000000\.0"),
        ({"fps": 241}, r"fps must be at most limits\.max_fps=240"),
        (
            {"sample_rate": 10**9},
            r"sample_rate must be in \[1000, limits\.max_sample_rate=384000\].*got 1000000000",
        ),
        ({"sample_rate": 1}, r"sample_rate must be in \[1000, "),
        ({"limits": {"max_pixels": 1}}, "limits must be a favor_avsync.MediaLimits or None, got dict"),
    ],
)
def test_rate_limits_name_the_argument_and_the_limit(clip, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_media(clip, **kwargs)


def test_rate_limits_can_be_raised(clip):
    media = load_media(
        clip, fps=500.0, sample_rate=500_000, limits=MediaLimits(max_fps=500, max_sample_rate=500_000)
    )
    assert media.num_frames == 3000 and media.audio.shape[0] == 3_000_000


@pytest.mark.parametrize(
    "field", ["max_pixels", "max_fps", "max_sample_rate", "max_duration", "max_frame_bytes"]
)
def test_limits_must_be_positive(field):
    with pytest.raises(ValueError, match=rf"MediaLimits\.{field} must be"):
        MediaLimits(**{field: 0})


def test_duration_limit(clip):
    with pytest.raises(
        MediaError,
        match=r"six\.mp4: 6 s to decode, over limits\.max_duration=2 s; pass max_seconds= or start=/end=",
    ):
        load_media(clip, limits=MediaLimits(max_duration=2.0))
    media = load_media(clip, end=1.5, limits=MediaLimits(max_duration=2.0))
    assert media.duration == pytest.approx(1.5)


def _pcm_with_a_jump(path: Path, live: bool) -> Path:
    """Matroska PCM audio whose second packet claims to be 10 hours in (``live``: no duration written)."""
    with av.open(str(path), "w", format="matroska", options={"live": "1"} if live else {}) as out:
        stream = out.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        for start in (0, 10 * 3600 * 16000):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def test_timestamps_far_in_the_future_are_refused(tmp_path):
    # Padding the 10 hour gap with silence would take 2.3 GB: refused on the declared duration before decoding ...
    declared = _pcm_with_a_jump(tmp_path / "jump.mkv", live=False)
    with pytest.raises(
        MediaError, match=r"jump\.mkv: 36000\.1 s to decode, over limits\.max_duration=21600 s"
    ):
        load_media(declared)
    # ... and, where the file declares 0.2 s, on the timestamps as they are decoded (before the gap is filled).
    live = _pcm_with_a_jump(tmp_path / "live.mkv", live=True)
    with pytest.raises(
        MediaError,
        match=r"live\.mkv: its audio timestamps reach 36000 s into the clip, over limits\.max_duration",
    ):
        load_media(live)


def test_frame_memory_limit(clip):
    with pytest.raises(
        MediaError,
        match=r"six\.mp4: 12 frames at fps=2 of this video would take 110,592 bytes, over "
        r"limits\.max_frame_bytes=101376 \(101,376 bytes\); "
        r"pass max_seconds=",
    ):
        load_media(clip, limits=MediaLimits(max_frame_bytes=64 * 48 * 3 * 11))
    assert load_media(clip, limits=MediaLimits(max_frame_bytes=64 * 48 * 3 * 12)).num_frames == 12
