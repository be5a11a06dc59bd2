"""First-party datasets plugins (one method per file)."""
