"""The malloc settings both transports' processes get in every benchmark.

With glibc's defaults every fresh 1 MiB Python buffer is a new mmap and costs ~256 page
faults (milliseconds per message on this project's VMs, for grpcio and NotNets alike),
which would measure the kernel's page-fault path rather than the transport. These keep
freed memory for reuse; both transports get the same environment, so the comparison
stays fair. scripts/bench_rpc.py and `notnets-emu bench` both apply them.
"""

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
