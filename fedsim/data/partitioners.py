"""How the pool is split among learners, by name (``[partition] by = …``).

* ``paper`` — the exact per-learner sizes and age histograms of Stripelis et al. 2021
  (:func:`fedsim.data.apportion.learner_bin_counts`; IID when there are no histograms).
* ``dirichlet`` — each age bin's subjects shared among the learners in proportions drawn from
  Dirichlet(``alpha``): the standard non-IID knob of the federated-learning literature (Hsu et al.
  2019); small ``alpha`` gives each learner few age bins, large ``alpha`` approaches IID.
* ``site`` — each acquisition site is one learner (the natural federation of multi-site
  neuroimaging); needs the manifest's ``site`` column, and ``learners`` = the number of sites.

The unseen hold-out is drawn first in every case, stratified by age over the whole cohort
(:func:`fedsim.data.partition.assign_groups`), so it is the same set whichever partitioner runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedsim.data.apportion import apportion
from fedsim.errors import FedsimError

PARTITIONERS = ("paper", "dirichlet", "site")
_DIRICHLET_STREAM = 1  # a seed stream of its own: the subject shuffles stay those of the other partitioners


def dirichlet_counts(pool_counts: np.ndarray, learners: int, alpha: float, seed: int) -> np.ndarray:
    """``learners x bins`` counts: bin ``b``'s subjects apportioned in proportions ~ Dirichlet(alpha)."""
    rng = np.random.default_rng([seed, _DIRICHLET_STREAM])
    shares = rng.dirichlet(np.full(learners, float(alpha)), size=len(pool_counts))  # bins x learners
    return np.stack([apportion(int(n), share) for n, share in zip(pool_counts, shares)], axis=1)


def site_learners(sites: Sequence[str] | None, learners: int) -> tuple[list[str], np.ndarray]:
    """The sites in sorted order (site ``k`` is learner ``L{k+1}``) and each subject's learner index."""
    if sites is None:
        raise FedsimError("[partition] by = \"site\" needs a site column in the manifest (or participants.tsv)")
    values = np.asarray([str(s).strip() for s in sites], dtype=object)
    if any(not s or s.lower() in ("nan", "n/a") for s in values):
        raise FedsimError("[partition] by = \"site\": some subjects have no site; give every subject one")
    names = sorted(set(values))
    if len(names) != learners:
        shown = ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
        raise FedsimError(f"[partition] by = \"site\": the cohort has {len(names)} site(s) ({shown}); "
                          f"set [partition] learners = {len(names)}")
    index = {s: k for k, s in enumerate(names)}
    return names, np.array([index[s] for s in values], dtype=np.int64)
