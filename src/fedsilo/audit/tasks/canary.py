"""The one-run privacy audit of any task trained with DP-SGD (Steinke, Nasr and Jagielski,
"Privacy Auditing with One (1) Training Run", NeurIPS 2023): an empirical lower bound on epsilon
from the run's gradient canaries (``privacy.canaries``; see :mod:`fedsilo.privacy.canaries`)."""

from __future__ import annotations

import math

from fedsilo.audit.registry import ANY_TASK, AuditContext, AuditOutcome, register_audit
from fedsilo.privacy.auditing import audit_canaries
from fedsilo.run.load import initial_weights
from fedsilo.training import run_canaries


@register_audit(ANY_TASK, "dp-canary")
def dp_canary(ctx: AuditContext) -> AuditOutcome:
    """Score each canary by how far its weight moved against its gradient (initial minus final
    weight), guess in for the highest and out for the lowest, and turn the correct guesses into
    the largest epsilon they refute at 95% confidence, beside the accountant's epsilon."""
    from fedsilo.report.summary import privacy_spent

    canaries = run_canaries(ctx.task, ctx.model)  # drawn on names and shapes: the attacked model has them
    if canaries is None:
        if ctx.cfg.privacy.mode != "sample":
            return AuditOutcome()
        return AuditOutcome(notes=["DP canary audit skipped: the run has no canaries (set privacy.canaries, "
                                   "e.g. 1000, before training)."])
    if ctx.site is not None:
        canaries = canaries.at_site(ctx.site)  # a site's own model has seen only its own canaries
    before = initial_weights(ctx.task)
    after = {k: v.detach().cpu() for k, v in ctx.model.state_dict().items()}
    scores = canaries.displacement({k: v.cpu() for k, v in before.items()}, after)
    spent = privacy_spent(ctx.run)
    delta = float(spent.get("delta") or 1e-5)
    claimed = spent.get("epsilon")
    result = audit_canaries(scores, canaries.included, delta)
    summary = {"dp_canary_epsilon_lower_bound": result.epsilon_lower_bound, "dp_canary_guesses": float(result.guesses),
               "dp_canary_correct": float(result.correct), "dp_canary_count": float(result.canaries)}
    verdict = ""
    if isinstance(claimed, (int, float)) and math.isfinite(claimed):
        summary["dp_canary_claimed_epsilon"] = float(claimed)
        verdict = (" It is ABOVE the accountant's epsilon: the mechanism that ran is less private than claimed."
                   if result.epsilon_lower_bound > claimed else
                   " It is at or below the accountant's epsilon, as a sound mechanism keeps it.")
    note = (f"Empirical epsilon (one-run audit, Steinke et al. 2023): {result.canaries} gradient canaries, each real "
            f"with probability 1/2; {result.correct} of {result.guesses} in/out guesses right, so epsilon >= "
            f"{result.epsilon_lower_bound:.2f} at {result.confidence:.0%} confidence (delta {delta:g}). A lower "
            f"bound measured on this run, not a guarantee; the accountant's epsilon is {claimed}.{verdict}")
    rows = [["empirical lower bound (95%)", f"{result.epsilon_lower_bound:.3f}"], ["accountant's epsilon", str(claimed)],
            ["canaries", result.canaries], ["guesses", result.guesses], ["correct", result.correct]]
    return AuditOutcome(tables={"Empirical epsilon (one-run audit)": (["", "value"], rows)}, summary=summary,
                        notes=[note])


__all__ = ["dp_canary"]
