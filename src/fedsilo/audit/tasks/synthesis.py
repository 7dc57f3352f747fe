"""Audit of the synthesis (FedGAN) task: the shared GAN attacks on the run's generator and
discriminator, with the sites' training images as members and never-used images as non-members."""

from __future__ import annotations

from fedsilo.audit.registry import AuditContext, AuditOutcome, register_audit
from fedsilo.audit.tasks.gan import gan_outcome


@register_audit("synthesis", "gan")
def gan(ctx: AuditContext) -> AuditOutcome:
    """LOGAN, GAN-Leaks (black/white box), model inversion, DCR and the realism detector."""
    from fedsilo.data.errors import DataError
    from fedsilo.tasks.synthesis.data import all_images

    try:
        data = ctx.task.federated_data()
    except (DataError, OSError, ValueError) as exc:
        # a deployment's coordinator holds the weights, not the sites' images
        raise DataError(f"the GAN audit of {ctx.run.path} needs the images the GAN trained on (members: every "
                        f"site's training split) and images it never saw (non-members: the sites' validation "
                        f"splits or the global test split), as its config's [data] section names them; they "
                        f"cannot be loaded here ({exc}). Run `fedsilo audit` where the config's data are "
                        f"available (e.g. a copy of the run folder at a site whose data the config names)") from exc
    sites = data.sites if ctx.site is None else [data.sites[ctx.site]]
    members = type(sites[0].train).concat([s.train for s in sites])
    held_out = [s.val for s in data.sites if len(s.val)]
    source = "the sites' validation splits"
    if data.test is not None and len(data.test):
        held_out.insert(0, data.test)
        source = "the global test split and the sites' validation splits"
    nonmembers = type(held_out[0]).concat(held_out)
    xm, ym = all_images(members)
    xn, yn = all_images(nonmembers)
    conditional = ctx.cfg.gan.conditional
    # a discriminator whose arrays stay at the sites (gan.federation.discriminator) is not in the run's model
    site_kept = bool(ctx.task.site_kept_keys())
    outcome = gan_outcome(ctx, ctx.model.generator, None if site_kept else ctx.model.discriminator, xm, xn,
                          member_labels=ym if conditional else None, nonmember_labels=yn if conditional else None)
    outcome.notes.append(f"Members: the sites' training images; non-members: {source} (never trained on).")
    if site_kept:
        outcome.notes.append(f"LOGAN skipped: gan.federation.discriminator = {ctx.cfg.gan.federation.discriminator!r} "
                             f"keeps the trained discriminator (or its normalisation) at the sites; the run's "
                             f"discriminator is not a trained network.")
    return outcome
