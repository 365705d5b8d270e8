"""SpinBudget: how many turns the loop polls before it also yields the CPU, learnt from
where answers came (pure logic)."""

from notnets_rpc.aio.spin import PROBE, SPIN_FLOOR, SPIN_MAX, SpinBudget


def _wait(spin: SpinBudget, answer_after: int) -> int:
    budget = spin.budget()
    spin.learn(answer_after, budget)
    return budget


def test_a_peer_that_needs_our_cpu_gets_it_early_and_a_probe_finds_when_it_no_longer_does():
    spin = SpinBudget()
    for _ in range(8):  # answers right after the first yield: the peer shares our CPU
        _wait(spin, spin.turns + 1)
    assert spin.turns == SPIN_FLOOR
    budgets = []
    while not budgets or budgets[-1] != SPIN_MAX:  # the peer moved: answers in 3 turns
        budgets.append(_wait(spin, 3))
        assert len(budgets) <= PROBE
    assert set(budgets[:-1]) == {SPIN_FLOOR}  # yielding early until a probe with the whole budget ...
    assert spin.turns == SPIN_MAX             # ... saw the answer while polling only


def test_a_slow_answer_teaches_nothing():
    spin = SpinBudget()
    _wait(spin, spin.turns + 1)
    turns = spin.turns
    _wait(spin, 10_000)  # the server's handler was slow: no news about CPUs
    assert spin.turns == turns
