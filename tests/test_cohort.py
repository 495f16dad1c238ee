"""Synthetic cohort: determinism, the age signal a model must learn, real NIfTI on disk, reuse."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fedsim.data.cohort import DEFAULT_AGES, CohortSpec, default_cohort, write_cohort
from fedsim.data.synthetic import _atlas, make_subject
from fedsim.errors import FedsimError

SHAPE = (24, 29, 24)


def test_same_seed_same_subject_and_index_independent_of_cohort_size():
    a = make_subject(3, shape=SHAPE, seed=7, ages=DEFAULT_AGES)
    b = make_subject(3, shape=SHAPE, seed=7, ages=DEFAULT_AGES)
    c = make_subject(3, shape=SHAPE, seed=8, ages=DEFAULT_AGES)
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.age, a.bio_age, a.sex) == (b.age, b.bio_age, b.sex)
    assert not np.allclose(a.image, c.image)


def test_ventricles_grow_with_biological_age():
    subjects = [make_subject(i, shape=SHAPE, seed=0, ages=DEFAULT_AGES) for i in range(40)]
    mask = _atlas(SHAPE).mask > 0.5
    # CSF is dark on T1: count dark voxels inside the (template) brain mask.
    dark = np.array([((s.image < 0.45) & mask).sum() for s in subjects])
    bio = np.array([s.bio_age for s in subjects])
    age = np.array([s.age for s in subjects])
    assert np.corrcoef(bio, dark)[0, 1] > 0.5
    assert np.corrcoef(age, dark)[0, 1] > 0.3
    # the label is chronological age; biological age scatters around it
    assert 3.0 < np.std(bio - age) < 7.0


def test_ages_follow_the_uk_biobank_like_histogram():
    ages = np.array([make_subject(i, shape=(12, 12, 12), seed=1, ages=DEFAULT_AGES).age for i in range(300)])
    assert 44.5 <= ages.min() and ages.max() <= 80.7
    assert 61 < ages.mean() < 64.5 and 6 < ages.std() < 9


def test_written_cohort_is_real_nifti_with_manifest(tiny_manifest):
    df = pd.read_csv(tiny_manifest)
    assert list(df.columns[:5]) == ["subject_id", "path", "age", "sex", "site"]
    assert len(df) == 48 and df["subject_id"].is_unique
    img = nib.load(tiny_manifest.parent / df["path"][0])
    assert img.shape == (16, 20, 16)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(img.header.get_zooms(), (182 / 16, 218 / 20, 182 / 16))
    assert (tiny_manifest.parent / "preview.png").stat().st_size > 1000
    assert not tiny_manifest.parent.with_name("tiny.partial").exists()


def test_same_spec_is_reused_and_a_different_one_refused(tmp_path):
    spec = CohortSpec(4, (12, 12, 12), seed=0)
    manifest = write_cohort(spec, tmp_path / "c")
    mtime = manifest.stat().st_mtime_ns
    assert write_cohort(spec, tmp_path / "c") == manifest
    assert manifest.stat().st_mtime_ns == mtime
    with pytest.raises(FedsimError, match="already holds a different cohort"):
        write_cohort(CohortSpec(5, (12, 12, 12), seed=0), tmp_path / "c")


def test_default_cohort_lives_under_fedsim_home(fedsim_home):
    manifest = default_cohort(CohortSpec(4, (12, 12, 12), seed=3))
    assert manifest.is_relative_to(fedsim_home)
    assert default_cohort(CohortSpec(4, (12, 12, 12), seed=3)) == manifest


def test_a_cohort_written_in_parallel_is_the_serial_one(tmp_path, monkeypatch):
    import nibabel as nib
    import pandas as pd

    from fedsim.data import cohort

    spec = CohortSpec(64, (12, 12, 12), seed=5)
    monkeypatch.setattr(cohort, "preprocess_workers", lambda requested, subjects: 2)  # even on a one-core runner
    parallel = write_cohort(spec, tmp_path / "parallel")
    monkeypatch.setattr(cohort, "preprocess_workers", lambda requested, subjects: 1)
    serial = write_cohort(spec, tmp_path / "serial")
    pd.testing.assert_frame_equal(pd.read_csv(parallel), pd.read_csv(serial))
    for rel in pd.read_csv(serial)["path"]:
        a = np.asanyarray(nib.load(parallel.parent / rel).dataobj)
        b = np.asanyarray(nib.load(serial.parent / rel).dataobj)
        np.testing.assert_array_equal(a, b)


def _sexed(n: int, **anatomy) -> list:
    from fedsim.data.synthetic import AnatomyParams

    return [make_subject(i, shape=SHAPE, seed=0, ages=DEFAULT_AGES, anatomy=AnatomyParams(**anatomy)) for i in range(n)]


#: sha256 of subject 5 (seed 0, 24x29x24) as generator version 3 wrote it, before sexes and sites had effects
VERSION_3_SUBJECT_5 = "11fda4a16a66ffa2794f89ecc1f284bca86c86f2729789143fb53a24c268c339"


def test_default_effects_leave_the_cohort_of_the_membership_results_unchanged():
    import hashlib

    from fedsim.data.synthetic import AnatomyParams

    plain = make_subject(5, shape=SHAPE, seed=0, ages=DEFAULT_AGES)
    assert hashlib.sha256(plain.image.tobytes()).hexdigest() == VERSION_3_SUBJECT_5  # no extra draw in its stream
    explicit = make_subject(5, shape=SHAPE, seed=0, ages=DEFAULT_AGES,
                            anatomy=AnatomyParams(sex_gm_difference=0.0, male_atrophy_ratio=1.0), sites=1)
    np.testing.assert_array_equal(plain.image, explicit.image)
    assert explicit.site == 0


def test_sex_effects_change_grey_matter_and_ageing_by_sex():
    mask = _atlas(SHAPE).mask > 0.5
    plain, sexed = _sexed(40), _sexed(40, sex_gm_difference=0.3, male_atrophy_ratio=1.5)
    # same subjects, same draws: only the sex effects differ
    assert [s.sex for s in plain] == [s.sex for s in sexed] and [s.age for s in plain] == [s.age for s in sexed]
    grey = lambda s: ((s.image > 0.45) & (s.image < 0.75) & mask).sum()  # noqa: E731 - grey-matter intensities
    dark = lambda s: ((s.image < 0.45) & mask).sum()  # noqa: E731 - CSF: ventricles grow with atrophy
    change = {sex: [grey(b) - grey(a) for a, b in zip(plain, sexed) if a.sex == sex] for sex in "FM"}
    assert np.mean(change["F"]) > 0 > np.mean(change["M"])
    csf = {sex: [dark(b) - dark(a) for a, b in zip(plain, sexed) if a.sex == sex] for sex in "FM"}
    assert np.mean(csf["M"]) > np.mean(csf["F"]) + 5


def test_sites_differ_in_signature_and_mix_and_reach_the_manifest(tmp_path):
    from fedsim.data.synthetic import scanners

    sites = scanners(3, seed=0)
    assert len(set(sites)) == 3 and scanners(3, seed=0) == sites and scanners(1, seed=0)[0].gamma == 1.0
    manifest = write_cohort(CohortSpec(60, (12, 12, 12), seed=0, sites=3), tmp_path / "sites")
    df = pd.read_csv(manifest)
    assert sorted(df["site"].unique()) == ["site-1", "site-2", "site-3"]
    # the same subjects as the one-site cohort (ages and sexes), only the scanner differs
    one = pd.read_csv(write_cohort(CohortSpec(60, (12, 12, 12), seed=0), tmp_path / "one"))
    pd.testing.assert_series_equal(df["age"], one["age"])
    assert set(one["site"]) == {"synthetic"}
    with pytest.raises(FedsimError, match="--sites must be at least 1"):
        write_cohort(CohortSpec(4, (12, 12, 12), seed=0, sites=0), tmp_path / "none")


def test_cohort_keys_reach_the_generated_cohort_and_its_cache_key():
    from fedsim.data.synthetic import AnatomyParams

    plain = CohortSpec(4, (12, 12, 12))
    assert CohortSpec(4, (12, 12, 12), sites=2).key() != plain.key()
    assert CohortSpec(4, (12, 12, 12), anatomy=AnatomyParams(male_atrophy_ratio=1.2)).key() != plain.key()


def test_an_environments_age_range_draws_every_age_in_it(tmp_path, fedsim_home):
    from fedsim.config import ENVIRONMENTS_DIR, load_env
    from fedsim.data.prepare import resolve_manifest

    text = (ENVIRONMENTS_DIR / "tiny-centralized.toml").read_text()
    env = tmp_path / "young.toml"
    env.write_text(text.replace("[cohort]\n", "[cohort]\nage_range = [50, 60]\n"))
    manifest, _ = resolve_manifest(load_env(env), None)
    ages = pd.read_csv(manifest)["age"]
    assert ages.between(50, 60).all() and ages.max() - ages.min() > 5  # the range, not one age
    default, _ = resolve_manifest(load_env(ENVIRONMENTS_DIR / "tiny-centralized.toml"), None)
    assert default != manifest and pd.read_csv(default)["age"].max() > 60  # without it: the default cohort
