"""Privacy attacks on fedsim run directories, by attack family over shared layers.

::

    attacks/
      api.py          audit(run_dir, features=…, seats=…) -> DataFrame: the notebook entry point
      target.py       a run directory as a target: cohort, partitions, snapshots (community + local)
      signals/        what a seat reads off a model for a subject
        names.py        the features and update defenses by name (no torch: what the commands list)
        features.py     prediction, label, error, loss, activations, gradients: a registry, combinable specs
        gradients.py    per-sample gradients (loop | vmap | Opacus, timed and chosen)
        layout.py       where each part of a feature set sits (per-filter gradient blocks)
        cache.py        the feature cache, keyed by the snapshot's content
        updates.py      a learner's update trained by fedsim's own loop under a defense (no federation)
      threats/        who attacks whom, seeing what
        names.py        the attack sets' defaults (no pandas)
        splits.py       attack-train / attack-test subject sets, age-matched controls
        seats.py        centralized adversary, malicious learner, curious controller, outsider
      engine.py       the one loop: fit on the attacker's side, score the victim's subjects
      execution.py    where independent trainings (references, shadows) run: in process or as Ray tasks, cached
      membership/     the membership family
        names.py        the attack classifiers by name, imported on first use
        nets.py         the paper's deep attack classifiers (MLP, per-filter gradient head)
        classifiers.py  attack classifiers by name (those nets, sklearn baselines, loss threshold)
        trained.py      trained-classifier attacks of any seat (Gupta et al. 2021)
        calibration.py  LiRA and RMIA scores for regression
        references.py   reference models trained and cached by fedsim
        calibrated.py   calibrated attacks on a centralized run
        seats.py        every seat on one round, the controller's calibrated attacks
      reconstruction/ the reconstruction family: can a seat see a subject's brain?
        settings.py     the inversion's and the gradient attack's settings, names and defaults (no torch)
        optimize.py     the one inversion loop (signed Adam, step schedule, 3-D TV prior, box)
        gradient.py     gradient inversion of a learner's update (one step, or its local SGD replayed)
        features.py     feature inversion of one layer's activations (white-box, learned inverse net)
        inversion.py    model inversion: the scan of a target age; is it closer to members?
        run.py          each attack on a run directory; sweep.py  batch size x local steps x width x defense
      attribute/      the attribute family: a subject's sex or site, a learner's cohort
        names.py        its seats, attributes and defaults (no scikit-learn)
        labels.py       the questions (sex, one per site) and their labels from the manifest
        inference.py    every seat's probe of an attribute, the label-only and image baselines, round 0
        properties.py   property inference: each learner's share of women and mean age (shadow models)
      evaluation/     metrics with intervals that have their coverage, one aggregation, controls' verdicts
        metrics.py  intervals.py  summary.py  images.py (SSIM, PSNR, identifiability)
      reporting/      figures and HTML pages (Jinja2 templates, autoescaped, figures inlined)
        figures.py  html.py  results.py  membership.py  seats.py  attribute.py  sweep.py  reconstruction.py
        markdown.py  templates/
      experiments/    the study (every environment) and privacy–utility sweeps
        names.py  study.py  environments.py (study and sweep steps as executor tasks)  sweep.py  audit.py
      cli/            the commands: parse, call the layers above, print (nothing below prints)
        run.py  seats.py  calibrated.py  attribute.py  reconstruct.py  study.py  sweep.py  options.py (shared)
      run.py seats.py calibrated.py reconstruct.py study.py sweep.py   ``python -m attacks.<name>`` → cli/<name>.py
                      (``python -m attacks.attribute``: attribute/__main__.py)

Dependencies run downward: cli → reporting → families + evaluation → engine → signals + threats → target.
A new attack family is a folder beside ``membership/`` whose attacks run through :mod:`attacks.engine`;
a new seat goes in :mod:`attacks.threats.seats`, a new signal in :mod:`attacks.signals.names` (its name)
and :mod:`attacks.signals.features` (how it is read). A command's parser reads names and defaults from
the light modules (``names.py``, ``reconstruction/settings.py``) and imports the rest after its arguments
parse, so that ``--help`` answers without loading torch or scikit-learn.
``fedsim`` never imports this package. This file imports nothing until :func:`audit` is used, so that
light modules (subject splits) do not pull in torch, Opacus and scikit-learn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["audit"]


def __getattr__(name: str) -> Any:
    if name == "audit":
        from attacks.api import audit

        return audit
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")
