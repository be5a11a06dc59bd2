"""First-party samplers plugins (one method per file)."""
