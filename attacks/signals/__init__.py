"""What a seat reads off a model for a subject: :mod:`~attacks.signals.features` (prediction, label, error,
loss, activations, per-sample gradients from :mod:`~attacks.signals.gradients`) and the content-keyed
:mod:`~attacks.signals.cache`."""
