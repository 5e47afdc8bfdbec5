"""atproto-video: a video processing service for the AT Protocol (app.bsky.video.*)."""

__version__ = "0.1.0"
