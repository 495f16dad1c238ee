"""Membership-inference attacks on fedsim models, after Gupta et al. (MIDL 2021).

The pipeline is three steps, each picked by name:

1. :mod:`attacks.features` — features of (model, subject) pairs (``"pred+label+grad:conv6"``),
   computed in one batched pass per subject set and cached by the caller;
   per-sample gradients come from :mod:`attacks.gradients` (loop, vmap or opacus).
2. :mod:`attacks.classifiers` — scikit-learn estimators that call a subject a member.
3. :mod:`attacks.metrics` — accuracy, ROC AUC and TPR at low FPR, members = class 1.

``fedsim`` never imports this package. Import from the submodules: this file stays free of
imports so that light modules (subject splits) do not pull in torch, Opacus and scikit-learn.
"""
