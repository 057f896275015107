"""FavorProcessor: prompt + placeholder expansion, labels, padding, media normalisation, errors, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import (
    AutoModel,
    AutoProcessor,
    BlipImageProcessorPil,
    ProcessorMixin,
    WhisperFeatureExtractor,
)

from favor_llm import AVLayout, FavorModel, FavorProcessor
from favor_llm.testing import tiny_model_and_processor, tiny_tokenizer


def _av(processor, ids):
    return int((ids == processor.av_token_id).sum())


def test_template_and_expansion(tiny, media):
    _, processor = tiny
    inputs = processor(text="What happens?", media={"video": media["video"], "audio": media["audio"]})
    ids = inputs["input_ids"][0]
    # 7 s of audio at 2 fps -> 14 frames -> windows of 4 -> 4 windows x 4 queries
    assert _av(processor, ids) == 4 * 4
    text = processor.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<s>USER: <Img><AV>") and text.endswith("</Img> What happens?\nASSISTANT:")
    assert ids[0] == processor.tokenizer.bos_token_id
    assert inputs["pixel_lengths"].tolist() == [6] and inputs["frame_lengths"].tolist() == [6]
    assert inputs["audio_lengths"].tolist() == [7 * 16000]
    # 7 s in windows of 5 s: two windows of Whisper features
    assert tuple(inputs["input_features"].shape) == (1, 2, 80, 500)


def test_text_only_uses_the_text_template(tiny):
    _, processor = tiny
    inputs = processor(text="Hello?")
    text = processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False)
    assert text == "<s>USER: Hello?\nASSISTANT:"
    assert "pixel_values" not in inputs and "input_features" not in inputs


def test_labels_cover_only_the_answer(tiny, media):
    _, processor = tiny
    inputs = processor(
        text=["Q one?", "A longer second question?"],
        media=[media["video"], None],
        answers=["red", "two people"],
    )
    tok = processor.tokenizer
    for b, answer in enumerate(["red", "two people"]):
        labels = inputs["labels"][b]
        kept = labels[labels != -100].tolist()
        assert kept == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        # the answer is the tail of the (left-padded) row and equals the input ids there
        n = len(kept)
        assert inputs["input_ids"][b, -n:].tolist() == kept
        assert (labels[:-n] == -100).all()
    # left padding: the shorter row starts with pad tokens and a zero mask
    assert inputs["attention_mask"][0, 0] == 0 or inputs["attention_mask"][1, 0] == 0


def test_right_padding(tiny):
    _, processor = tiny
    inputs = processor(text=["a", "a much longer question here"], padding_side="right")
    assert inputs["attention_mask"][0, -1] == 0 and inputs["attention_mask"][0, 0] == 1


def test_image_and_audio_frame_counts(tiny, media):
    _, processor = tiny
    inputs = processor(
        text=["x", "y", "z"],
        media=[
            {"image": media["image"]},
            {"image": media["image"], "audio": media["short_audio"]},
            media["short_audio"],
        ],
    )
    # image alone: image_repeat (8 in the tiny config) frames; with 2 s of audio: the audio's 4 frames
    assert inputs["pixel_lengths"].tolist() == [1, 1, 0]
    assert inputs["frame_lengths"].tolist() == [8, 4, 0]
    counts = [_av(processor, row) for row in inputs["input_ids"]]
    assert counts == [2 * 4, 1 * 4, 1 * 4]


def test_array_forms_are_equivalent(tiny, media):
    _, processor = tiny
    video = media["video"]
    a = processor(text="q", media={"video": video})
    b = processor(text="q", media=video.permute(0, 2, 3, 1).numpy())  # (T, H, W, 3) numpy
    c = processor(text="q", media=video.float() / 255.0)  # float frames in [0, 1]
    for other in (b, c):
        assert torch.equal(a["input_ids"], other["input_ids"])
        assert torch.allclose(a["pixel_values"], other["pixel_values"], atol=1e-6)


def test_integer_pcm_audio_is_scaled_like_float_audio(tiny, media):
    """int16 PCM (e.g. from scipy.io.wavfile / a WAV reader) is the float waveform x 32768: same features."""
    _, processor = tiny
    pcm = (media["short_audio"].clamp(-1, 1) * 32767).round().to(torch.int16)
    as_float = processor(text="q", media=pcm.float() / 32768)
    for item in (pcm, pcm.numpy(), {"audio": pcm.numpy(), "sample_rate": 16000}):
        as_int = processor(text="q", media=item)
        torch.testing.assert_close(as_int["input_features"], as_float["input_features"])
    with pytest.raises(ValueError, match="audio"):
        processor(text="q", media={"audio": np.zeros(16000, np.uint16)})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text": "what is <AV> here?", "media": np.zeros(16000, np.float32)}, "placeholder"),
        (
            {"text": "no placeholder", "media": np.zeros(16000, np.float32), "apply_template": False},
            "placeholder",
        ),
        (
            {"text": "<AV> twice <AV>", "media": np.zeros(16000, np.float32), "apply_template": False},
            "placeholder",
        ),
        ({"text": "<AV> but no media", "apply_template": False}, "placeholder"),
        ({"text": ["a", "b"], "media": [None]}, "one item per question"),
        ({"text": ["a", "b"], "answers": ["x"]}, "answers"),
        ({"text": "a", "media": {"audio": np.zeros(8000), "sample_rate": 8000}}, "sample_rate"),
        ({"text": "a", "media": np.zeros((2, 3, 4, 5, 6))}, "array"),
        ({"text": "a", "media": {"vidéo": np.zeros(3)}}, "unknown keys"),
        ({"text": "a", "media": 3.5}, "expected a path"),
        ({"text": "a", "media": {"audio": np.full(16000, np.nan, np.float32)}}, "NaN"),
        ({"text": None}, "text"),
    ],
)
def test_bad_inputs(tiny, kwargs, match):
    _, processor = tiny
    with pytest.raises(ValueError, match=match):
        processor(**kwargs)


def test_media_longer_than_the_maximum(tiny):
    _, processor = tiny
    limit = processor.layout.max_media_seconds
    too_long = np.zeros(int((limit + 1) * 16000), np.float32)
    with pytest.raises(ValueError, match="max_media_seconds"):
        processor(text="q", media=too_long)
    frames = np.zeros((int((limit + 1) * processor.layout.fps), 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="max_media_seconds"):
        processor(text="q", media=frames)


def test_save_and_load(tiny, media, tmp_path):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    loaded = FavorProcessor.from_pretrained(tmp_path)
    args = {
        "text": ["q?", "r"],
        "media": [{"video": media["video"], "audio": media["audio"]}, None],
        "answers": ["a", "b"],
    }
    _assert_same_outputs(processor(**args), loaded(**args))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"processor_config\.json"):
        FavorProcessor.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        FavorProcessor.from_pretrained(tmp_path / "missing")


def _assert_same_outputs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A real 3 s mp4 (frames changing colour, a tone) written with PyAV."""
    from favor_avsync.testing import make_test_clip

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_test_clip(path, duration=3.0, fps=10.0, size=(40, 32), tone_at=1.0)
    return path


def test_is_a_processor_mixin_and_auto_processor_loads_it(tiny, clip_path, tmp_path):
    _, processor = tiny
    assert isinstance(processor, ProcessorMixin)
    assert FavorProcessor.get_attributes() == ["tokenizer", "image_processor", "feature_extractor"]
    assert processor.feature_extractor is processor.feature_extractors[0]
    processor.save_pretrained(tmp_path)
    # transformers' layout: tokenizer at the top, sub-processors nested in processor_config.json, the second
    # tokenizer in its own folder; nothing of the earlier layout
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "FavorProcessor"
    assert saved["image_processor"]["image_processor_type"] == "BlipImageProcessor"
    assert saved["feature_extractor"]["feature_extractor_type"] == "WhisperFeatureExtractor"
    assert saved["extra_feature_extractors"] == [] and saved["has_qformer_tokenizer"]
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["processor_class"] == "FavorProcessor"
    assert (tmp_path / "qformer_tokenizer" / "tokenizer.json").is_file()
    assert (
        not (tmp_path / "favor_processor_config.json").exists()
        and not (tmp_path / "image_processor").exists()
    )

    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is FavorProcessor
    assert type(loaded.image_processor) is type(processor.image_processor)
    assert loaded.layout == processor.layout and loaded.av_token_id == processor.av_token_id
    assert loaded.qformer_max_length == processor.qformer_max_length
    assert loaded.qformer_tokenizer is not None
    args = {"text": ["What happens?", "Hello?"], "media": [str(clip_path), None], "answers": ["red", "hi"]}
    a, b = processor(**args), loaded(**args)
    assert {"input_ids", "labels", "pixel_values", "input_features", "qformer_input_ids"} <= a.keys()
    assert a["pixel_values"].shape[1] == 6 and a["audio_lengths"].tolist() == [3 * 16000, 0]
    _assert_same_outputs(a, b)
    # the decoding side too
    assert loaded.batch_decode(a["input_ids"]) == processor.batch_decode(a["input_ids"])
    # __init__ arguments given to from_pretrained override the saved ones
    assert FavorProcessor.from_pretrained(tmp_path, qformer_max_length=16).qformer_max_length == 16


def test_a_media_clip_at_another_frame_rate_is_refused(tiny, clip_path):
    """A MediaClip decoded at 1 fps given to a 2 fps processor would play its frames twice as fast as its audio:
    refused, naming the rates (as a waveform at another sample rate is)."""
    from favor_avsync import load_media

    _, processor = tiny
    assert (
        processor(text="q", media=load_media(clip_path, fps=processor.layout.fps))["pixel_values"].shape[1]
        == 6
    )
    with pytest.raises(ValueError, match=r"media\[0\].*fps"):
        processor(text="q", media=load_media(clip_path, fps=1.0))
    audio_only = load_media(clip_path, fps=1.0)
    audio_only.frames = None  # no frames: the frame rate does not matter
    assert processor(text="q", media=audio_only)["audio_lengths"].tolist() == [3 * 16000]


def _two_encoder_processor(chat_template=None):
    """A processor with two audio feature extractors of different settings and no Q-Former tokenizer."""
    layout = AVLayout(
        audio_feature_rates=[50.0, 50.0], window_size=4, window_stride=4, num_queries=4, repeat_image=8
    )
    extractors = [
        WhisperFeatureExtractor(feature_size=80, chunk_length=5),
        WhisperFeatureExtractor(feature_size=64, chunk_length=3),
    ]
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    return FavorProcessor(
        tiny_tokenizer(),
        image_processor,
        extractors,
        layout=layout,
        prompt_template="Q: {media} {question} A:",
        chat_template=chat_template,
    )


def test_every_feature_extractor_and_the_chat_template_survive_the_round_trip(media, tmp_path):
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    processor = _two_encoder_processor(chat_template=template)
    processor.save_pretrained(tmp_path)
    assert not (tmp_path / "qformer_tokenizer").exists()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, FavorProcessor) and loaded.qformer_tokenizer is None
    assert [fe.to_dict() for fe in loaded.feature_extractors] == [
        fe.to_dict() for fe in processor.feature_extractors
    ]
    assert loaded.prompt_template == "Q: {media} {question} A:" and loaded.chat_template == template
    args = {"text": ["a", "b"], "media": [{"video": media["video"], "audio": media["audio"]}, None]}
    a, b = processor(**args), loaded(**args)
    # 7 s of audio: two 5 s windows of 80 mels for the first encoder, three 3 s windows of 64 for the second
    assert tuple(a["input_features"].shape[1:3]) == (2, 80) and tuple(a["input_features_1"].shape[1:3]) == (
        3,
        64,
    )
    _assert_same_outputs(a, b)
    messages = [{"role": "user", "content": "hi"}]
    assert loaded.apply_chat_template(messages, tokenize=False) == "user: hi\n"


def test_bad_construction_and_bad_saved_files_are_clear_errors(tmp_path):
    tok = tiny_tokenizer()
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=5)
    with pytest.raises(ValueError, match="argument image_processor"):
        FavorProcessor(tok, "blip", fe)
    with pytest.raises(ValueError, match="feature_extractors: expected at least one"):
        FavorProcessor(tok, image_processor, [])
    with pytest.raises(ValueError, match="layout: expected an AVLayout"):
        FavorProcessor(tok, image_processor, fe, layout=[2.0])
    with pytest.raises(ValueError, match="qformer_tokenizer"):
        FavorProcessor(tok, image_processor, fe, qformer_tokenizer="bert-base-uncased")
    with pytest.raises(ValueError, match="one per audio encoder"):
        FavorProcessor(tok, image_processor, [fe, fe])
    processor = _two_encoder_processor()
    processor.save_pretrained(tmp_path)
    config_file = tmp_path / "processor_config.json"
    saved = json.loads(config_file.read_text())
    saved["extra_feature_extractors"] = [{"feature_size": 64}]
    config_file.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"extra_feature_extractors\[0\].*feature_extractor_type"):
        FavorProcessor.from_pretrained(tmp_path)


def test_a_directory_without_processor_config_is_a_clear_error(tiny, tmp_path):
    """Only ``processor_config.json`` directories load (no loader for layouts that never shipped)."""
    _, processor = tiny
    processor.tokenizer.save_pretrained(tmp_path)
    (tmp_path / "favor_processor_config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"has no processor_config\.json"):
        FavorProcessor.from_pretrained(tmp_path)


def test_a_saved_layout_with_the_earlier_field_name_loads():
    """``image_repeat`` (the name before ``repeat_image``, favor_avsync's) in a saved layout is read."""
    layout = AVLayout.from_dict({**AVLayout().to_dict(), "repeat_image": 1} | {"image_repeat": 7})
    assert layout.repeat_image == 1  # the current name wins when both are present
    legacy = AVLayout().to_dict()
    del legacy["repeat_image"]
    assert AVLayout.from_dict({**legacy, "image_repeat": 7}).repeat_image == 7


def test_a_hub_repo_id_loads_from_the_hub_cache(tiny, media, tmp_path, monkeypatch):
    """A repo id goes through transformers' Hub machinery: here a Hub cache laid out as huggingface_hub does
    (offline, so nothing is downloaded), holding the model's config.json as a FAVOR repo does."""
    model, processor = tiny
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--favor--tiny"
    processor.save_pretrained(repo / "snapshots" / commit)
    model.config.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = AutoProcessor.from_pretrained("favor/tiny", cache_dir=tmp_path / "cache")
    assert isinstance(loaded, FavorProcessor) and loaded.qformer_tokenizer is not None
    args = {"text": "q?", "media": {"video": media["video"], "audio": media["audio"]}, "answers": "a"}
    _assert_same_outputs(processor(**args), loaded(**args))


def test_push_to_hub_uploads_every_part(tiny, media, tmp_path, monkeypatch):
    """``push_to_hub`` (transformers' PushToHubMixin around `save_pretrained`) uploads the Q-Former tokenizer too.
    The Hub API is replaced by one that writes the commit's files into a folder, which then loads."""
    import types

    import transformers.utils.hub as hub

    _, processor = tiny
    remote = tmp_path / "remote"

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return types.SimpleNamespace(repo_id=repo_id)

        def create_commit(self, repo_id, operations, **kwargs):
            for op in operations:
                target = remote / op.path_in_repo
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(Path(op.path_or_fileobj).read_bytes())

    card = types.SimpleNamespace(save=lambda path: Path(path).write_text("card"))
    monkeypatch.setattr(hub, "hf_api", FakeApi)
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *a, **k: card)
    processor.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="me/favor-tiny")
    assert (remote / "processor_config.json").is_file() and (
        remote / "qformer_tokenizer" / "tokenizer.json"
    ).is_file()
    loaded = AutoProcessor.from_pretrained(remote)
    args = {"text": "q?", "media": {"video": media["video"], "audio": media["audio"]}}
    _assert_same_outputs(processor(**args), loaded(**args))


def test_a_saved_model_directory_loads_with_the_auto_classes(media, tmp_path):
    """Model (delta checkpoint) and processor in one directory: AutoModel + AutoProcessor generate the same."""
    model, processor = tiny_model_and_processor(seed=5)
    model.save_frozen_components(tmp_path / "frozen")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    auto_model = AutoModel.from_pretrained(tmp_path / "model").eval()
    auto_processor = AutoProcessor.from_pretrained(tmp_path / "model")
    assert isinstance(auto_model, FavorModel) and isinstance(auto_processor, FavorProcessor)
    question, item = ["What happens?", "Sound?"], [{"video": media["video"], "audio": media["audio"]}, None]
    inputs, auto_inputs = processor(text=question, media=item), auto_processor(text=question, media=item)
    _assert_same_outputs(inputs, auto_inputs)
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        auto_generated = auto_model.generate(**auto_inputs, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, auto_generated)
    assert auto_processor.decode_answers(auto_generated, auto_inputs) == processor.decode_answers(
        generated, inputs
    )


@given(frames=st.integers(0, 13), audio_tenths=st.integers(0, 80), image=st.booleans())
def test_placeholder_count_matches_model_windows(tiny, frames, audio_tenths, image):
    """The processor's expansion and the model's windows agree for any mix of frame count and audio length."""
    model, processor = tiny
    item: dict = {}
    if frames:
        g = torch.Generator().manual_seed(frames)
        pixels = torch.randint(0, 256, (frames, 3, 8, 8), dtype=torch.uint8, generator=g)
        item["image" if image else "video"] = pixels[0] if image else pixels
    if audio_tenths:
        item["audio"] = torch.zeros(audio_tenths * 1600)
    if not item:
        return
    inputs = processor(text="q", media=item)
    batch = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        tokens, window_mask, _ = model.encode_media(**batch)
    assert _av(processor, inputs["input_ids"]) == int(window_mask.sum()) * tokens.shape[2]


def test_long_questions_are_truncated_for_the_vision_qformer(tiny, media):
    model, processor = tiny
    question = "what colour is the screen " * 60
    inputs = processor(text=question, media=media["video"])
    assert inputs["qformer_input_ids"].shape[1] == model.config.vision_qformer_config.max_position_embeddings
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_collate_is_the_processor_on_a_list_of_examples(tiny, media):
    _, processor = tiny
    examples = [{"text": "q?", "media": media["video"], "answer": "red"}, {"text": "r", "answer": "blue"}]
    a = processor.collate(examples)
    b = processor(text=["q?", "r"], media=[media["video"], None], answers=["red", "blue"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="answer"):
        processor.collate([{"text": "q", "answer": "x"}, {"text": "r"}])
    with pytest.raises(ValueError, match="examples"):
        processor.collate([])


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_text_inputs_are_the_processor_text_without_media(tiny, media, clip_path, padding_side):
    """`FavorProcessor.text_inputs` (what the feature cache builds batches with) gives `__call__`'s text tensors
    token for token from the AV token counts alone, on a real mp4, arrays, an image and no media."""
    _, processor = tiny
    items = [str(clip_path), media["video"], None, {"image": media["image"], "audio": media["short_audio"]}]
    questions = ["What happens?", "Does </s> end it?", "Text only, a longer question here?", "Which colour?"]
    answers = ["a tone", "no, </s> is text", "yes", "red"]
    counts = [processor.num_av_tokens(processor.load(m, i)) for i, m in enumerate(items)]
    assert counts[2] == 0 and min(counts[:2] + counts[3:]) > 0
    for labelled in (answers, None):
        full = processor(text=questions, media=items, answers=labelled, padding_side=padding_side)
        text = processor.text_inputs(questions, counts, labelled, padding_side=padding_side)
        assert set(text) == {"input_ids", "attention_mask"} | ({"labels"} if labelled else set())
        for key in text:
            assert torch.equal(text[key], full[key]), key
    # one row written out by hand: BOS, the template around the expanded placeholder, answer + EOS labelled
    tok = processor.tokenizer
    before, after = processor.prompt_template.split("{media}")
    expected = [tok.bos_token_id, *tok(before, add_special_tokens=False)["input_ids"]]
    expected += [processor.av_token_id] * 5
    expected += tok(after.format(question="Why?"), add_special_tokens=False)["input_ids"]
    answer = [*tok("because", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    row = processor.text_inputs(["Why?"], [5], ["because"])
    assert row["input_ids"][0].tolist() == expected + answer
    assert row["labels"][0].tolist() == [-100] * len(expected) + answer
    for counts, match in (
        ([3], r"av_tokens: expected one count per question \(2\), got 1"),
        ([3, -1], r"av_tokens\[1\]"),
    ):
        with pytest.raises(ValueError, match=match):
            processor.text_inputs(["a", "b"], counts)
    # a single question (and its count) as `__call__` takes one: not its characters as a batch of questions
    assert torch.equal(processor.text_inputs("Why?", 5)["input_ids"], row["input_ids"][:, : len(expected)])
    with pytest.raises(ValueError, match=r"av_tokens: expected one count per question \(1\), got 5"):
        processor.text_inputs("hello", [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"av_tokens: expected an int or a list of ints, got float"):
        processor.text_inputs(["a"], 2.0)


def test_control_token_text_in_questions_and_answers_stays_text(fresh_tiny, media):
    """Issue 10: "</s>" typed in a question became a real end-of-sequence token, and "<AV>" in a training answer
    became a placeholder (the batch then failed with a message blaming the caller). Both stay text now; questions
    without such text tokenise as before."""
    from favor_llm.prompts import encode_prompt

    model, processor = fresh_tiny
    tokenizer = processor.tokenizer
    inputs = processor(
        text="what does </s> mean?", media=media["video"], answers="it ends <AV> and </s> text"
    )
    ids, labels = inputs["input_ids"][0].tolist(), inputs["labels"][0].tolist()
    answer = [t for t in labels if t != -100]
    assert (
        ids.count(tokenizer.eos_token_id) == 1 and answer[-1] == tokenizer.eos_token_id
    )  # only the appended one
    assert ids.count(processor.av_token_id) == processor.num_av_tokens(processor.load(media["video"], 0))
    text = tokenizer.decode(answer[:-1])
    assert "<AV>" in text and "</s> text" in text
    assert torch.isfinite(model(**inputs).loss)
    question = "what is it?"
    prompt = processor.build_prompt(question, True)
    unescaped = encode_prompt(tokenizer, prompt, processor.av_token, processor.av_token_id, 8)
    assert (
        processor(text=question, media=media["video"])["input_ids"][0].tolist()[-len(unescaped) :][-5:]
        == (unescaped[-5:])
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "  "}, r"text\[0\]: the question is empty"),
        ({"text": "q", "answers": [None]}, r"answers\[0\]: expected a non-empty string, got None"),
        ({"text": "q", "answers": ""}, r"answers\[0\]: expected a non-empty string"),
        ({"text": "q", "answers": 5}, "answers: expected a string or a list of strings, got int"),
    ],
)
def test_empty_or_mistyped_questions_and_answers_are_value_errors(tiny, media, kwargs, message):
    """Issue 10: an empty question was accepted silently, an answer None / 5 gave transformers' "specify either
    text or text_target" or a TypeError; favor_llm.dataset already refuses these in its files."""
    _, processor = tiny
    with pytest.raises(ValueError, match=message):
        processor(media=media["video"], **kwargs)


def test_a_template_holding_control_tokens_refuses_such_text_in_questions(media):
    """Escaping tokenises the question with its template; a template that needs its own "</s>" cannot be escaped,
    so a question typing "</s>" is refused there instead of silently becoming a control token."""
    _, processor = tiny_model_and_processor(seed=0)
    processor.prompt_template = "USER: {media} {question}</s>ASSISTANT:"
    ids = processor(text="plain", media=media["video"])["input_ids"][0].tolist()
    assert ids.count(processor.tokenizer.eos_token_id) == 1  # the template's own </s> is a real token
    with pytest.raises(ValueError, match=r"text\[0\]: contains control-token text \['</s>'\]"):
        processor(text="what is </s>?", media=media["video"])
