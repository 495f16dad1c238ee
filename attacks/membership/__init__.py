"""The membership-inference family: trained classifiers on a seat's features (:mod:`~attacks.membership.trained`),
calibrated attacks with reference models (:mod:`~attacks.membership.calibrated`) and every seat on one
round (:mod:`~attacks.membership.seats`)."""
