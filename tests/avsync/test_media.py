"""Real media decoded with PyAV: every sampled frame has the colour of its time, the tone lands on time.

The clips are written in the tests by ``favor_avsync.testing.make_test_clip`` (h264 + AAC in MP4, h264 + PCM in
Matroska, VP9 + Opus in WebM, audio starting 0.5 s late, video starting 0.7 s late, 29.97 fps, variable frame rate,
stereo, no audio, audio only (wav, flac, mp3, m4a, raw AAC, Ogg Opus), images, bytes).
Measured tone-onset errors are printed in the terminal summary (tests/avsync/conftest.py; not under xdist)
and recorded as junit properties.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from favor_avsync import MediaClip, TemporalSynchroniser, load_media
from favor_avsync.testing import make_test_clip, nearest_colour, tone_onset

pytest.importorskip("av")

ONSET_TOLERANCE = 0.020  # seconds

CLIPS = {
    "mp4_h264_aac": dict(container="mp4"),
    "mp4_h264_aac_44k": dict(container="mp4", sample_rate=44100),
    "mkv_h264_pcm": dict(container="mkv"),
    "mp4_audio_0.5s_late": dict(container="mp4", audio_offset=0.5),
    "mkv_audio_0.5s_late": dict(container="mkv", audio_offset=0.5),
    "mp4_29.97fps": dict(container="mp4", fps=30000 / 1001),
    "mkv_29.97fps": dict(container="mkv", fps=30000 / 1001, duration=2.5, tone_at=1.3),
    "mkv_vfr": dict(container="mkv", vfr=True),
    "mp4_vfr": dict(container="mp4", vfr=True, tone_at=0.77),
    "mp4_no_audio": dict(container="mp4", audio=False),
    "mp4_video_0.7s_late": dict(container="mp4", video_offset=0.7),
    "mkv_stereo": dict(container="mkv", channels=2),
    "mp4_stereo_44k": dict(container="mp4", channels=2, sample_rate=44100, tone_at=0.9),
    "webm_vp9_opus": dict(container="webm", tone_at=1.1),
    "wav": dict(container="wav"),
    "m4a_aac": dict(container="m4a", tone_at=0.45),
    "aac_adts": dict(container="aac", tone_at=1.05),
    "ogg_opus": dict(container="ogg", tone_at=0.8),
    "flac": dict(container="flac", tone_at=0.5),
    "mp3": dict(container="mp3", tone_at=1.25),
    "png": dict(container="png"),
    "jpg": dict(container="jpg"),
}
SUFFIX = {c: c for c in ("mp4", "mkv", "webm", "wav", "flac", "mp3", "m4a", "aac", "ogg", "png", "jpg")}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    made = {}
    for name, kwargs in CLIPS.items():
        made[name] = make_test_clip(root / f"{name}.{SUFFIX[kwargs['container']]}", **kwargs)
    made["bytes_mp4"] = make_test_clip(None, container="mp4", tone_at=0.6)
    made["bytes_mkv_late"] = make_test_clip(None, container="mkv", audio_offset=0.5, tone_at=1.1)
    return made


def _check_frames(spec, clip: MediaClip, centre_colour: bool = True):
    assert clip.frames is not None and clip.frames.dtype == torch.uint8
    width, height = spec.size
    assert clip.frames.shape[1:] == (3, height, width)
    t_count = clip.frames.shape[0]
    # frame_times are the starts of the synchroniser's intervals [t / fps, (t + 1) / fps).
    sync = TemporalSynchroniser(fps=clip.fps)
    torch.testing.assert_close(clip.frame_times, sync.frame_times(t_count)[:, 0])
    for t in range(t_count):
        centre = (t + 0.5) / clip.fps
        shown = spec.frame_showing_at(centre)  # the source frame on screen at the interval's centre
        if shown is None:  # before a late video stream: black
            assert math.isnan(clip.source_times[t].item()) and clip.frames[t].max().item() == 0, f"frame {t}"
            continue
        assert clip.source_times[t].item() == pytest.approx(shown, abs=1e-3), f"frame {t}"
        mean_rgb = clip.frames[t].double().mean(dim=(1, 2)).tolist()
        got = nearest_colour(mean_rgb, spec.colours)
        assert got == spec.colour_index_at(shown), f"frame {t} at {centre:.3f} s has colour {mean_rgb}"
        # At 2 fps the centres are >= 50 ms from every colour change, so away from the video's end the picture
        # is the colour of the centre's time itself (sampling at the interval start would fail this).
        if centre_colour and centre < spec.frame_times[-1]:
            assert got == spec.colour_index_at(centre)


def _check_audio(name, spec, clip: MediaClip, errors=None, record=None):
    assert clip.audio is not None and clip.audio.dtype == torch.float32 and clip.audio.ndim == 1
    assert clip.sample_rate == 16000
    onset = tone_onset(clip.audio.numpy(), clip.sample_rate)
    assert onset is not None
    err = onset - spec.tone_at
    if errors is not None:
        errors[name] = err
    if record is not None:
        record("tone_onset_error_ms", round(err * 1000, 3))
    assert abs(err) <= ONSET_TOLERANCE, f"{name}: tone at {onset:.4f} s, truth {spec.tone_at} s"
    # Channels are averaged: the tone is in channel 0 only.
    assert clip.audio.abs().max().item() == pytest.approx(0.5 / spec.channels, abs=0.03)
    # Silence before the tone (including the 0.5 s of padding for a late audio stream).
    before = clip.audio[: int((spec.tone_at - 0.03) * clip.sample_rate)]
    assert before.abs().max().item() < 0.02
    # The audio lasts as long as the stream (within one 20 ms step). Raw ADTS cannot declare where the encoder's
    # padding of its last 1024-sample frame ends, so there it may run up to one AAC frame longer.
    slack = 0.02 + (1024 / spec.sample_rate if spec.container == "aac" else 0.0)
    assert clip.audio.shape[0] / clip.sample_rate == pytest.approx(spec.duration, abs=slack)


@pytest.mark.parametrize("name", [*CLIPS, "bytes_mp4", "bytes_mkv_late"])
def test_media_matrix(clips, name, record_property, onset_errors):
    spec = clips[name]
    clip = load_media(spec.source, fps=2.0, sample_rate=16000)
    if spec.container in ("png", "jpg"):
        assert clip.frames is not None and clip.frames.shape[0] == 1
        assert clip.audio is None
        assert clip.duration == pytest.approx(0.5)
        got = nearest_colour(clip.frames[0].double().mean(dim=(1, 2)).tolist(), spec.colours)
        assert got == 0
        return
    if spec.has_video:
        _check_frames(spec, clip)
        # ceil(video_end * fps) frames; the last source frame lasts about one nominal frame.
        video_end = spec.frame_times[-1] + 1 / spec.fps
        assert clip.frames.shape[0] == math.ceil(video_end * 2 - 1e-6)
    else:
        assert clip.frames is None and clip.frame_times.numel() == 0
    if spec.has_audio:
        _check_audio(name, spec, clip, onset_errors, record_property)
    else:
        assert clip.audio is None
    assert clip.duration == pytest.approx(spec.duration, abs=0.03 if spec.container != "aac" else 0.07)


def test_late_audio_is_padded_with_silence_at_the_front(clips):
    spec = clips["mp4_audio_0.5s_late"]
    clip = load_media(spec.source)
    assert clip.audio is not None
    # 0.5 s of padding, then the stream; the clip clock still starts at the first video frame.
    assert clip.audio[:8000].abs().max().item() < 1e-3
    assert clip.source_times[0].item() == pytest.approx(0.24)


def test_resampling_keeps_time(clips):
    spec = clips["mkv_h264_pcm"]
    for rate in (8000, 22050, 48000):
        clip = load_media(spec.source, sample_rate=rate)
        assert clip.sample_rate == rate
        assert clip.audio.shape[0] == pytest.approx(spec.duration * rate, abs=rate * 0.01)
        assert abs(tone_onset(clip.audio.numpy(), rate) - spec.tone_at) < 0.005


def test_frames_at_other_rates(clips):
    spec = clips["mp4_29.97fps"]
    clip = load_media(spec.source, fps=30000 / 1001)
    # Sampling at the source rate returns every source frame once, in order.
    assert clip.source_times.numpy() == pytest.approx(np.asarray(spec.frame_times), abs=1e-3)
    clip = load_media(spec.source, fps=5.0)
    _check_frames(spec, clip, centre_colour=False)


def test_start_end_cut_moves_the_clock(clips):
    spec = clips["mkv_h264_pcm"]
    clip = load_media(spec.source, start=0.6, end=1.8)
    assert clip.duration == pytest.approx(1.2)
    assert clip.frames.shape[0] == 3  # [0, 0.5), [0.5, 1.0), [1.0, 1.5) start before 1.2 s
    for t in range(3):
        # The last frame's centre (1.85 s) lies past the cut: it shows the last picture before the end.
        centre = min(0.6 + (t + 0.5) / 2, 1.8 - 1e-6)
        assert clip.source_times[t].item() + 0.6 == pytest.approx(spec.frame_showing_at(centre))
    assert clip.audio.shape[0] == round(1.2 * 16000)
    assert tone_onset(clip.audio.numpy(), 16000) == pytest.approx(spec.tone_at - 0.6, abs=0.005)


def test_max_seconds_cuts_with_a_warning(clips):
    spec = clips["mp4_h264_aac"]
    with pytest.warns(UserWarning, match=r"mp4_h264_aac\.mp4: longer than max_seconds=1\.2"):
        clip = load_media(spec.source, max_seconds=1.2)
    assert clip.duration == pytest.approx(1.2)
    assert clip.frames.shape[0] == 3
    assert clip.audio.shape[0] == round(1.2 * 16000)


def test_no_warning_when_within_max_seconds(clips, recwarn):
    load_media(clips["mkv_h264_pcm"].source, max_seconds=10.0)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_streaming_converts_only_kept_frames(clips, monkeypatch):
    """Decoding never converts (let alone holds) the source video at full frame rate."""
    import favor_avsync._frame_sampler as sampler

    calls = []
    real = sampler.rgb
    monkeypatch.setattr(sampler, "rgb", lambda frame: calls.append(1) or real(frame))
    spec = clips["mp4_h264_aac"]  # 50 source frames at 25 fps
    clip = load_media(spec.source, fps=2.0)
    assert clip.frames.shape[0] == 4
    assert len(calls) <= 4 < len(spec.frame_times)


def test_progress_bar(clips, capsys):
    load_media(clips["mkv_h264_pcm"].source, progress=True)
    assert "video" in capsys.readouterr().err


def test_synchronised_end_to_end(clips):
    """Decoded clip -> per-frame colour features and 50 Hz audio energy -> synchroniser: the tone lands in the
    frame that contains its onset, beside that frame's picture."""
    spec = clips["mp4_audio_0.5s_late"]
    clip = load_media(spec.source)
    visual = clip.frames.double().mean(dim=(2, 3))[None, :, None, :].expand(1, -1, 32, -1)  # (1, T, 32, 3)
    hop = clip.sample_rate // 50
    steps = clip.audio.shape[0] // hop
    energy = clip.audio[: steps * hop].double().reshape(steps, hop).pow(2).mean(1)  # (S,) at 50 Hz
    out = TemporalSynchroniser(fps=2.0, audio_rates=(50.0,))(visual.contiguous(), energy[None, :, None])
    loud = out.features[0, :, :, 3] > 0.01  # (T, 32)
    first_frame = int(torch.nonzero(loud.any(1))[0])
    assert first_frame == math.floor(spec.tone_at * 2)
    slot = int(torch.nonzero(loud[first_frame])[0])
    assert first_frame * 0.5 + slot * 0.02 == pytest.approx(spec.tone_at, abs=0.02)


@pytest.mark.slow
def test_long_clip_with_progress(tmp_path, capsys):
    spec = make_test_clip(tmp_path / "long.mp4", duration=90.0, fps=25.0, tone_at=75.0)
    clip = load_media(spec.source)  # over 60 s: progress bar by default
    assert clip.frames.shape[0] == 180
    assert abs(tone_onset(clip.audio.numpy(), 16000) - 75.0) < ONSET_TOLERANCE
    assert "video" in capsys.readouterr().err


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_start_deep_in_the_file_seeks_and_keeps_time(tmp_path, container):
    spec = make_test_clip(
        tmp_path / f"seek.{container}", container=container, duration=6.0, tone_at=3.3, keyframe_interval=10
    )
    clip = load_media(spec.source, start=2.5, end=4.5)
    assert clip.duration == pytest.approx(2.0)
    want = [spec.frame_showing_at(2.5 + (t + 0.5) / 2) for t in range(4)]
    assert (clip.source_times + 2.5).tolist() == pytest.approx(want, abs=1e-3)
    for t in range(4):
        got = nearest_colour(clip.frames[t].double().mean(dim=(1, 2)).tolist(), spec.colours)
        assert got == spec.colour_index_at(want[t])
    assert clip.audio.shape[0] == 32000
    assert tone_onset(clip.audio.numpy(), 16000) == pytest.approx(3.3 - 2.5, abs=0.005)


@pytest.mark.parametrize("container", ["mkv", "mp4"])
@pytest.mark.parametrize("cut", [{"end": 0.9}, {"end": 2.4}, {"max_seconds": 0.9}])
def test_cut_inside_a_long_vfr_frame_keeps_every_frame(tmp_path, container, cut):
    """A variable-frame-rate picture that is still on screen at the cut fills the clip up to the cut: its own
    (container-declared or nominal) duration must not end the video early when the next picture lies past the cut."""
    # Source frames at 0, 0.25, 1.0, 1.5, 1.75, 2.5, ... s: 0.25 s shows until 1.0 s, 1.75 s until 2.5 s.
    spec = make_test_clip(
        tmp_path / f"vfr_gap.{container}",
        container=container,
        vfr=True,
        fps=2.0,
        duration=4.0,
        colour_period=3.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # max_seconds warns about the cut (tested elsewhere)
        clip = load_media(spec.source, fps=10.0, **cut)
    seconds = next(iter(cut.values()))
    assert clip.duration == pytest.approx(seconds)
    assert clip.num_frames == math.ceil(seconds * 10)  # frames whose interval starts before the cut
    want = [spec.frame_showing_at(min((t + 0.5) / 10, seconds - 1e-6)) for t in range(clip.num_frames)]
    assert clip.source_times.tolist() == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize("container", ["mp3", "m4a", "mp4", "webm"])
def test_audio_after_a_seek_equals_the_full_decode(tmp_path, container):
    """A ``start`` deep in the file seeks; the audio there must be what a full decode gives at that time. Lossy
    codecs need the packets before the cut to decode it (MDCT overlap, MP3 bit reservoir, Opus pre-roll), so
    seeking straight to ``start`` decoded the first frames wrongly (the tone of an AAC file came 26 ms late)."""
    spec = make_test_clip(
        tmp_path / f"seek_audio.{container}", container=container, duration=4.0, tone_at=2.5, tone_seconds=1.0
    )
    full = load_media(spec.source).audio
    for start in (1.05, 2.4, 2.5):
        clip = load_media(spec.source, start=start)
        want = full[round(start * 16000) :]
        assert tone_onset(clip.audio.numpy(), 16000) == pytest.approx(spec.tone_at - start, abs=0.002)
        silent = round((spec.tone_at - start - 0.01) * 16000)  # before the tone, the clip is silent
        assert silent <= 0 or clip.audio[:silent].abs().max().item() < 0.02
        if container == "webm":
            # Opus after a seek lands within half a millisecond (its pre-skip is applied only from the start).
            assert abs(clip.audio.shape[0] - want.shape[0]) <= 16
            continue
        assert clip.audio.shape == want.shape
        torch.testing.assert_close(clip.audio, want, rtol=0, atol=1e-3, msg=f"start={start}")


@pytest.mark.parametrize("start", [0.2, 0.65])
def test_start_without_seek_equals_the_full_decode_with_rounded_timestamps(tmp_path, start):
    """WebM stores millisecond timestamps: after Opus's 312-sample pre-skip every packet's timestamp is 0.5 ms off
    its content (13.5 ms rounded to 14). The clock follows the decoded samples while packets are contiguous, so
    cutting at ``start`` keeps the full decode's samples (it was 8 samples late)."""
    spec = make_test_clip(tmp_path / "opus.webm", container="webm", duration=2.0, tone_at=1.1)
    full = load_media(spec.source).audio
    clip = load_media(spec.source, start=start)
    want = full[round(start * 16000) :]
    assert clip.audio.shape == want.shape
    torch.testing.assert_close(clip.audio, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cut", [{"end": 0.5}, {"max_seconds": 0.5}, {"start": 0.1, "end": 0.6}])
def test_cut_before_a_late_stream_starts(tmp_path, cut):
    """A window that ends before one stream starts is not a corrupt file: the late video is black there and the
    late audio silent, as they are before a late start in a longer window (this raised "corrupt or truncated?"
    for the video and returned no audio at all)."""
    late_video = make_test_clip(tmp_path / "late_video.mp4", container="mp4", video_offset=0.7, tone_at=0.2)
    late_audio = make_test_clip(tmp_path / "late_audio.mkv", container="mkv", audio_offset=0.7, tone_at=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # max_seconds warns about the cut (tested elsewhere)
        video_clip = load_media(late_video.source, **cut)
        audio_clip = load_media(late_audio.source, **cut)
    for clip in (video_clip, audio_clip):
        assert clip.duration == pytest.approx(0.5)
        assert clip.num_frames == 1  # [0, 0.5)
        assert clip.audio is not None and clip.audio.shape == (8000,)
    assert video_clip.frames.max().item() == 0 and math.isnan(video_clip.source_times[0].item())
    assert video_clip.frames.shape[1:] == (3, 48, 64)
    start = cut.get("start", 0.0)
    assert tone_onset(video_clip.audio.numpy(), 16000) == pytest.approx(0.2 - start, abs=0.005)
    assert audio_clip.audio.abs().max().item() == 0.0
    assert audio_clip.source_times[0].item() + start == pytest.approx(
        late_audio.frame_showing_at(start + 0.25), abs=1e-3
    )


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_gap_in_audio_timestamps_keeps_time_when_resampling(tmp_path, sample_rate):
    """A stream with no packets for [1.0, 1.5) s is filled with silence; what follows stays on the clock. The
    resampler holds a few samples back, so the silence must go after them (it went before and the rest of the
    audio landed 1 ms late)."""
    from fractions import Fraction

    import av

    path = tmp_path / f"gap_{sample_rate}.mkv"
    n = 3 * sample_rate
    t = np.arange(n) / sample_rate
    signal = np.where((t >= 2.0) & (t < 2.2), 0.5 * np.sin(2 * np.pi * 1000 * (t - 2.0)), 0.0)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate)
        stream.layout = "mono"
        stream.codec_context.time_base = Fraction(1, sample_rate)
        chunk = sample_rate // 50
        for s in range(0, n, chunk):
            if sample_rate <= s < 1.5 * sample_rate:
                continue  # the gap
            data = np.round(signal[s : s + chunk] * 32767).astype(np.int16)[None]
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sample_rate, s, Fraction(1, sample_rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    clip = load_media(path)
    assert clip.audio.shape == (48000,)
    assert clip.audio[16000:24000].abs().max().item() == 0.0  # the gap is silent
    assert tone_onset(clip.audio.numpy(), 16000) == pytest.approx(2.0, abs=2e-4)


@pytest.mark.parametrize("start", [0.09, 0.47, 0.57])
def test_source_frame_exactly_at_a_sampling_instant_is_shown(tmp_path, start):
    """Frame t shows the source frame at or before ``start + (t + 0.5) / fps``. With 50 fps source frames and a
    start of 0.09 s, instants such as 0.34 s hit a source frame exactly; float rounding of the sum (0.3399...)
    used to pick the frame before it."""
    spec = make_test_clip(
        tmp_path / "fifty.mkv", container="mkv", fps=50.0, duration=4.0, colour_period=0.14, audio=False
    )
    clip = load_media(spec.source, start=start, end=start + 3.0)
    assert clip.num_frames == 6
    for t in range(clip.num_frames):
        shown = spec.frame_showing_at(start + (t + 0.5) / 2)
        assert clip.source_times[t].item() + start == pytest.approx(shown, abs=1e-6), f"frame {t}"
        got = nearest_colour(clip.frames[t].double().mean(dim=(1, 2)).tolist(), spec.colours)
        assert got == spec.colour_index_at(shown), f"frame {t}"
