"""The reconstruction family: can a seat of the federation see a subject's brain?

::

    optimize.py   the one inversion loop (signed or plain Adam, L-BFGS; restarts, best iterate, 3-D TV, projections, PCA)
    gradient.py   gradient inversion of a learner's update, one step (Geiping et al. 2020) or unrolled SGD/Adam
                  (Dimitrov et al. 2022); per-layer cosine; what one SGD step's output layer gives away
    strength.py   how strong an inversion was: objective baselines, the return test, the positive control
    features.py   feature inversion of one layer's activations: white-box optimisation and a learned inverse net
    inversion.py  model inversion: the input the model maps to a target age, and whether it sits closer to members
    run.py        each attack on a run directory: who holds what, which subjects, one result row per reconstruction
    tasks.py      feature and model inversion on a run, each layer × method and round × age a task (Ray or in process)
    sweep.py      gradient inversion over batch size, local steps and defenses, each update a task

Every reconstruction is scored by :mod:`attacks.evaluation.images` against the true scan *and* against
the prior (the mean brain of the attacker's own subjects): the gain over the prior is the leakage; every
gradient inversion carries its strength beside it (:mod:`attacks.reconstruction.strength`).
"""
