"""applications: where review has it (round, level, stage, outcome)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:27:18.883191
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_round', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('review_level', sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column('review_stage', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('review_outcome', sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.drop_column('review_outcome')
        batch_op.drop_column('review_stage')
        batch_op.drop_column('review_level')
        batch_op.drop_column('review_round')
