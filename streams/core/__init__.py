"""The pure core: values in, values out; no faust, no Kafka client (checked by the import contract)."""
