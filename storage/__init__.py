"""Persistence: sqlmodel tables, engines and sessions, queries, migrations.

Functions here take plain values and return plain data (dicts or dataclasses);
ORM rows never leave this package.
"""
