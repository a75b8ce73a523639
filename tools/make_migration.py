"""Write a new Alembic revision for a service by comparing its models with its migrations.

  python -m tools.make_migration <service> "message"

Autogenerates against a scratch SQLite database brought to head; review the file before committing.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from swms.config import REPO_ROOT
from swms.migrations import alembic_config, upgrade

ENV_PY = '''"""Alembic environment: the shared logic lives in swms.migrations."""
from alembic import context

from swms.migrations import run_env

run_env(context)
'''

SCRIPT_MAKO = '''"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


def main(service: str, message: str) -> None:
    folder = REPO_ROOT / "services" / service / "migrations"
    (folder / "versions").mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text(ENV_PY)
    (folder / "script.py.mako").write_text(SCRIPT_MAKO)
    with tempfile.TemporaryDirectory() as scratch:
        url = f"sqlite:///{Path(scratch) / 'scratch.db'}"
        upgrade(service, url)
        count = len(list((folder / "versions").glob("*.py")))
        command.revision(alembic_config(service, url), message=message, autogenerate=True,
                         rev_id=f"{count + 1:04d}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
