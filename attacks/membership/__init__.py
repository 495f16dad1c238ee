"""The membership-inference family: trained classifiers on a seat's features (:mod:`~attacks.membership.trained`),
calibrated attacks with reference models (:mod:`~attacks.membership.calibrated`; the malicious learner's, its
references replaying the federation: :mod:`~attacks.membership.learner_calibrated`) and every seat on one
round (:mod:`~attacks.membership.seats`)."""
