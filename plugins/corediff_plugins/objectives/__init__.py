"""First-party training objectives."""
