"""The client side: ``Channel`` (a ``grpc.Channel``), its connection to one server
over one channel slot, and the calls it carries. See docs/rpc.md, "Concurrency"."""
