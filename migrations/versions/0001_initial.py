"""Initial schema: video_job and video_upload_limit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "video_job",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("did", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("failure_code", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("message", sa.Text),
        sa.Column("mime_type", sa.String(255)),
        sa.Column("upload_name", sa.String(255)),
        sa.Column("source_size", sa.BigInteger, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("output_size", sa.BigInteger),
        sa.Column("cid", sa.String(100)),
        sa.Column("blob", sa.JSON),
        sa.Column("executor", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("pds_url", sa.String(512)),
        sa.Column("upload_token", sa.LargeBinary),
        sa.Column("token_expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_video_job_did_hash", "video_job", ["did", "content_hash"])
    op.create_index("ix_video_job_did_cid", "video_job", ["did", "cid"])
    op.create_index("ix_video_job_state", "video_job", ["state"])
    op.create_table(
        "video_upload_limit",
        sa.Column("did", sa.String(255), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("videos", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("video_upload_limit")
    op.drop_index("ix_video_job_state", "video_job")
    op.drop_index("ix_video_job_did_cid", "video_job")
    op.drop_index("ix_video_job_did_hash", "video_job")
    op.drop_table("video_job")
