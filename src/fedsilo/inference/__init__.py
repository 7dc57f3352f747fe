"""Using what a finished run trained: synthetic data sets (:mod:`.sample`), exported models
(:mod:`.export`) and label maps of new scans (:mod:`.predict`)."""
