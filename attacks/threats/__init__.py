"""Threat models: who attacks whom (:mod:`~attacks.threats.seats`) with which subject sets (:mod:`~attacks.threats.splits`)."""
