"""First-party guidance plugins (one method per file)."""
