module local/atproto-video-pause

go 1.24.0
