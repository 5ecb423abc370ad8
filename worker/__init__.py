"""The newswatch Celery application, its settings, beat schedule and command line."""
