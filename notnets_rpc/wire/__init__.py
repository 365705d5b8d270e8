"""The wire format: pool layout, frames, rings and message reassembly.

Pure protocol logic over a buffer: nothing in wire/ starts a thread, sleeps, takes a
lock, reads a clock or opens a file, so property tests can drive every function with
arbitrary bytes. Memory comes in as an object with ``memory.Memory``'s methods (aligned
8-byte ``load``/``store`` of control words, range-checked ``read``/``write``); every
length, offset and counter read through it is untrusted and checked before use.

    layout.py    superblock, host table, directory entries, channel control blocks
    frames.py    the 16-byte frame header, frame kinds, CALL/STATUS bodies, metadata
    ring.py      single-producer single-consumer rings of frames (the one frame parser)
    messages.py  reassembly of a message that travels in several MESSAGE frames

Software coherence (a CXL pool shared by hosts whose caches the device does not keep
coherent; docs/coherence.md): on a pool whose superblock says so (layout.py flags),
pool.py hands these modules a ``coherent_memory.SoftwareCoherent`` instead of a plain
``Memory``. It invalidates the lines of every load and read (and of a partial-line
write) and writes back the lines of every store and write, so the rings' publish order
(frame, then ``head``; copy out, then ``tail``) carries over to hardware that is not
coherent with no change here. Defining those methods turns off the rings' direct
indexing (``Memory.views``), so no access escapes. The rule for other implementations
is in docs/pool-layout.md, "Software coherence".
"""
