"""Preprocessing: tagged text with field dropout, image and audio decoding, bad media counted, collate."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from embedding.config import PreprocessConfig
from embedding.preprocess import (
    HashTokenizer,
    Preprocessor,
    build_text,
    collate_items,
    decode_image,
    log_mel_chunks,
    mel_filterbank,
)

CFG = PreprocessConfig()


def png_bytes(color: tuple[int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


def wav_bytes(seconds: float, rate: int = 8000, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * hz * t) * 12000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def row(**kw) -> dict:
    base = dict(
        title="red car", ocr_text=None, asr_text=None, tags=[], cover_path=None, frame_paths=[], audio_path=None
    )
    return {**base, **kw}


@pytest.fixture()
def media_root(tmp_path):
    (tmp_path / "cover.png").write_bytes(png_bytes((255, 0, 0)))
    (tmp_path / "frame.png").write_bytes(png_bytes((0, 0, 255), size=32))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "short.wav").write_bytes(wav_bytes(3.0))
    (tmp_path / "long.wav").write_bytes(wav_bytes(23.0))
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    return tmp_path


def test_text_fields_are_tagged_in_order_and_empty_fields_skipped():
    r = row(title="Red car", ocr_text="SALE", asr_text="", tags=["cars", "fast"])
    assert build_text(r) == "title: Red car ocr: SALE tags: cars, fast"
    assert build_text(row(title="")) == ""


def test_field_dropout_is_seeded_and_keeps_one_field():
    r = row(title="a", ocr_text="b", asr_text="c", tags=["d"])
    always = [build_text(r, 1.0, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(len(t.split(": ")) == 2 for t in always)  # exactly one "tag: text" survives drop_prob=1
    runs = [[build_text(r, 0.5, g) for _ in range(10)] for g in (torch.Generator().manual_seed(3) for _ in range(2))]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1


def test_image_is_resized_and_normalised():
    x = decode_image(png_bytes((255, 0, 0), size=32), CFG)
    assert x.shape == (3, 64, 64)
    # red = (1, 0, 0) in [0, 1]; (x - 0.5) / 0.5 -> (1, -1, -1)
    assert torch.allclose(x[:, 10, 10], torch.tensor([1.0, -1.0, -1.0]))


def test_mel_filterbank_peaks_at_a_pure_tone():
    fb = mel_filterbank(32, 256, 8000)
    assert fb.shape == (129, 32) and fb.min() >= 0 and fb.max() <= 1
    mel, frames = log_mel_chunks(np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000), 8000, CFG)
    # HTK mel(f) = 2595 log10(1 + f / 700): mel(1000 Hz) = 1000.0, mel(4000 Hz) = 2146.1. 34 points evenly over
    # 0..2146.1 (spacing 65.03); filter j peaks at point j + 1. Nearest: 15 * 65.03 = 975.5 (j = 14), not 1040.5.
    real = frames[0]
    assert int(mel[0, :, :real].mean(dim=1).argmax()) == 14
    assert frames.tolist() == [8000 // 160 + 1]


def test_audio_chunks_short_clip_is_one_chunk_long_clip_is_cut_and_padded():
    short, f_short = log_mel_chunks(np.ones(3 * 8000) * 0.1, 8000, CFG)
    assert short.shape == (1, 32, CFG.chunk_frames) and f_short.tolist() == [151]
    long_, f_long = log_mel_chunks(np.ones(23 * 8000) * 0.1, 8000, CFG)
    assert long_.shape == (3, 32, 501)
    assert f_long.tolist() == [501, 501, 151]  # 10 s, 10 s, 3 s (+ padding)
    resampled, _ = log_mel_chunks(np.ones(16000 * 12) * 0.1, 16000, CFG)
    assert resampled.shape[0] == 2


def test_bad_media_is_counted_not_raised(media_root):
    pre = Preprocessor(CFG, media_root)
    item = pre(
        row(
            cover_path="cover.png",
            frame_paths=["frame.png", "broken.png", "../../etc/passwd", "absent.png"],
            audio_path="broken.wav",
        )
    )
    assert item.frames.shape == (2, 3, 64, 64)
    assert item.audio is None
    assert dict(pre.stats.skipped) == {"corrupt_image": 1, "unsafe_path": 1, "missing": 1, "corrupt_audio": 1}
    nothing = pre(row(title="x", cover_path="/abs.png", audio_path="nope.wav"))
    assert nothing.frames is None and nothing.audio is None and nothing.text == "title: x"


def test_collate_pads_and_masks(media_root):
    pre = Preprocessor(CFG, media_root)
    items = [
        pre(row(cover_path="cover.png", frame_paths=["frame.png"], audio_path="long.wav")),
        pre(row(title="text only")),
        pre(row(title="", audio_path="short.wav")),
    ]
    batch = collate_items(items, HashTokenizer(64), CFG).to("cpu")
    assert batch.frames.shape == (3, 2, 3, 64, 64) and batch.frame_mask.tolist() == [[True, True], [False, False]] + [
        [False, False]
    ]
    assert batch.audio.shape == (3, 3, 32, 501)
    assert batch.audio_chunk_mask.tolist() == [[True] * 3, [False] * 3, [True, False, False]]
    assert batch.audio_frames[2].tolist() == [151, 0, 0]
    assert batch.has_text.tolist() == [True, True, False]
    assert batch.has_vision.tolist() == [True, False, False]
    assert batch.has_audio.tolist() == [True, False, True]
    assert batch.input_ids.shape == batch.attention_mask.shape and batch.attention_mask[2].sum() == 1  # CLS only


def test_hash_tokenizer_is_stable():
    tok = HashTokenizer(1000)
    ids, mask = tok(["Red car!", "red"], max_length=3)
    assert ids[0, 0] == 1 and ids[0, 1] == ids[1, 1]  # case-folded "red" hashes to the same id
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
