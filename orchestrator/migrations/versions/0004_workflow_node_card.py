"""workflow node card: how the original web UI's editor draws a node (service type, order,
interfaces, pricing), kept as it sent them

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workflow_nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('card', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('workflow_nodes', schema=None) as batch_op:
        batch_op.drop_column('card')
