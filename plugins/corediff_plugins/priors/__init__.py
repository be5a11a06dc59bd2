"""First-party priors plugins (one method per file)."""
