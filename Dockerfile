FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home recstream \
    && mkdir /data && chown recstream /data
ENV RECSTREAM_WEB_HOST=0.0.0.0 \
    RECSTREAM_DATA_DIR=/data
# /data is created and owned before VOLUME, so a new volume starts owned by the worker's user
VOLUME /data
USER recstream
EXPOSE 6066
# the log level: RECSTREAM_LOG_LEVEL (a -l here would override it)
CMD ["recstream", "worker"]
