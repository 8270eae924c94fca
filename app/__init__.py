"""jobgate: background jobs on Cloudflare Queues from Python."""

__version__ = "0.1.0"
