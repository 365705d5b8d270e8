"""Backends run the hosts of a topology: QEMU VMs (qemu/) or process trees (sim/).

base.py is what both implement, by_name.py picks one, agent_client.py talks to the
guest agent in either kind of host."""
