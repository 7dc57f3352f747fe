"""Audits: attacks that measure what a finished run leaks, and ``fedsilo audit RUN_DIR``.

- :mod:`.attacks`: membership inference (loss, LiRA, RMIA; LOGAN, GAN-Leaks), distance to the
  closest record, model inversion and gradient inversion, each on explicit models and data;
- :mod:`.registry`: the audit context, the per-task plug-in registry and :func:`run_audit`;
- :mod:`.tasks`: one module per task registering its audits.
"""

from fedsilo.audit.registry import AuditContext, AuditFn, AuditOutcome, audits_for, register_audit, run_audit

__all__ = ["AuditContext", "AuditFn", "AuditOutcome", "audits_for", "register_audit", "run_audit"]
