"""Plumbing below faust: plain aiokafka clients (direct ingest, offsets), record batches and
RocksDB write batches, the embedded broker, process memory."""
