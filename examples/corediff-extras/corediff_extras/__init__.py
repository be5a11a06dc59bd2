"""corediff-extras: third-party corediff plugins (DEIS sampler, CFG++ guidance, P2 loss
weighting), registered through corediff's entry-point groups; see each module's docstring."""
