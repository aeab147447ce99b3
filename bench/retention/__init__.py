"""Redis bytes per event before and after retention, and the cost of the expiry work."""
