"""First-party schedules plugins (one method per file)."""
