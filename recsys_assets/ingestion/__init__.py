"""Ingestion: source configs and reading, the seeded synthetic shop, the service's
feedback log as an event source, and the quarantine rules with their pandera contracts."""
