"""The shared maths every method builds on, public to third-party plugins.

- :mod:`corediff.maths.family` — the Gaussian family x_t = α(t)·x0 + σ(t)·ε (VP, flow,
  EDM): α, σ, λ = log(α/σ) and their inverses, which every σ-space solver is written in.
- :mod:`corediff.maths.gaussian` — ᾱ schedules → α, σ, SNR; ε/x0/v conversions; posteriors;
  Karras σ grids.
- :mod:`corediff.maths.flow` — flow matching (Lipman et al. 2023): time shift, grids, velocity
  conversions.
- :mod:`corediff.maths.edm` — EDM (Karras et al. 2022, Table 1): preconditioning, loss weight,
  σ grids.
- :mod:`corediff.maths.cold` — Cold Diffusion (Bansal et al. 2022): composed noise σ, SVD error
  curves.
- :mod:`corediff.maths.solvers` — the grids and nodes of the family's solvers (DPM-Solver++,
  UniPC, Euler, Heun) on any member; their one config,
  :class:`~corediff.maths.solvers.SolverGridConfig`.
- :mod:`corediff.maths.timesteps` — integer-step grids (DDPM, DDIM, Cold), the one spacing
  vocabulary (:func:`~corediff.maths.timesteps.check_spacing`) and the one "visit start
  first" rule (:func:`~corediff.maths.timesteps.visit_from`).
- :mod:`corediff.maths.noise` — random draws on the generator's device.
"""
