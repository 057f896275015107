"""Bad media and bad arguments to load_media: clear errors that name the file or the argument."""

from __future__ import annotations

import numpy as np
import pytest

from favor_avsync import MediaError, MissingMediaError, load_media
from favor_avsync.testing import make_test_clip

pytest.importorskip("av")


@pytest.fixture(scope="module")
def six_seconds(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return {c: make_test_clip(root / f"six.{c}", container=c, duration=6.0) for c in ("mp4", "mkv")}


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.mp4"
    with pytest.raises(MissingMediaError, match=r"nowhere\.mp4: no such media file"):
        load_media(path)
    with pytest.raises(FileNotFoundError):  # also the standard exception
        load_media(str(path))


def test_empty_file_and_bytes(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: the file is empty \(0 bytes\)"):
        load_media(path)
    with pytest.raises(MediaError, match="the media bytes are empty"):
        load_media(b"")


def test_directory(tmp_path):
    with pytest.raises(MediaError, match="is a directory"):
        load_media(tmp_path)


def test_corrupt_file(tmp_path):
    # Fixed bytes: some random byte strings happen to probe as MPEG audio, which FFmpeg then decodes as noise.
    path = tmp_path / "noise.mp4"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    with pytest.raises(MediaError, match=r"noise\.mp4: not a readable media file"):
        load_media(path)
    with pytest.raises(MediaError, match=r"<bytes: 4096 bytes>: not a readable media file"):
        load_media(path.read_bytes())
    text = tmp_path / "notes.mkv"
    text.write_text("this is not a media file\n" * 200)
    with pytest.raises(MediaError, match=r"notes\.mkv: a text file, not audio, video or an image"):
        load_media(text)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
@pytest.mark.parametrize("keep", [0.3, 0.6])
def test_truncated_file(six_seconds, tmp_path, container, keep):
    data = six_seconds[container].path.read_bytes()
    path = tmp_path / f"cut.{container}"
    path.write_bytes(data[: int(len(data) * keep)])
    # MP4: its top-level boxes (the data, then the index) run past the end of the file. Matroska decodes part:
    # shorter than declared.
    match = {
        "mp4": r"truncated: its '(mdat|moov)' box .* the file ends \d+ bytes short",
        "mkv": r"truncated: it declares 6\.00 s",
    }
    with pytest.raises(MediaError, match=rf"cut\.{container}: {match[container]}.*re-download or re-encode"):
        load_media(path)


def test_no_streams(tmp_path):
    import av

    path = tmp_path / "nothing.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        out.add_stream("subrip")  # a container with only a subtitle stream
    with pytest.raises(MediaError, match=r"nothing\.mkv"):
        load_media(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 0}, "fps must be > 0, got 0"),
        ({"fps": -2.0}, "fps must be > 0"),
        ({"sample_rate": 0}, "sample_rate must be an int > 0, got 0"),
        ({"sample_rate": 16000.0}, "sample_rate must be an int > 0"),
        ({"max_seconds": 0}, "max_seconds must be > 0, got 0"),
        ({"max_seconds": float("inf")}, "max_seconds must be a finite number"),
        ({"start": -1.0}, "start must be >= 0 seconds, got -1.0"),
        ({"start": 2.0, "end": 1.0}, "end must be after start, got start=2.0, end=1.0"),
    ],
)
def test_argument_errors(six_seconds, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_media(six_seconds["mkv"].path, **kwargs)


def test_wrong_source_type():
    with pytest.raises(ValueError, match="path_or_bytes must be a file path or bytes, got int"):
        load_media(42)


def test_start_past_the_end(six_seconds):
    with pytest.raises(
        ValueError, match=r"start=7\.0 s is at or past the end of .*six\.mkv \(6\.00 s of content\)"
    ):
        load_media(six_seconds["mkv"].path, start=7.0)


def test_cut_inside_the_last_frame_still_warns(six_seconds):
    # 5.99 s: the last source frame (5.96 s) and the audio both run past the limit by 10 ms.
    with pytest.warns(UserWarning, match=r"longer than max_seconds=5\.99"):
        clip = load_media(six_seconds["mkv"].path, max_seconds=5.99)
    assert clip.duration == pytest.approx(5.99)
