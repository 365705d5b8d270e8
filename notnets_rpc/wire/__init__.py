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
coherent; see docs/rpc.md): the hooks belong in ``ring.py``, and only there, because
the rings are where one host publishes bytes that another reads:
- write back before publish: in ``RingWriter.put``/``try_write``/``_make_room``, after
  the frame (or pad) bytes are copied and before the store of ``head`` (and after that
  store, the line holding ``head``);
- invalidate before read: in ``RingReader.read``/``_read_any``, before loading ``head``
  (its line) and before copying a frame's header and body (their lines); the writer
  likewise invalidates the line holding the consumer's ``tail`` before loading it.
Directory and channel control words (layout.py offsets, written by pool.py) need the
same pair: write back after each store, invalidate before each load of a word another
host writes. ``Memory`` is the one class through which every access goes, so a
flushing ``Memory`` subclass can implement both without touching the protocol.
"""
