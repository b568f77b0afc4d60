"""Small helpers every layer shares: the config system, atomic file writing, errors and logging."""
