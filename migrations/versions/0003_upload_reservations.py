"""Quota reserved before bytes are stored, and multipart upload sessions.

Reservations (one row per upload in progress, summed on the DID's daily row) make the quota
hold while bytes stream; sessions and parts carry the multipart protocol (issue 14).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("video_upload_limit") as batch:
        batch.add_column(sa.Column("reserved_videos", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("reserved_bytes", sa.BigInteger, nullable=False,
                                   server_default="0"))
    op.create_table(
        "video_upload_reservation",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("did", sa.String(255), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_video_upload_reservation_expires", "video_upload_reservation",
                    ["expires_at"])
    op.create_table(
        "video_open_uploads",
        sa.Column("did", sa.String(255), primary_key=True),
        sa.Column("open", sa.Integer, nullable=False),
    )
    op.create_table(
        "video_upload_session",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("did", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("part_size", sa.BigInteger, nullable=False),
        sa.Column("part_count", sa.Integer, nullable=False),
        sa.Column("mime_type", sa.String(255)),
        sa.Column("upload_name", sa.String(256)),
        sa.Column("storage_ref", sa.String(1024)),
        sa.Column("failure_reason", sa.String(1024)),
        sa.Column("completed_job_id", sa.String(64)),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_video_upload_session_state_expires", "video_upload_session",
                    ["state", "expires_at"])
    op.create_table(
        "video_upload_part",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("part_number", sa.Integer, primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("tag", sa.String(256), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("video_upload_part")
    op.drop_index("ix_video_upload_session_state_expires", "video_upload_session")
    op.drop_table("video_upload_session")
    op.drop_table("video_open_uploads")
    op.drop_index("ix_video_upload_reservation_expires", "video_upload_reservation")
    op.drop_table("video_upload_reservation")
    with op.batch_alter_table("video_upload_limit") as batch:
        batch.drop_column("reserved_bytes")
        batch.drop_column("reserved_videos")
