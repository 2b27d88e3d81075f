"""job keys: what decides a job's outputs, hashed

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job_executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_key', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('job_executions', schema=None) as batch_op:
        batch_op.drop_column('job_key')
