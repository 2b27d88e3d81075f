"""receipts: each job's signed receipt and output references, a reused job's source, a resumed execution's origin

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('receipt', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('receipt_digest', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=False, server_default=''))
        batch_op.add_column(sa.Column('output_refs', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('cached_from', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=False, server_default=''))
        batch_op.create_index('ix_job_executions_job_key', ['job_key'], unique=False)
    with op.batch_alter_table('workflow_executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resumed_from', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workflow_executions', schema=None) as batch_op:
        batch_op.drop_column('resumed_from')
    with op.batch_alter_table('job_executions', schema=None) as batch_op:
        batch_op.drop_index('ix_job_executions_job_key')
        batch_op.drop_column('cached_from')
        batch_op.drop_column('output_refs')
        batch_op.drop_column('receipt_digest')
        batch_op.drop_column('receipt')
