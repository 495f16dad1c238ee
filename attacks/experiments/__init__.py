"""Experiments over many runs: the whole study (:mod:`~attacks.experiments.study`) and privacy–utility
sweeps of one defense (:mod:`~attacks.experiments.sweep`). Each trains what is missing (in a child
process), attacks what is stale and collects the tables; the commands print them."""
