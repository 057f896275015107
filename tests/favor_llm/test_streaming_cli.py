"""``favor stream`` (a file and a real pipe on standard input) and the incremental pipe decoder, against the Python
API: a tiny model saved to disk (cutting audio in 2 s chunks), a Matroska clip (h264 + PCM, streamable)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from favor_avsync import load_media
from favor_avsync.testing import make_test_clip
from favor_llm import FavorModel, FavorProcessor
from favor_llm.cli import main
from favor_llm.streaming.media import pipe_pieces
from favor_llm.testing import tiny_model_and_processor

QUESTION = "What colour is the screen at the start?"
LINE = re.compile(r"^\[\s*([\d.]+) s\] (.*)  \(latency [\d.]+ s; context ([\d.]+)-([\d.]+) s\)$")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_cli")
    model, processor = tiny_model_and_processor(seed=3, audio_chunk_seconds=2.0)
    model.save_frozen_components(root / "frozen")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    make_test_clip(root / "clip.mkv", container="mkv", duration=5.0, fps=10.0, size=(32, 32), tone_at=2.5)
    return {"model": root / "model", "clip": root / "clip.mkv"}


def _answers(text: str) -> list[tuple[float, str, float, float]]:
    out = []
    for line in text.strip().split("\n"):
        match = LINE.match(line)
        assert match, f"unexpected output line {line!r}"
        out.append((float(match[1]), match[2], float(match[3]), float(match[4])))
    return out


def _offline_answer(model_dir: Path, clip: Path, seconds: float) -> str:
    """The Python API's greedy answer on the first ``seconds`` of the clip (no frame-encoder instruction, as the
    stream without --instruction)."""
    model = FavorModel.from_pretrained(model_dir).eval()
    processor = FavorProcessor.from_pretrained(model_dir)
    decoded = load_media(clip, fps=2.0, sample_rate=16000)
    frames = int(seconds * 2)
    media = {"video": decoded.frames[:frames], "audio": decoded.audio[: int(seconds * 16000)]}
    inputs = processor(text=QUESTION, media=media)
    inputs.pop("qformer_input_ids", None)
    inputs.pop("qformer_attention_mask", None)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    return processor.decode_answers(generated, inputs)[0].strip()


def test_stream_a_file_answers_every_interval_like_offline(saved, capsys):
    argv = ["stream", "--model", str(saved["model"]), "--media", str(saved["clip"]), "--question", QUESTION]
    assert main([*argv, "--every", "2", "--max-new-tokens", "6"]) == 0
    answers = _answers(capsys.readouterr().out)
    assert [a[0] for a in answers] == [2.0, 4.0, 5.0]  # every 2 s of media, and at the end
    assert all(a[2] == 0.0 and a[3] == a[0] for a in answers)  # the context covers the media so far
    assert answers[1][1] == _offline_answer(saved["model"], saved["clip"], 4.0)
    assert answers[2][1] == _offline_answer(saved["model"], saved["clip"], 5.0)


def test_every_shorter_than_a_piece_asks_once_per_media_time(saved, capsys):
    # --every 0.05 with 0.5 s pieces used to ask ten times at the same media time (ten identical answers); with
    # --every 1e-12 the asking loop never ended
    argv = ["stream", "--model", str(saved["model"]), "--media", str(saved["clip"]), "--question", QUESTION]
    assert main([*argv, "--every", "1e-12", "--max-new-tokens", "2"]) == 0
    times = [a[0] for a in _answers(capsys.readouterr().out)]
    assert times == sorted(set(times)) and times[-1] == 5.0 and len(times) == 10, times


def test_stream_a_pipe_on_stdin_gives_the_file_answers(saved, capsys):
    """A real pipe (a child process reading standard input) decodes incrementally to the same answers."""
    argv = ["stream", "--model", str(saved["model"]), "--media", "-", "--question", QUESTION, "--every", "2"]
    code = "import sys; from favor_llm.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, *argv, "--max-new-tokens", "6"],
        input=saved["clip"].read_bytes(),
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    piped = _answers(result.stdout.decode())
    assert main([*argv[:4], str(saved["clip"]), *argv[5:], "--max-new-tokens", "6"]) == 0
    from_file = _answers(capsys.readouterr().out)
    assert [(a[0], a[1]) for a in piped] == [(a[0], a[1]) for a in from_file]


def test_pipe_decoder_matches_load_media(saved):
    """Incremental decoding of the bytes gives load_media's frames and (within resampler rounding) its audio."""
    pieces = list(pipe_pieces(io.BytesIO(saved["clip"].read_bytes()), fps=2.0, sample_rate=16000))
    assert len(pieces) > 2  # it really came in pieces
    frames = np.concatenate([f for f, _ in pieces if f is not None])
    audio = np.concatenate([a for _, a in pieces if a is not None])
    clip = load_media(saved["clip"], fps=2.0, sample_rate=16000)
    np.testing.assert_array_equal(frames, clip.frames.numpy().transpose(0, 2, 3, 1))
    assert abs(len(audio) - len(clip.audio)) <= 16
    n = min(len(audio), len(clip.audio))
    np.testing.assert_allclose(audio[:n], clip.audio.numpy()[:n], atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--every", "0"], "--every: expected seconds > 0"),
        (["--media", "missing.mkv"], "--media: no such file"),
        (["--max-new-tokens", "0"], "--max-new-tokens: expected >= 1"),
    ],
)
def test_stream_errors_are_one_line(saved, capsys, extra, needle):
    argv = ["stream", "--model", str(saved["model"]), "--media", str(saved["clip"]), "--question", QUESTION]
    assert main([*argv, *extra]) == 2
    err = [line for line in capsys.readouterr().err.split("\n") if line.strip()]
    assert len(err) == 1 and err[0].startswith("favor stream: error: ") and needle in err[0], err


def test_pipe_decoder_rejects_bytes_that_are_not_media():
    with pytest.raises(ValueError, match="media: stdin is not a media stream PyAV can read"):
        list(pipe_pieces(io.BytesIO(b"this is not a video" * 100), fps=2.0, sample_rate=16000))


def test_an_image_is_not_a_stream(saved, tmp_path, capsys):
    # an image played as a stream was one 0.5 s frame (the offline model repeats it over repeat_image frames), so
    # the answer differed from `favor generate` on the same file (empty with the demo model)
    make_test_clip(tmp_path / "still.png", container="png", size=(32, 32))
    argv = [
        "stream",
        "--model",
        str(saved["model"]),
        "--media",
        str(tmp_path / "still.png"),
        "--question",
        QUESTION,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("favor stream: error: --media: ") and "is an image" in err and "\n" not in err, err


@pytest.mark.parametrize("device", ["bogus", "cuda"])
def test_a_bad_device_is_one_line(saved, capsys, device):
    # was an AssertionError / RuntimeError traceback from torch
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    argv = ["stream", "--model", str(saved["model"]), "--media", str(saved["clip"]), "--question", QUESTION]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("favor stream: error: --device: ") and "\n" not in err, err


def test_pipe_video_time_going_back_is_an_error():
    # a source whose clock jumps back (concatenated recordings, a restarted camera) used to lose the video silently
    # until its time passed the old one again, while the audio ran on: the streams drifted apart
    from favor_llm.streaming.media import _FrameSampler

    sampler = _FrameSampler(2.0)
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    assert len(sampler.push(0.0, image)) == 0 and len(sampler.push(3.0, image)) == 6
    sampler.push(2.9, image)  # a little jitter is tolerated
    with pytest.raises(ValueError, match=r"media: the video's time went back from 3.0 s to 0.5 s"):
        sampler.push(0.5, image)


def test_pipe_places_late_audio_at_its_time_like_load_media(tmp_path):
    # audio starting 1 s after the video used to be put at 0 s: one second off the frames it belongs with
    import fractions

    import av

    path = tmp_path / "late_audio.mkv"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=10)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 10)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        tone = np.zeros(32000, np.float32)
        tone[:3200] = 0.5 * np.sin(np.arange(3200) / 5)  # a burst at the audio's start, 1.0 s into the clip
        for k in range(0, 32000, 1600):
            frame = av.AudioFrame.from_ndarray(
                (tone[None, k : k + 1600] * 32767).astype(np.int16), format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts, frame.time_base = 16000, 16000 + k, fractions.Fraction(1, 16000)
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    offline = np.asarray(load_media(path, fps=2.0, sample_rate=16000).audio)
    with path.open("rb") as handle:
        streamed = np.concatenate(
            [a for _, a in pipe_pieces(handle, fps=2.0, sample_rate=16000) if a is not None]
        )
    first = [int(np.argmax(np.abs(x) > 0.1)) for x in (offline, streamed)]
    assert abs(first[0] - 16000) <= 16 and abs(first[1] - first[0]) <= 16, first
    assert abs(len(streamed) - len(offline)) <= 16
