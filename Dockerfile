# One image for the web app and the worker; docker-compose.yml picks the command for each.
#   docker build -t jobpulse .
#   docker run -e REDIS_URL=redis://host:6379/0 -p 8000:8000 jobpulse                # web
#   docker run -e REDIS_URL=redis://host:6379/0 jobpulse arq worker.WorkerSettings     # worker
#
# The base is pinned to a patch release; bump it on purpose. To pin it byte for byte, add its digest:
#   docker buildx imagetools inspect python:3.11.13-slim-bookworm    # prints "Digest: sha256:..."
#   FROM python:3.11.13-slim-bookworm@sha256:<that digest>
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin jobpulse

WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobpulse ./jobpulse
COPY web ./web
COPY worker ./worker
# Installs the library (`jobpulse`, the only package in the wheel); `web/` and `worker/` stay here, in
# the working directory, where uvicorn and arq import the reference service from.
RUN pip install --no-cache-dir ".[demo]" && rm -rf build *.egg-info
# The uploads volume: a new named volume takes this directory's owner, so the non-root user can write it.
RUN mkdir -p /data/uploads && chown jobpulse:jobpulse /data/uploads

USER jobpulse
EXPOSE 8000
CMD ["uvicorn", "web.app:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "5"]
