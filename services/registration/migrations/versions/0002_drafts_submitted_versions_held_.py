"""drafts, submitted versions, held certificates, level raises, continuing-education records, proof files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 20:58:25.055475
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ce_records',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('record_id', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=True),
    sa.Column('id_number', sa.String(length=18), nullable=True),
    sa.Column('course', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=200), nullable=False),
    sa.Column('hours_tenths', sa.Integer(), nullable=False),
    sa.Column('completed_on', sa.Date(), nullable=False),
    sa.Column('withdrawn', sa.Boolean(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'record_id')
    )
    with op.batch_alter_table('ce_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ce_records_id_number'), ['id_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_ce_records_person_id'), ['person_id'], unique=False)

    op.create_table('certificates',
    sa.Column('certificate_number', sa.String(length=20), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('application_id', sa.String(length=36), nullable=True),
    sa.Column('level', sa.String(length=20), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=False),
    sa.Column('issued_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('superseded_by', sa.String(length=20), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('certificate_number')
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_person_id'), ['person_id'], unique=False)

    op.create_table('level_raises',
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('previous_level', sa.String(length=20), nullable=False),
    sa.Column('new_level', sa.String(length=20), nullable=False),
    sa.Column('management_number', sa.String(length=40), nullable=False),
    sa.Column('exam_year', sa.Integer(), nullable=False),
    sa.Column('raised_at', sa.DateTime(), nullable=False),
    sa.Column('resolved_at', sa.DateTime(), nullable=True),
    sa.Column('resolved_by_certificate', sa.String(length=20), nullable=True),
    sa.PrimaryKeyConstraint('person_id')
    )
    op.create_table('proof_files',
    sa.Column('proof_key', sa.String(length=200), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('filename', sa.String(length=200), nullable=False),
    sa.Column('content_type', sa.String(length=50), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('size', sa.Integer(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('verified_at', sa.DateTime(), nullable=True),
    sa.Column('application_id', sa.String(length=36), nullable=True),
    sa.Column('released_at', sa.DateTime(), nullable=True),
    sa.Column('submitted', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('proof_key')
    )
    with op.batch_alter_table('proof_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_proof_files_application_id'), ['application_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_proof_files_person_id'), ['person_id'], unique=False)

    op.create_table('submissions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('application_id', sa.String(length=36), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('snapshot', sa.Text(), nullable=False),
    sa.Column('form', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['application_id'], ['applications.application_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('application_id', 'round')
    )
    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_submissions_application_id'), ['application_id'], unique=False)

    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('level', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('form', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('snapshot_revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('profile_revision_seen', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('round', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('open_person_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('previous_certificate_number', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('original_no_key', sa.String(length=10), nullable=True))
        batch_op.alter_column('committed_at', existing_type=sa.DateTime(), nullable=True)
        batch_op.alter_column('submitted_at', existing_type=sa.DateTime(), nullable=True)
        batch_op.create_index(batch_op.f('ix_applications_original_no_key'), ['original_no_key'], unique=False)
        batch_op.create_unique_constraint('uq_applications_open_person_id', ['open_person_id'])

    # Applications made before drafts existed were all submitted once (first registrations, one per
    # person): each gets round 1, its submitted version, and holds the person's open slot until issued.
    op.execute("UPDATE applications SET created_at = submitted_at, round = 1")
    op.execute("UPDATE applications SET open_person_id = person_id "
               "WHERE status NOT IN ('已出证', '已出证待升级')")
    op.execute("INSERT INTO submissions (application_id, round, submitted_at, actor, snapshot) "
               "SELECT application_id, 1, submitted_at, person_id, snapshot FROM applications")



def downgrade() -> None:
    # Drafts have no submission time; they cannot exist in the old schema.
    op.execute("DELETE FROM status_changes WHERE application_id IN "
               "(SELECT application_id FROM applications WHERE submitted_at IS NULL)")
    op.execute("DELETE FROM applications WHERE submitted_at IS NULL")
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.drop_constraint('uq_applications_open_person_id', type_='unique')
        batch_op.drop_index(batch_op.f('ix_applications_original_no_key'))
        batch_op.drop_column('original_no_key')
        batch_op.drop_column('previous_certificate_number')
        batch_op.drop_column('open_person_id')
        batch_op.drop_column('round')
        batch_op.drop_column('profile_revision_seen')
        batch_op.drop_column('snapshot_revision')
        batch_op.drop_column('form')
        batch_op.drop_column('level')
        batch_op.drop_column('created_at')
        batch_op.alter_column('submitted_at', existing_type=sa.DateTime(), nullable=False)
        batch_op.alter_column('committed_at', existing_type=sa.DateTime(), nullable=False)

    with op.batch_alter_table('submissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submissions_application_id'))

    op.drop_table('submissions')
    with op.batch_alter_table('proof_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_proof_files_person_id'))
        batch_op.drop_index(batch_op.f('ix_proof_files_application_id'))

    op.drop_table('proof_files')
    op.drop_table('level_raises')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_person_id'))

    op.drop_table('certificates')
    with op.batch_alter_table('ce_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ce_records_person_id'))
        batch_op.drop_index(batch_op.f('ix_ce_records_id_number'))

    op.drop_table('ce_records')
