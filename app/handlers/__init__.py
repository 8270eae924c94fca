"""The company's job handlers, one module per job family.

Importing this package registers every handler on `app.consumer.registry.registry`.
"""

from app.handlers import agent, analytics, email, images, sync

__all__ = ["agent", "analytics", "email", "images", "sync"]
