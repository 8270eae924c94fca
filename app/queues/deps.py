"""Request dependencies of the queue controls (the component comes from `app/bootstrap.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.deps import component
from app.queues.service import QueueControls

QueueControlsDep = Annotated[QueueControls, Depends(component("queue_controls"))]
