"""One live job per (DID, content): a partial unique index closes the dedup race.

Two API replicas receiving the same bytes from the same DID at once would both pass the
"find duplicate" check; with this index the second insert fails and the caller answers with the
existing job. Failed jobs are outside the index, so a user may retry the same file.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LIVE = sa.text("state != 'JOB_STATE_FAILED'")


def upgrade() -> None:
    op.create_index(
        "uq_video_job_live_upload",
        "video_job",
        ["did", "content_hash"],
        unique=True,
        postgresql_where=_LIVE,
        sqlite_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_video_job_live_upload", "video_job")
