"""screening shards: the slices of a sharded screening's customer rows, each a run of its own

Revision ID: 0008
Revises: 0007w
Create Date: 2026-12-02 19:40:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007w'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'screening_shards',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('screening_id', sa.String(length=48), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('index', sa.Integer(), nullable=False),
        sa.Column('start', sa.Integer(), nullable=False),
        sa.Column('stop', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('progress', sa.Float(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(length=96), nullable=True),
        sa.Column('heartbeat_at', sa.BigInteger(), nullable=True),
        sa.Column('started_at', sa.BigInteger(), nullable=True),
        sa.Column('finished_at', sa.BigInteger(), nullable=True),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.Column('error', sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(['screening_id'], ['screenings.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_screening_shards_screening_id', 'screening_shards', ['screening_id'], unique=False)
    op.create_index('ix_screening_shards_status', 'screening_shards', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_screening_shards_status', table_name='screening_shards')
    op.drop_index('ix_screening_shards_screening_id', table_name='screening_shards')
    op.drop_table('screening_shards')
