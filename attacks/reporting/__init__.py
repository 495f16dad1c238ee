"""Figures (:mod:`~attacks.reporting.figures`), HTML pages from Jinja2 templates (:mod:`~attacks.reporting.html`)
and one page per family and command: membership, seats, sweep; Markdown for the study."""
