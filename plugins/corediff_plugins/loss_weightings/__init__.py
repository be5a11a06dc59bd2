"""First-party loss_weightings plugins (one method per file)."""
