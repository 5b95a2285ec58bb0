# The Carnil Analytics exporter: the HTTP API, the Prometheus metrics and the InfluxDB mirror.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CARNIL_DATABASE_URL=sqlite:////data/carnil.db \
    CARNIL_SERVER_HOST=0.0.0.0 CARNIL_SERVER_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# With the postgresql extra (psycopg): the same image runs on SQLite (CARNIL_DATABASE_URL
# below) or on PostgreSQL (postgresql+psycopg://..., docker-compose.scale.yml).
RUN pip install ".[postgresql]" && useradd --system --uid 10001 --home-dir /data carnil \
    && mkdir -p /data && chown carnil /data

USER carnil
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["carnil-analytics"]
CMD ["serve"]
