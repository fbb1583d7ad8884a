# syntax=docker/dockerfile:1
# One image for every arflow process:
#   API (default):  uvicorn api.app:create_app --factory --host 0.0.0.0 --port 8000
#   worker:         python worker.py
#   migrations:     alembic upgrade head      (URL from ARFLOW_DATABASE_URL)
# All configuration comes from ARFLOW_* environment variables (arflow/config.py). Settings
# default to ARFLOW_ENVIRONMENT=production, which refuses to start without ARFLOW_API_KEYS,
# ARFLOW_WEBHOOK_SECRET, ARFLOW_SESSION_SECRET and ARFLOW_LINK_SECRET of 32+ characters each
# (docker-compose.yml lists them; the README says how to generate them).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN groupadd --system --gid 10001 arflow \
    && useradd --system --uid 10001 --gid arflow --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin arflow

# Dependencies first, from pyproject.toml alone, so code edits do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself. The source stays in /app: alembic.ini, alembic/ and worker.py are
# used from the working directory.
COPY . .
RUN pip install . \
    && rm -rf build ./*.egg-info \
    && mkdir -p /data \
    && chown arflow:arflow /data

USER arflow

ENV ARFLOW_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

CMD ["uvicorn", "api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
