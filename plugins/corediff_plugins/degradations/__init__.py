"""First-party degradations plugins (one method per file)."""
