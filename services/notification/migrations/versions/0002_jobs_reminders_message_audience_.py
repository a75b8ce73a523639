"""jobs, reminders; message audience, language, priority, claim, error code and field, expiry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 20:54:41.604105
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('key', sa.String(length=120), nullable=False),
    sa.Column('task', sa.String(length=60), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=True),
    sa.Column('reference', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('give_up_at', sa.DateTime(), nullable=True),
    sa.Column('error_code', sa.String(length=40), nullable=True),
    sa.Column('error_field', sa.String(length=100), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('done_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('job_id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_person_id'), ['person_id'], unique=False)

    op.create_table('reminders',
    sa.Column('reminder_id', sa.String(length=36), nullable=False),
    sa.Column('certificate_number', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('done_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('reminder_id'),
    sa.UniqueConstraint('certificate_number', 'kind', name='uq_reminders_certificate_kind')
    )
    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.create_index('ix_reminders_due', ['status', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_reminders_person_id'), ['person_id'], unique=False)

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('audience', sa.String(length=10), server_default=sa.text("'person'"), nullable=False))
        batch_op.add_column(sa.Column('reference', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('language', sa.String(length=20), server_default=sa.text("'zh-CN'"), nullable=False))
        batch_op.add_column(sa.Column('priority', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('claim_token', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('give_up_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_attempt_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('error_code', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('error_field', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('sensitive', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
        batch_op.alter_column('person_id',
               existing_type=sa.VARCHAR(length=36),
               nullable=True)
        batch_op.create_index('ix_messages_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_to_address'), ['to_address'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_to_address'))
        batch_op.drop_index(batch_op.f('ix_messages_job_id'))
        batch_op.drop_index('ix_messages_due')
        batch_op.alter_column('person_id',
               existing_type=sa.VARCHAR(length=36),
               nullable=False)
        batch_op.drop_column('expires_at')
        batch_op.drop_column('sensitive')
        batch_op.drop_column('error_field')
        batch_op.drop_column('error_code')
        batch_op.drop_column('last_attempt_at')
        batch_op.drop_column('give_up_at')
        batch_op.drop_column('claim_token')
        batch_op.drop_column('priority')
        batch_op.drop_column('language')
        batch_op.drop_column('reference')
        batch_op.drop_column('audience')
        batch_op.drop_column('job_id')

    with op.batch_alter_table('reminders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reminders_person_id'))
        batch_op.drop_index('ix_reminders_due')

    op.drop_table('reminders')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_person_id'))
        batch_op.drop_index('ix_jobs_due')

    op.drop_table('jobs')
