"""The reconstruction family: can a seat of the federation see a subject's brain?

::

    optimize.py   the one inversion loop (Inverting Gradients' signed Adam, step schedule, 3-D TV prior, box)
    gradient.py   gradient inversion of a learner's update, one step (Geiping et al. 2020) or unrolled (Dimitrov et al. 2022)
    features.py   feature inversion of one layer's activations: white-box optimisation and a learned inverse net
    inversion.py  model inversion: the input the model maps to a target age, and whether it sits closer to members
    updates.py    the tiny updates a sweep needs (batch size x local steps x defense), trained by fedsim's own loop
    run.py        each attack on a run directory: who holds what, which subjects, one result row per reconstruction
    sweep.py      gradient inversion over batch size, local steps and defenses

Every reconstruction is scored by :mod:`attacks.evaluation.images` against the true scan *and* against
the prior (the mean brain of the attacker's own subjects): the gain over the prior is the leakage.
"""
