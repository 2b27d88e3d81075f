"""connections to the requesting node (a null target), interfaces named by type, the
destination file name; job outputs delivered to the requesting node

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workflow_connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source_interface_type', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('target_interface_type', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('destination_file_name', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.alter_column('target_node_id', existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table('job_execution_interfaces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivered_as', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job_execution_interfaces', schema=None) as batch_op:
        batch_op.drop_column('delivered_as')
    op.execute("DELETE FROM workflow_connections WHERE target_node_id IS NULL")
    with op.batch_alter_table('workflow_connections', schema=None) as batch_op:
        batch_op.alter_column('target_node_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('destination_file_name')
        batch_op.drop_column('target_interface_type')
        batch_op.drop_column('source_interface_type')
