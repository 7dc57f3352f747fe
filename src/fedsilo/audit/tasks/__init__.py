"""Per-task audit plug-ins: ``<task name>.py`` registers its audits with
:func:`fedsilo.audit.registry.register_audit`; :mod:`.common` holds the pieces tasks share
(reference-model training through ``task.train``, membership and gradient-inversion outcomes)."""
