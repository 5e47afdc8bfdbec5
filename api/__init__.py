"""The XRPC service: authentication, uploads, job status and playback."""
