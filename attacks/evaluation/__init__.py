"""Metrics with intervals that have their coverage (:mod:`~attacks.evaluation.metrics`,
:mod:`~attacks.evaluation.intervals`), and the one aggregation with the controls' verdicts
(:mod:`~attacks.evaluation.summary`)."""
