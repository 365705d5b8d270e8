"""The server side: ``Server`` (a ``grpc.Server``), the channels it serves, the calls
it runs and how it answers them. See docs/rpc.md, "Concurrency".

(Named ``serving`` rather than ``server``: ``notnets_rpc.server`` is the public
factory function, like ``grpc.server``.)"""
