"""service policy: access, allowed peers, command/args/network flags and limit overrides

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('access', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column('allowed_peers', sa.JSON(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('allow_command', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
        batch_op.add_column(sa.Column('allow_args', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('allow_network', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('limits', sa.JSON(), nullable=False,
                                      server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_column('limits')
        batch_op.drop_column('allow_network')
        batch_op.drop_column('allow_args')
        batch_op.drop_column('allow_command')
        batch_op.drop_column('allowed_peers')
        batch_op.drop_column('access')
