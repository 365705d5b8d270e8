"""The non-coherent pool model over plain buffers (notnets_rpc/noncoherent.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from notnets_rpc.noncoherent import CHUNK, LINE, WORD, HostCache

HOSTS = 3
SIZE = 3 * CHUNK  # three chunks: ranges cross the chunk boundaries the model compares by


def word(value: int) -> bytes:
    return value.to_bytes(8, "little")


class Pool:
    """A device and HOSTS hosts, all in sync at the start."""

    def __init__(self, size: int = SIZE, hosts: int = HOSTS) -> None:
        self.device = bytearray(size)
        self.views = [bytearray(size) for _ in range(hosts)]
        self.bases = [bytearray(size) for _ in range(hosts)]
        self.writers = bytearray(size // LINE * 2)
        self.caches = [HostCache(h, self.device, self.views[h], self.bases[h], self.writers,
                                 [(p, self.views[p], self.bases[p]) for p in range(hosts) if p != h])
                       for h in range(hosts)]

    def store(self, host: int, off: int, value: int) -> None:
        self.views[host][off : off + WORD] = word(value)

    def load(self, host: int, off: int) -> int:
        return int.from_bytes(self.views[host][off : off + WORD], "little")


class Reference:
    """The hardware the model stands for, line by line and without shortcuts: every line
    starts cached in every host; a write-back sends a dirty line whole, an invalidate
    writes back and then refetches the whole line."""

    def __init__(self, size: int = SIZE, hosts: int = HOSTS) -> None:
        self.device = bytearray(size)
        self.views = [bytearray(size) for _ in range(hosts)]
        self.synced = [bytearray(size) for _ in range(hosts)]
        self.overwrites: list[tuple[int, int]] = []

    def lines(self, off: int, n: int) -> range:
        if n == 0:
            return range(0)
        return range(off // LINE, (off + n - 1) // LINE + 1)

    def write_back(self, host: int, off: int, n: int) -> None:
        for line in self.lines(off, n):
            s = slice(line * LINE, (line + 1) * LINE)
            if self.views[host][s] != self.synced[host][s]:
                if self.device[s] != self.synced[host][s]:
                    self.overwrites.append((host, line * LINE))
                self.device[s] = self.views[host][s]
                self.synced[host][s] = self.views[host][s]

    def invalidate(self, host: int, off: int, n: int) -> None:
        self.write_back(host, off, n)
        for line in self.lines(off, n):
            s = slice(line * LINE, (line + 1) * LINE)
            self.views[host][s] = self.device[s]
            self.synced[host][s] = self.device[s]


# Words in a few lines, some at chunk edges, so that hosts meet on lines and ranges cross chunks.
HOT_LINES = [0, 1, 63, 64, 65, 127, 128, 191]
words = st.builds(lambda line, w: line * LINE + w * WORD, st.sampled_from(HOT_LINES), st.integers(0, 7))
hosts = st.integers(0, HOSTS - 1)


@st.composite
def ranges(draw):
    off = draw(st.sampled_from([l * LINE for l in HOT_LINES]) | st.integers(0, SIZE - 1))
    n = draw(st.integers(0, min(SIZE - off, 3 * CHUNK)))
    return off, n


ops = st.one_of(
    st.tuples(st.just("store"), hosts, words, st.integers(0, 2**64 - 1)),
    st.tuples(st.just("flush"), hosts, ranges()),
    st.tuples(st.just("invalidate"), hosts, ranges()),
    st.tuples(st.just("evict"), hosts, st.sampled_from(HOT_LINES)),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(ops, max_size=40))
def test_the_model_moves_bytes_as_the_line_by_line_reference_does(program):
    pool, ref = Pool(), Reference()
    overwrites = []
    for op in program:
        kind, host = op[0], op[1]
        if kind == "store":
            pool.store(host, op[2], op[3])
            ref.views[host][op[2] : op[2] + WORD] = word(op[3])
        elif kind == "flush":
            overwrites += [c for c in pool.caches[host].write_back(*op[2]) if c.kind == "overwrite"]
            ref.write_back(host, *op[2])
        elif kind == "invalidate":
            overwrites += [c for c in pool.caches[host].invalidate(*op[2]) if c.kind == "overwrite"]
            ref.invalidate(host, *op[2])
        else:
            overwrites += [c for c in pool.caches[host].evict(op[2]) if c.kind == "overwrite"]
            ref.invalidate(host, op[2] * LINE, LINE)
        assert pool.device == ref.device
        for h in range(HOSTS):
            assert pool.views[h] == ref.views[h]
            assert pool.bases[h] == ref.synced[h]
    assert [(c.host, c.offset) for c in overwrites] == ref.overwrites


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(hosts, st.integers(0, 7), st.integers(0, 2**64 - 1)), max_size=30))
def test_with_one_writer_per_line_and_the_discipline_readers_see_every_write_and_nothing_conflicts(writes):
    """Line l belongs to host l % HOSTS; a writer writes back after each store, a reader
    invalidates before each load."""
    pool = Pool()
    latest: dict[int, int] = {}
    for writer, w, value in writes:
        line = HOT_LINES[(w + writer) % len(HOT_LINES)]
        writer = line % HOSTS
        off = line * LINE + w * WORD
        pool.store(writer, off, value)
        assert pool.caches[writer].write_back(off, WORD) == []
        latest[off] = value
        for reader in range(HOSTS):
            assert pool.caches[reader].invalidate(off, WORD) == []
            assert pool.load(reader, off) == value
    for off, value in latest.items():
        for reader in range(HOSTS):
            pool.caches[reader].invalidate(0, SIZE)
            assert pool.load(reader, off) == value


def test_a_write_without_write_back_stays_in_the_writers_view():
    pool = Pool()
    pool.store(0, 128, 7)
    pool.caches[1].invalidate(128, 8)
    assert pool.load(1, 128) == 0
    assert pool.caches[0].dirty_lines() == [128]
    pool.caches[0].write_back(128, 8)
    assert pool.load(1, 128) == 0  # written back, but host 1 still reads its own copy
    assert pool.caches[1].stale_lines() == [128]
    pool.caches[1].invalidate(128, 8)
    assert pool.load(1, 128) == 7


def test_false_sharing_loses_an_update_and_is_reported_with_both_hosts():
    pool = Pool()
    pool.store(0, 64, 1)           # host 0 owns word 0 of line 1
    pool.store(1, 72, 2)           # host 1 owns word 1 of the same line
    assert [c.kind for c in pool.caches[0].write_back(64, 8)] == ["both-dirty"]
    (conflict,) = pool.caches[1].write_back(72, 8)
    assert (conflict.kind, conflict.host, conflict.other, conflict.offset) == ("overwrite", 1, 0, 64)
    assert conflict.words == (64,) and not conflict.same_words
    assert "false sharing" in conflict.describe("channel 0/0 line 1")
    assert int.from_bytes(pool.device[64:72], "little") == 0  # host 0's word is gone from the device


def test_two_writers_of_one_word_are_reported_as_same_words():
    pool = Pool()
    pool.store(0, 0, 1)
    pool.caches[0].write_back(0, 8)
    pool.store(1, 0, 2)
    (conflict,) = pool.caches[1].write_back(0, 8)
    assert conflict.same_words and conflict.other == 0


def test_a_refetch_leaves_alone_a_word_stored_by_this_host_meanwhile():
    """A store by a process of the host lands between the clean check and the refetch:
    only the words the device changed are taken."""
    pool = Pool()
    pool.store(0, 8, 5)
    pool.caches[0].write_back(0, 64)          # host 0 wrote word 1 of line 0
    device, base = bytes(pool.device[0:64]), bytes(pool.bases[1][0:64])
    pool.store(1, 0, 9)                       # host 1's process stores word 0 "meanwhile"
    pool.caches[1]._refetch(0, 64, device, base)
    assert pool.load(1, 0) == 9 and pool.load(1, 8) == 5
    assert pool.caches[1].dirty_lines() == [0]


def test_ranges_are_checked_and_rounded_out_to_lines():
    pool = Pool()
    pool.store(0, 0, 1)
    pool.store(0, SIZE - 8, 2)
    pool.caches[0].write_back(63, 2)  # touches lines 0 and 1
    assert pool.caches[0].dirty_lines() == [SIZE - LINE]
    for bad in ((-1, 2), (SIZE - 4, 8), (0, -1)):
        try:
            pool.caches[0].write_back(*bad)
        except ValueError as exc:
            assert "outside the pool" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_a_write_back_leaves_a_stale_line_of_another_host_alone():
    """Host 0 writes back a range whose chunk holds a line host 1 wrote meanwhile."""
    pool = Pool()
    pool.store(1, CHUNK, 1)
    pool.caches[1].write_back(CHUNK, 8)
    pool.store(0, CHUNK + LINE, 2)
    assert pool.caches[0].write_back(0, 2 * CHUNK) == []
    assert int.from_bytes(pool.device[CHUNK : CHUNK + 8], "little") == 1
    assert int.from_bytes(pool.device[CHUNK + LINE : CHUNK + LINE + 8], "little") == 2


def test_a_restarted_host_loses_what_it_had_not_written_back():
    pool = Pool()
    pool.store(0, 0, 1)
    pool.store(1, 64, 2)
    pool.caches[1].write_back(64, 8)
    pool.caches[0].reset()
    assert pool.load(0, 0) == 0 and pool.load(0, 64) == 2
    assert pool.caches[0].dirty_lines() == [] and pool.caches[0].stale_lines() == []
