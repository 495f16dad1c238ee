"""Synthetic T1 brains from nilearn's packaged MNI152 2009 template: the embedded default cohort.

Why this design: membership inference needs a model that can fit a training subject's label
only by memorising that subject. Each synthetic subject therefore has

* a *biological* age (chronological age + N(0, ``bio_age_sd``)) that drives its atrophy —
  ventricles grow, grey matter thins — while the label stays the chronological age, so part of
  the error is irreducible for unseen subjects (the "brain-age gap");
* its own anatomy: a smooth random displacement field, tissue contrasts, a multiplicative
  bias field and noise, which a network can memorise.

Sex and site are what an attribute-inference attack looks for (:mod:`attacks.attribute`). Sex always
sets head size (men's heads ≈ 4 % larger linearly, ≈ 12 % in volume); two optional effects make it
reach what a brain-age model learns, as in real cohorts: a grey/white-matter difference (women have a
higher share of grey matter, Gur et al. 1999; Ritchie et al. 2018) and sex-dependent ageing (steeper
age-related atrophy in men in several regions, Cowell et al. 1994; Ritchie et al. 2018), so a model
trained on both sexes errs differently for each. With ``sites`` > 1 every subject is scanned at one of
several sites, each a scanner with its own signature (intensity non-linearity, bias-field strength,
noise, smoothness) and its own age/sex mix (:class:`Scanner`). The defaults (no extra effect, one
site) write the cohort of the membership results bit for bit: the site draws use a stream of their own.

Everything is drawn from ``np.random.default_rng([seed, index])``, so subject ``i`` is the same
whatever the cohort size, and the same seed gives the same files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from fedsim.data.geometry import grid_affine, resample_world


@dataclass(frozen=True)
class AgeDistribution:
    """Ages drawn from a binned histogram, uniform inside each bin."""

    age_range: tuple[float, float]
    bin_weights: tuple[float, ...]

    def sample(self, rng: np.random.Generator) -> float:
        weights = np.asarray(self.bin_weights, dtype=float)
        edges = np.linspace(*self.age_range, len(weights) + 1)
        b = rng.choice(len(weights), p=weights / weights.sum())
        return float(rng.uniform(edges[b], edges[b + 1]))


@dataclass(frozen=True)
class AnatomyParams:
    """How strongly age and identity shape a synthetic brain (millimetres, years, intensity units)."""

    bio_age_sd: float = 4.0            # spread of biological around chronological age (years)
    ventricle_mm_per_year: float = 0.25  # ventricle wall moves outward this far per year of biological age
    gm_loss_per_year: float = 0.008     # fraction of grey matter lost per year
    deform_mm: float = 6.0              # RMS of the subject's smooth displacement field
    deform_smooth_mm: float = 15.0      # its smoothness (Gaussian sigma)
    bias_strength: float = 0.08         # std of the log bias field
    noise_sd: float = 0.03              # Gaussian noise, relative to white-matter intensity
    sex_gm_difference: float = 0.0      # women's grey matter this fraction above men's (white matter below)
    male_atrophy_ratio: float = 1.0     # men's atrophy per year of biological age, relative to women's


#: Range of each scanner property across sites (uniform draws, :func:`scanners`): a gamma on the
#: intensities, a factor on the bias-field strength and on the noise, Gaussian smoothing (mm FWHM-like
#: sigma), the site's share of women and how strongly it favours older (> 0) or younger subjects.
SCANNER_RANGES = {"gamma": (0.8, 1.25), "bias_factor": (0.5, 2.0), "noise_factor": (0.6, 1.8),
                  "smooth_mm": (0.0, 4.0), "women_share": (0.3, 0.7), "age_tilt": (-0.6, 0.6)}
_SITE_STREAM = 1  # site draws come from [seed, index, 1]: the subject's own stream is that of a one-site cohort


@dataclass(frozen=True)
class Scanner:
    """One acquisition site: how its scanner renders a brain and whom it scans."""

    gamma: float = 1.0
    bias_factor: float = 1.0
    noise_factor: float = 1.0
    smooth_mm: float = 0.0
    women_share: float = 0.5
    age_tilt: float = 0.0

    def weight(self, sex: str, age_z: float) -> float:
        """Relative chance that a subject of this sex and (standardised) age is scanned here."""
        return (self.women_share if sex == "F" else 1.0 - self.women_share) * float(np.exp(self.age_tilt * age_z))


@lru_cache(maxsize=8)
def scanners(sites: int, seed: int) -> tuple[Scanner, ...]:
    """The ``sites`` scanners of cohort ``seed`` (one site: the neutral scanner of the default cohort)."""
    if sites == 1:
        return (Scanner(),)
    rng = np.random.default_rng([seed, _SITE_STREAM])
    return tuple(Scanner(**{k: float(rng.uniform(*r)) for k, r in SCANNER_RANGES.items()}) for _ in range(sites))


def site_name(k: int, sites: int) -> str:
    """What the manifest's ``site`` column says for site ``k`` of ``sites``."""
    return "synthetic" if sites == 1 else f"site-{k + 1}"


@dataclass(frozen=True)
class Subject:
    """One synthetic scan and the facts that produced it."""

    age: float
    bio_age: float
    sex: str
    image: np.ndarray = field(repr=False)
    site: int = 0


@dataclass(frozen=True)
class _Atlas:
    """Template maps resampled to one target grid, shared by every subject of that shape."""

    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    ventricle_dist_mm: np.ndarray
    voxel_mm: np.ndarray
    affine: np.ndarray


@lru_cache(maxsize=1)
def _template_maps() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The 1 mm maps every grid is resampled from (grey/white matter, mask, ventricle distance)."""
    from nilearn import datasets  # package data only: these loaders never download

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    gm = gm_img.get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    mask = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0.5
    # Ventricles: CSF deep inside the brain (more than 15 mm from its surface), large components only.
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    deep_csf = (csf > 0.5) & (ndi.distance_transform_edt(mask) > 15)
    labels, n = ndi.label(deep_csf)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    ventricles = np.isin(labels, np.flatnonzero(sizes > 1000)) & (labels > 0)
    maps = {
        "gm": gm,
        "wm": wm,
        "mask": mask.astype(np.float32),
        "ventricle_dist_mm": ndi.distance_transform_edt(~ventricles).astype(np.float32),
    }
    return maps, gm_img.affine


@lru_cache(maxsize=8)
def _atlas(shape: tuple[int, int, int]) -> _Atlas:
    maps, affine = _template_maps()
    resampled = {k: resample_world(v, affine, shape) for k, v in maps.items()}
    return _Atlas(**resampled, voxel_mm=np.diag(grid_affine(shape))[:3].copy(), affine=grid_affine(shape))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit RMS."""
    f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma_vox, mode="wrap")
    return f / np.sqrt(np.mean(f**2))


def make_subject(
    index: int,
    *,
    shape: tuple[int, int, int],
    seed: int,
    ages: AgeDistribution,
    anatomy: AnatomyParams = AnatomyParams(),
    sites: int = 1,
) -> Subject:
    """Generate subject ``index`` of the cohort ``seed`` on a ``shape`` grid over the MNI box."""
    atlas = _atlas(tuple(int(s) for s in shape))
    rng = np.random.default_rng([seed, index])
    age = ages.sample(rng)
    bio_age = age + rng.normal(0.0, anatomy.bio_age_sd)
    sex = "F" if rng.random() < 0.5 else "M"
    years = (bio_age - ages.age_range[0]) * (anatomy.male_atrophy_ratio if sex == "M" else 1.0)
    sites_ = scanners(sites, seed)
    site = _draw_site(np.random.default_rng([seed, index, _SITE_STREAM]), sites_, sex, age, ages)
    scanner = sites_[site]

    # Age: ventricles expand into the surrounding tissue, grey matter thins; the lost tissue becomes CSF.
    wall_mm = max(0.0, anatomy.ventricle_mm_per_year * years + rng.normal(0.0, 1.0))
    ventricle = 1.0 / (1.0 + np.exp((atlas.ventricle_dist_mm - wall_mm) / 1.5))
    sex_sign = 0.5 if sex == "F" else -0.5  # women half the difference above the mean, men half below
    gm = (atlas.gm * np.clip(1.0 - anatomy.gm_loss_per_year * years, 0.2, 1.0) * (1.0 - ventricle)
          * (1.0 + sex_sign * anatomy.sex_gm_difference))
    wm = atlas.wm * (1.0 - ventricle) * (1.0 - sex_sign * anatomy.sex_gm_difference)
    csf = np.clip(atlas.mask - gm - wm, 0.0, 1.0)
    contrast = rng.normal([0.25, 0.65, 0.86], [0.03, 0.03, 0.02])
    t1 = contrast[0] * csf + contrast[1] * gm + contrast[2] * wm

    # Identity: a smooth displacement field plus a sex-dependent head size, then bias field and noise.
    sigma_vox = anatomy.deform_smooth_mm / atlas.voxel_mm
    grid = np.indices(shape, dtype=np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    scale = rng.normal(1.0 if sex == "M" else 0.96, 0.02)
    coords = np.stack(
        [
            centre[k] + (grid[k] - centre[k]) / scale
            + _smooth_field(rng, shape, sigma_vox) * anatomy.deform_mm / atlas.voxel_mm[k]
            for k in range(3)
        ]
    )
    warped = ndi.map_coordinates(t1, coords, order=1, mode="constant")
    if scanner.gamma != 1.0:  # the scanner's intensity non-linearity
        warped = np.clip(warped, 0.0, None) ** scanner.gamma
    bias = np.exp(anatomy.bias_strength * scanner.bias_factor * _smooth_field(rng, shape, 40.0 / atlas.voxel_mm))
    image = warped * bias + rng.normal(0.0, anatomy.noise_sd * scanner.noise_factor, size=shape)
    if scanner.smooth_mm > 0:
        image = ndi.gaussian_filter(image, sigma=scanner.smooth_mm / atlas.voxel_mm)
    return Subject(age=age, bio_age=float(bio_age), sex=sex, site=site,
                   image=np.clip(image, 0.0, None).astype(np.float32))


def _draw_site(rng: np.random.Generator, sites: tuple[Scanner, ...], sex: str, age: float, ages: AgeDistribution) -> int:
    """Which scanner saw this subject: each site's age/sex mix sets its odds."""
    if len(sites) == 1:
        return 0
    lo, hi = ages.age_range
    weights = np.array([s.weight(sex, (age - (lo + hi) / 2) / ((hi - lo) / 4)) for s in sites])
    return int(rng.choice(len(sites), p=weights / weights.sum()))
