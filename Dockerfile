# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JOBGATE_HOST=0.0.0.0 \
    JOBGATE_ENVIRONMENT=production \
    JOBGATE_WRANGLER_CONFIG=/app/wrangler.jsonc \
    JOBGATE_ALEMBIC_INI=/app/alembic.ini \
    JOBGATE_DATABASE_URL=sqlite:////data/jobgate.db
RUN useradd --system --uid 10001 --home-dir /app jobgate \
 && mkdir -p /data && chown jobgate /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini wrangler.jsonc ./
COPY alembic ./alembic
USER jobgate
EXPOSE 8000
# Migrations are a separate step: `docker run IMAGE jobgate db upgrade`.
# The consumer runs from the same image: `docker run IMAGE jobgate consume`.
ENTRYPOINT []
CMD ["jobgate", "serve"]
