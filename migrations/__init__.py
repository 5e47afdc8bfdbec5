"""Alembic migrations for the service schema (``atproto-video migrate`` and at startup)."""
