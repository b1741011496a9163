"""Losses against hand-computed cases: InfoNCE, symmetric InfoNCE, hard negatives, Matryoshka, COSENT, mICL."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from embedding.losses import (
    CoSENTLoss,
    InfoNCELoss,
    MatryoshkaLoss,
    MICLLoss,
    TemperatureBank,
    cosent_loss,
    info_nce_loss,
)

Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def test_info_nce_matches_hand_computed_2x2():
    # temperature 0.5 -> scale 2. logits = 2 * Q @ T.T = [[2.0, 1.2], [0.0, 1.6]]
    # row 0: -log(e^2 / (e^2 + e^1.2)) = log(1 + e^-0.8); row 1: -log(e^1.6 / (e^0 + e^1.6)) = log(1 + e^-1.6)
    expected = (math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-1.6))) / 2
    got = info_nce_loss(Q, T, 0.5, symmetric=False)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_symmetric_is_the_mean_of_both_directions():
    # reverse direction: logits.T = [[2.0, 0.0], [1.2, 1.6]]
    # row 0: log(1 + e^-2); row 1: -log(e^1.6 / (e^1.2 + e^1.6)) = log(1 + e^-0.4)
    forward = (math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-1.6))) / 2
    backward = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-0.4))) / 2
    assert info_nce_loss(Q, T, 0.5).item() == pytest.approx((forward + backward) / 2, abs=1e-6)
    assert info_nce_loss(T, Q, 0.5, symmetric=False).item() == pytest.approx(backward, abs=1e-6)


def test_hard_negatives_raise_the_loss_and_padding_negatives_are_ignored():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    t = F.normalize(q + 0.3 * torch.randn(4, 8, generator=g), dim=1)
    hard = F.normalize(q.unsqueeze(1) + 0.2 * torch.randn(4, 3, 8, generator=g), dim=2)  # (B, N, D) near queries
    base = info_nce_loss(q, t, 0.1)
    assert info_nce_loss(q, t, 0.1, hard) > base + 0.1
    masked = info_nce_loss(q, t, 0.1, hard, torch.zeros(4, 3, dtype=torch.bool))
    assert masked.item() == pytest.approx(base.item(), abs=1e-6)


def test_temperature_bank_is_per_source_clamped_and_learnable():
    bank = TemperatureBank(["i2i", "q2i"], init=0.05, min_temp=0.01, max_temp=1.0)
    loss_fn = InfoNCELoss(bank)
    loss_fn(Q, T, "i2i").backward()
    assert bank.log_temps["i2i"].grad is not None and bank.log_temps["i2i"].grad.abs() > 0
    assert bank.log_temps["q2i"].grad is None
    with torch.no_grad():
        bank.log_temps["q2i"].fill_(math.log(1e-5))
    assert bank("q2i").item() == pytest.approx(0.01)
    with pytest.raises(KeyError, match="unknown source"):
        bank("seq2item")


def test_matryoshka_is_the_weighted_sum_of_its_parts():
    g = torch.Generator().manual_seed(1)
    q, t = F.normalize(torch.randn(5, 16, generator=g), dim=1), F.normalize(torch.randn(5, 16, generator=g), dim=1)
    bank = TemperatureBank(["s"], init=0.1)
    inner = InfoNCELoss(bank)
    loss = MatryoshkaLoss(inner, dims=(4, 8, 16), weights=(1.0, 0.5, 2.0))(q, t, "s")
    parts = [inner(F.normalize(q[:, :d], dim=1), F.normalize(t[:, :d], dim=1), "s") for d in (4, 8, 16)]
    assert loss.item() == pytest.approx((parts[0] + 0.5 * parts[1] + 2.0 * parts[2]).item(), abs=1e-6)
    as_dicts = MatryoshkaLoss(inner, dims=(4, 8, 16))(
        {d: F.normalize(q[:, :d], dim=1) for d in (4, 8, 16)},
        {d: F.normalize(t[:, :d], dim=1) for d in (4, 8, 16)},
        "s",
    )
    assert as_dicts.item() == pytest.approx(sum(p.item() for p in parts), abs=1e-6)


def test_cosent_matches_hand_computed_case():
    # cos = [1.0, 0.6, 0.0] (q = e1; t = e1, (0.6, 0.8), e2), scores [1.0, 0.5, 0.2], temperature 0.5 -> scale 2
    # ordered pairs (i better than j): (0,1), (0,2), (1,2); terms exp(2 (cos_j - cos_i)) = e^-0.8, e^-2, e^-1.2
    q = torch.tensor([[1.0, 0.0]] * 3)
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    scores = torch.tensor([1.0, 0.5, 0.2])
    expected = math.log(1 + math.exp(-0.8) + math.exp(-2.0) + math.exp(-1.2))
    assert cosent_loss(q, t, scores, 0.5).item() == pytest.approx(expected, abs=1e-6)
    # equal scores form no pair: loss log(1) = 0
    assert CoSENTLoss(0.5)(q, t, torch.ones(3)).item() == pytest.approx(0.0, abs=1e-7)
    # a wrongly ordered similarity costs more
    assert cosent_loss(q, t, scores.flip(0), 0.5) > cosent_loss(q, t, scores, 0.5)


def test_micl_uses_only_pairs_with_the_modality():
    g = torch.Generator().manual_seed(2)
    vq, vt, tq, tt = (F.normalize(torch.randn(4, 8, generator=g), dim=1) for _ in range(4))
    has_v = torch.tensor([True, True, True, False])
    out_q = SimpleNamespace(visual=vq, text=tq, has_vision=has_v, has_text=torch.ones(4, dtype=torch.bool))
    out_t = SimpleNamespace(visual=vt, text=tt, has_vision=torch.ones(4, dtype=torch.bool), has_text=has_v.flip(0))
    loss_fn = MICLLoss(TemperatureBank(["visual", "text"], init=0.1))
    expected = info_nce_loss(vq[:3], vt[:3], 0.1) + info_nce_loss(tq[1:], tt[1:], 0.1)
    assert loss_fn(out_q, out_t).item() == pytest.approx(expected.item(), abs=1e-5)
    one = SimpleNamespace(**{**vars(out_q), "has_vision": torch.tensor([True, False, False, False])})
    assert loss_fn(one, out_t).item() == pytest.approx(info_nce_loss(tq[1:], tt[1:], 0.1).item(), abs=1e-5)


def test_micl_audio_term_only_with_its_weight_and_on_pairs_with_audio():
    g = torch.Generator().manual_seed(3)
    vq, vt, tq, tt = (F.normalize(torch.randn(4, 8, generator=g), dim=1) for _ in range(4))
    aq, at = (F.normalize(torch.randn(4, 6, generator=g), dim=1) for _ in range(2))
    every = torch.ones(4, dtype=torch.bool)
    has_a = torch.tensor([True, False, True, True])
    out_q = SimpleNamespace(visual=vq, text=tq, audio=aq, has_vision=every, has_text=every, has_audio=has_a)
    out_t = SimpleNamespace(visual=vt, text=tt, audio=at, has_vision=every, has_text=every, has_audio=every)
    base = info_nce_loss(vq, vt, 0.1) + info_nce_loss(tq, tt, 0.1)
    # weight 0 (the default): the audio rows change nothing
    assert MICLLoss(TemperatureBank(["visual", "text"], init=0.1))(out_q, out_t).item() == pytest.approx(
        base.item(), abs=1e-5
    )
    # weight 2: twice InfoNCE over the pairs where both sides have audio (rows 0, 2, 3), at the 'audio' temperature
    bank = TemperatureBank(["visual", "text", "audio"], init=0.1)
    with torch.no_grad():
        bank.log_temps["audio"].fill_(math.log(0.2))
    expected = base + 2.0 * info_nce_loss(aq[has_a], at[has_a], 0.2)
    assert MICLLoss(bank, audio_weight=2.0)(out_q, out_t).item() == pytest.approx(expected.item(), abs=1e-5)
    # outputs without an audio embedding (the concatenation model) skip the term
    no_audio = SimpleNamespace(**{**vars(out_q), "audio": None})
    assert MICLLoss(bank, audio_weight=2.0)(no_audio, out_t).item() == pytest.approx(base.item(), abs=1e-5)
    with pytest.raises(ValueError, match="no source"):
        MICLLoss(TemperatureBank(["visual", "text"]), audio_weight=1.0)
