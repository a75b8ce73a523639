"""Alembic environment: the shared logic lives in swms.migrations."""
from alembic import context

from swms.migrations import run_env

run_env(context)
