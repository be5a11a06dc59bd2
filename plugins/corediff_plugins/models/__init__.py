"""First-party models plugins (one method per file)."""
