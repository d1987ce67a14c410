"""Shared infrastructure of the intake service: settings, database, outbox, events, auth, app."""
