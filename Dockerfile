FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
RUN pip install --no-cache-dir .
ENV RECSTREAM_WEB_HOST=0.0.0.0 \
    RECSTREAM_DATA_DIR=/data
VOLUME /data
EXPOSE 6066
CMD ["recstream", "worker", "-l", "info"]
