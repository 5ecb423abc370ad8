"""The pipeline steps of newswatch and their thin Celery task wrappers.

Every module here except `jobs` is pure or talks to exactly one outside thing
(HTTP for `fetch`, the database through `storage`); `jobs` holds the Celery tasks.
Importing this package imports nothing heavy.
"""
