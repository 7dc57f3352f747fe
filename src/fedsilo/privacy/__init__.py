"""Differential privacy in training and audits of what a run leaks.

- :mod:`.accounting`: epsilon of the sampled Gaussian mechanism (Opacus RDP/PRV, cross-checked
  with dp-accounting), noise calibration, a serialisable accountant (site state, checkpoints);
- :mod:`.dp`: sample-level DP-SGD at each site with Opacus (``privacy.mode = "sample"``);
- :mod:`.client_dp`: client-level DP-FedAvg with Flower's DP wrappers (``privacy.mode = "client"``);
- :mod:`.attacks`: membership inference, GAN attacks, DCR, model and gradient inversion;
- :mod:`.audit`: ``fedsilo audit RUN_DIR`` with per-task plug-ins in :mod:`.audits`.

Submodules are imported on use (Opacus and the attacks load only when needed).
"""
