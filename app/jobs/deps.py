"""Request dependencies of the jobs domain (the components come from `app/bootstrap.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.core.deps import component
from app.jobs.operations import JobOperations
from app.jobs.submitter import JobSubmitter

SubmitterDep = Annotated[JobSubmitter, Depends(component("submitter"))]
JobOperationsDep = Annotated[JobOperations, Depends(component("job_operations"))]
