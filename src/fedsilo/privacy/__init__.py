"""Differential privacy mechanics at a site: DP-SGD and privacy accounting.

- :mod:`.accounting`: epsilon of the sampled Gaussian mechanism (Opacus RDP/PRV, cross-checked
  with dp-accounting), noise calibration, a serialisable accountant (site state, checkpoints);
- :mod:`.dp`: sample-level DP-SGD at each site with Opacus (``privacy.mode = "sample"``).

Client-level DP-FedAvg wraps Flower's strategies and lives beside them
(:mod:`fedsilo.federation.client_dp`); attacks and audits live in :mod:`fedsilo.audit`.
Submodules are imported on use (Opacus loads only when needed).
"""
