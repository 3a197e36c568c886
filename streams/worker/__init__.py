"""The faust worker: the app, topics, tables, the batched state commit, patches, the web server."""
