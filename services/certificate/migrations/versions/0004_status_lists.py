"""status lists: W3C Bitstring Status Lists (revocation, suspension) and each certificate's entry

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('status_lists',
    sa.Column('list_number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('allocated', sa.Integer(), nullable=False),
    sa.Column('revocation_bits', sa.LargeBinary(), nullable=False),
    sa.Column('suspension_bits', sa.LargeBinary(), nullable=False),
    sa.Column('revocation_version', sa.Integer(), nullable=False),
    sa.Column('suspension_version', sa.Integer(), nullable=False),
    sa.Column('revocation_updated_at', sa.DateTime(), nullable=False),
    sa.Column('suspension_updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('list_number')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status_list', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('status_index', sa.Integer(), nullable=True))
        batch_op.create_index('ux_certificates_status_entry', ['status_list', 'status_index'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index('ux_certificates_status_entry')
        batch_op.drop_column('status_index')
        batch_op.drop_column('status_list')
    op.drop_table('status_lists')
