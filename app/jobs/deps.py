"""Request dependencies of the jobs domain (the components come from `app/bootstrap.py`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.jobs.submitter import JobSubmitter


async def get_submitter(request: Request) -> JobSubmitter:
    submitter: JobSubmitter = request.app.state.submitter
    return submitter


SubmitterDep = Annotated[JobSubmitter, Depends(get_submitter)]
