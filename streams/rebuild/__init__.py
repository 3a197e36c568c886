"""The bulk rebuild: all state from the input topics, in shard processes, without faust."""
