"""Exceptions caught in processes that must stay light (the worker): importing this module
loads nothing else, so catching one never pulls in the code that raises it (asyncio, boto3)."""

from __future__ import annotations


class StorageUnavailable(Exception):
    """The store cannot be reached (or answers 5xx) right now: retry later, nothing is lost."""
