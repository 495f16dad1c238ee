"""Image scores of reconstructions: SSIM/PSNR as the library computes them, identifiability and matching."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from attacks.evaluation.images import (identified, match, mean_interval, nearest, psnr, quality, residual_correlation,
                                       share_interval, ssim)


@pytest.fixture
def volumes() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 16, 20, 16)).astype(np.float32)


def test_ssim_and_psnr_agree_with_the_library_and_the_closed_form(volumes):
    truth, noisy = volumes[0], volumes[0] + 0.3 * volumes[1]
    data_range = float(truth.max() - truth.min())
    assert ssim(truth, truth) == pytest.approx(1.0)
    assert ssim(truth, noisy) == pytest.approx(
        structural_similarity(truth.astype(np.float64), noisy.astype(np.float64), data_range=data_range))
    mse = float(((truth.astype(np.float64) - noisy) ** 2).mean())
    assert psnr(truth, noisy) == pytest.approx(10 * np.log10(data_range ** 2 / mse), rel=1e-6)
    assert ssim(truth, truth + 0.1 * volumes[1]) > ssim(truth, noisy) > ssim(truth, volumes[2])


def test_match_recovers_a_shuffled_batch_and_identified_names_the_nearest(volumes):
    truths = volumes[:4]
    order = np.array([2, 0, 3, 1])
    images = truths[order] + 0.05 * volumes[4]
    np.testing.assert_array_equal(match(images, truths), order)
    # each image must name its own subject: images[0] is subject 2's scan; volumes[5] is nobody's in the batch
    hits = identified(np.stack([images[0], images[0], volumes[5]]), volumes, np.array([2, 0, 1]))
    assert hits.tolist() == [True, False, False]
    assert nearest(volumes[[5, 1]], volumes, chunk=4).tolist() == [5, 1]  # across chunk boundaries


def test_a_batch_collapsed_onto_one_subject_identifies_one_not_all(volumes):
    truths = volumes[:3]
    collapsed = np.stack([truths[0] + 0.01 * volumes[4]] * 3)
    rows = quality(collapsed, truths, volumes.mean(axis=0), volumes, np.arange(3))
    assert sum(q.identified for q in rows) == 1


def test_quality_reports_the_prior_beside_the_reconstruction_and_chance(volumes):
    prior = volumes.mean(axis=0)
    rows = quality(volumes[:1] + 0.01, volumes[:1], prior, volumes, np.array([0]))
    (q,) = rows
    assert q.ssim > 0.98 and q.ssim_prior < 0.6 and q.identified
    assert q.chance == pytest.approx(1 / 6)
    # the prior names whoever is nearest to it; that subject would count as identified without any attack
    nearest_to_prior = int(((volumes - prior) ** 2).mean(axis=(1, 2, 3)).argmin())
    assert quality(volumes[[nearest_to_prior]], volumes[[nearest_to_prior]], prior, volumes,
                   np.array([nearest_to_prior]))[0].identified_prior
    assert q.row()["ssim_gain"] == pytest.approx(q.ssim - q.ssim_prior)


def test_the_intervals_cover_the_truth_as_often_as_they_say():
    rng = np.random.default_rng(1)
    share, mean = 0.3, 0.05
    hits = [share_interval(rng.random(8) < share) for _ in range(2000)]
    gains = [mean_interval(rng.normal(mean, 0.1, size=4)) for _ in range(2000)]
    assert np.mean([lo <= share <= hi for _, lo, hi in hits]) >= 0.94  # Clopper-Pearson: at least 95 %
    assert abs(np.mean([lo <= mean <= hi for _, lo, hi in gains]) - 0.95) < 0.015
    assert share_interval(np.ones(4, bool))[1] < 0.5  # 4 of 4 is not certainty


def test_the_residual_correlations_are_the_plain_ones_candidate_by_candidate(volumes):
    prior = volumes[5] * 0.2
    images = np.stack([volumes[1] * 0.3 + prior * 0.7, volumes[4] + 0.1 * volumes[0]])  # a faint move towards subject 1
    rows = quality(images, volumes[[1, 3]], prior, volumes, np.array([1, 3]))  # image 0 is matched to 1, image 1 to 3
    for image, row, own in zip(images, rows, (1, 3)):
        plain = [residual_correlation(volumes[k], image, prior) for k in range(len(volumes))]
        assert row.residual_corr == pytest.approx(plain[own], abs=1e-9)
        assert row.residual_corr_others == pytest.approx((sum(plain) - plain[own]) / (len(plain) - 1), abs=1e-9)
        assert row.residual_rank == sum(c >= plain[own] for c in plain)
    assert rows[0].residual_rank == 1 and rows[0].row()["identified_corr"] == 1.0  # the faint move names subject 1
    assert residual_correlation(volumes[0], prior, prior) == 0.0  # the prior itself moved nowhere...
    (still,) = quality(prior[None], volumes[:1], prior, volumes, np.array([0]))
    assert still.residual_rank == len(volumes) and still.row()["identified_corr"] == 0.0  # ...and names nobody


@pytest.mark.parametrize("batch", [1, 4])
def test_reconstructions_that_carry_nothing_are_identified_at_no_more_than_chance(batch):
    """Random images matched to a batch of true scans: both identified shares stay within chance (the batch's
    share of the candidates), by simulation over 400 draws."""
    rng = np.random.default_rng(1)
    candidates = rng.normal(size=(40, 8, 8, 8))
    prior = candidates.mean(0)
    hits, corr_hits, chance = [], [], None
    for _ in range(400 // batch):
        sources = rng.choice(40, size=batch, replace=False)
        images = prior + 0.1 * rng.normal(size=(batch, 8, 8, 8))
        rows = quality(images, candidates[sources], prior, candidates, sources)
        hits += [r.identified for r in rows]
        corr_hits += [r.residual_rank == 1 for r in rows]
        chance = rows[0].chance
    assert chance == pytest.approx(batch / 40)
    if batch > 1:  # against one over the candidates, a batch's random images would look identified by correlation
        assert np.mean(corr_hits) > 1 / 40 + 3 * np.sqrt(1 / 40 * (1 - 1 / 40) / len(hits))
    for share in (np.mean(hits), np.mean(corr_hits)):
        assert share <= chance + 3 * np.sqrt(chance * (1 - chance) / len(hits))
