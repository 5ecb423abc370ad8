# One image for every role: worker, beat, init and flower (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
COPY storage ./storage
COPY seeds ./seeds
RUN pip install -e ".[ops]" \
    && useradd --create-home --uid 1000 newswatch \
    && mkdir -p /data && chown newswatch /data

USER newswatch
ENV NEWSWATCH_DATA_DIR=/data
ENTRYPOINT ["newswatch"]
CMD ["--help"]
