"""How close a reconstructed volume is to the subject it came from, and whether it names that subject.

SSIM and PSNR are scikit-image's (n-D, so the 3-D volumes as the model sees them), each also for the
prior (the attacker's mean brain): what a reconstruction gains over the prior is what leaked.
Identifiability follows Yin et al.'s (2021) image-identifiability precision, strictly: a reconstruction
identifies its subject when its nearest candidate scan (the victim's subjects and unseen ones) is that
very subject (the one it is matched to); chance is the share of the candidates that are the batch's true
scans (a batch is matched to its scans by least distance, so an image that names *any* of them tends to
name the one it was matched to: one over the candidates for a single scan), and the prior's own nearest
candidate is reported beside it (the subject who looks most like the mean brain needs no attack).
What the reconstruction moved away from the prior is scored too: the correlation of (reconstruction -
prior) with (truth - prior) is 0 when nothing of the subject was recovered, whatever the SSIM does; its
mean over the other candidates is beside it (a move towards *any* brain correlates with every subject), and
a reconstruction is also *identified by correlation* when no candidate's deviation correlates more with it
than its own subject's: a test that sees a faint move towards the subject which the nearest scan misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["Quality", "identified", "match", "mean_interval", "psnr", "quality", "residual_correlation",
           "share_interval", "ssim"]


def ssim(truth: np.ndarray, image: np.ndarray) -> float:
    """Structural similarity of two volumes, on the data range of ``truth``."""
    truth, image = np.asarray(truth, np.float64), np.asarray(image, np.float64)
    return float(structural_similarity(truth, image, data_range=float(truth.max() - truth.min())))


def psnr(truth: np.ndarray, image: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of ``image`` against ``truth``, on ``truth``'s data range."""
    truth, image = np.asarray(truth, np.float64), np.asarray(image, np.float64)
    return float(peak_signal_noise_ratio(truth, image, data_range=float(truth.max() - truth.min())))


def residual_correlation(truth: np.ndarray, image: np.ndarray, prior: np.ndarray) -> float:
    """Pearson correlation of ``image - prior`` with ``truth - prior`` over voxels (0 where the image is the prior)."""
    a = (np.asarray(image, np.float64) - prior).ravel()
    b = (np.asarray(truth, np.float64) - prior).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def _distances(images: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Mean squared distance of every image (rows) to every candidate (columns)."""
    a = images.reshape(len(images), -1).astype(np.float64)
    b = candidates.reshape(len(candidates), -1).astype(np.float64)
    return ((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]) / a.shape[1]


def nearest(images: np.ndarray, candidates: Sequence[np.ndarray], *, chunk: int = 32) -> np.ndarray:
    """Index of each image's nearest candidate (mean squared distance). ``candidates`` is read ``chunk`` rows
    at a time (a memory-mapped cohort at the paper's scale does not fit in memory as float64)."""
    best = np.full(len(images), np.inf)
    index = np.zeros(len(images), dtype=np.int64)
    for start in range(0, len(candidates), chunk):
        d = _distances(images, np.asarray(candidates[start:start + chunk]))
        j = d.argmin(axis=1)
        closer = d[np.arange(len(images)), j] < best
        best[closer], index[closer] = d[np.arange(len(images)), j][closer], start + j[closer]
    return index


def match(images: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """For each reconstruction, the index of its true scan among ``truths``: the assignment of least total
    distance (a batch is reconstructed in no particular order)."""
    rows, cols = linear_sum_assignment(_distances(images, truths))
    return cols[np.argsort(rows)]


def identified(images: np.ndarray, candidates: Sequence[np.ndarray], sources: np.ndarray) -> np.ndarray:
    """Whether each reconstruction's nearest candidate is *its own* subject, ``sources[i]`` (an index into
    ``candidates``): a batch that collapses onto one subject identifies one, not all."""
    return nearest(images, candidates) == np.asarray(sources)


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval of a handful of per-scan numbers (a bootstrap of 4 scans has no coverage)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def share_interval(hits: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Share of hits and its Clopper-Pearson interval (at least ``confidence`` coverage at any share)."""
    hits = np.asarray(hits).astype(bool)
    ci = stats.binomtest(int(hits.sum()), len(hits)).proportion_ci(confidence_level=confidence, method="exact")
    return float(hits.mean()), float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Quality:
    """One reconstruction's scores, and the prior's on the same subject."""

    ssim: float
    psnr: float
    ssim_prior: float
    psnr_prior: float
    identified: bool
    identified_prior: bool  # the prior's nearest candidate is this subject: what needs no attack
    chance: float
    residual_corr: float = 0.0
    residual_corr_others: float = 0.0  # the same with every other candidate, averaged
    residual_rank: int = 0  # the candidates whose deviation correlates at least as much (1: the subject's own alone)

    def row(self) -> dict[str, float]:
        return {"ssim": self.ssim, "psnr": self.psnr, "ssim_prior": self.ssim_prior, "psnr_prior": self.psnr_prior,
                "ssim_gain": self.ssim - self.ssim_prior, "identified": float(self.identified),
                "identified_prior": float(self.identified_prior), "chance": self.chance,
                "residual_corr": self.residual_corr, "residual_corr_others": self.residual_corr_others,
                "residual_rank": self.residual_rank, "identified_corr": float(self.residual_rank == 1)}


def quality(images: np.ndarray, truths: np.ndarray, prior: np.ndarray, candidates: Sequence[np.ndarray],
            sources: np.ndarray) -> list[Quality]:
    """Scores of each of ``images`` (N, *spatial) against its matched scan among ``truths`` (the subjects the
    signal came from: ``truths[k]`` is ``candidates[sources[k]]``), beside the ``prior``'s."""
    sources = np.asarray(sources)
    order = match(images, truths)
    hits = identified(images, candidates, sources[order])
    by_prior = nearest(prior[None], candidates)[0]
    chance = len(truths) / len(candidates)
    own, others, rank = _candidate_correlations(images, prior, candidates, sources[order])
    return [Quality(ssim(truths[j], img), psnr(truths[j], img), ssim(truths[j], prior), psnr(truths[j], prior),
                    bool(hit), bool(by_prior == sources[j]), chance, float(c), float(o), int(r))
            for img, j, hit, c, o, r in zip(images, order, hits, own, others, rank)]


def _candidate_correlations(images: np.ndarray, prior: np.ndarray, candidates: Sequence[np.ndarray],
                            sources: np.ndarray, *, chunk: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each image, :func:`residual_correlation` with its own subject, its mean with every other candidate,
    and the own subject's rank among all candidates (1: every other candidate's deviation correlates less)."""
    def centred(v: np.ndarray) -> np.ndarray:
        d = v.reshape(len(v), -1).astype(np.float64) - prior.reshape(1, -1)
        d -= d.mean(1, keepdims=True)
        return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-30)

    moved = centred(np.asarray(images))
    corr = np.concatenate([moved @ centred(np.asarray(candidates[start:start + chunk])).T
                           for start in range(0, len(candidates), chunk)], axis=1)
    rows = np.arange(len(images))
    own = corr[rows, np.asarray(sources)]
    others = (corr.sum(1) - own) / max(corr.shape[1] - 1, 1)
    # ties count against the subject: a reconstruction that did not move from the prior correlates 0 with everyone
    return own, others, (corr >= own[:, None]).sum(1)
