"""The attribute family's seats, questions and settings by name, without the code that attacks (no
scikit-learn, no torch): a command's parser reads them at Python's start-up cost, and
:mod:`~attacks.attribute.inference`, :mod:`~attacks.attribute.labels` and
:mod:`~attacks.attribute.properties` import them from here."""

from __future__ import annotations

__all__ = ["ADVERSARY", "ATTRIBUTES", "COMPONENTS", "CONTROLLER", "DEFAULT_CLASSIFIER", "DEFAULT_SHADOWS", "HOLDER",
           "LEARNER", "MIN_SHADOWS", "OUTSIDER"]

OUTSIDER, HOLDER, LEARNER, ADVERSARY, CONTROLLER = (
    "outsider", "feature holder", "malicious learner", "centralized adversary", "curious controller")
#: The attribute family's classifier unless told otherwise: :class:`~attacks.attribute.inference.Probe`, the
#: linear probe of the attribute-inference literature with its regularisation chosen by cross-validation.
DEFAULT_CLASSIFIER = "probe"
COMPONENTS = 64  # a probe reads a wide feature set (and the image) through its leading principal components
#: The attributes a question can be about.
ATTRIBUTES = ("sex", "site")
#: Shadow updates of property inference unless told otherwise, and the fewest it fits on.
DEFAULT_SHADOWS = 24
MIN_SHADOWS = 4  # a regression, and its leave-one-out error, need a few
