"""fine-tune-only experiments: an experiment may start from an aligned model, with no alignment set

Revision ID: 0006
Revises: 0005q
Create Date: 2026-12-01 21:40:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005q'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.alter_column('alignment_dataset_id', existing_type=sa.String(length=48), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('experiments', schema=None) as batch_op:
        batch_op.alter_column('alignment_dataset_id', existing_type=sa.String(length=48), nullable=False)
