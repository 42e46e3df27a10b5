"""quotas (daily usage, upload leases) and blob locks

Revision ID: 0005q
Revises: 0003
Create Date: 2026-12-01 21:55:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005q'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('tenant_usage',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Integer(), nullable=False),
    sa.Column('judge_calls', sa.BigInteger(), nullable=False),
    sa.Column('compute_tokens', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'day')
    )
    op.create_table('upload_leases',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('upload_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_leases_tenant_id'), ['tenant_id'], unique=False)
    op.create_table('blob_locks',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('touched_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('blob_locks')
    with op.batch_alter_table('upload_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_leases_tenant_id'))
    op.drop_table('upload_leases')
    op.drop_table('tenant_usage')
