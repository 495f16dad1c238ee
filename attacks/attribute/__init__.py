"""Attribute inference: sex and site from a seat's signals, and learners' cohort properties
from their updates. :mod:`~attacks.attribute.labels` (the questions), :mod:`~attacks.attribute.inference`
(every seat, its baseline and controls), :mod:`~attacks.attribute.properties` (property inference)."""
