"""The shared maths every method builds on, public to third-party plugins.

- :mod:`corediff.maths.gaussian` — ᾱ schedules → α, σ, SNR; ε/x0/v conversions; posteriors; Karras σ grids.
- :mod:`corediff.maths.flow` — flow matching (Lipman et al. 2023): time shift, grids, velocity conversions.
- :mod:`corediff.maths.edm` — EDM (Karras et al. 2022, Table 1): preconditioning, loss weight, σ grids.
- :mod:`corediff.maths.cold` — Cold Diffusion (Bansal et al. 2022): composed noise σ, SVD error curves.
- :mod:`corediff.maths.solvers` — the σ-space solver grid shared by DPM-Solver++, UniPC, Euler, Heun.
- :mod:`corediff.maths.timesteps` — the time grid every sampler visits (one spacing vocabulary).
- :mod:`corediff.maths.noise` — random draws on the generator's device.
"""
