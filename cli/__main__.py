"""``python -m atproto_video.cli``: the same as the ``atproto-video`` console script."""

from atproto_video.cli import main

raise SystemExit(main())
