"""NotNets emulator, host side: topologies of QEMU (or simulated) hosts sharing CXL pools."""

__version__ = "0.1.0"
