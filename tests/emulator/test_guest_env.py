"""What exec hands the guest: the caller's cwd where the guest sees it, and NOTNETS_* vars."""

from emulator.runs.guest_env import forwarded_env, guest_cwd


def test_cwd_passes_unless_it_is_a_guest_kernel_fs():
    assert guest_cwd("/work/main") == "/work/main"
    assert guest_cwd("/tmp") == "/tmp"
    assert guest_cwd("/proc/self") is None
    assert guest_cwd("/dev") is None
    assert guest_cwd("/device-like-name") == "/device-like-name"


def test_only_notnets_vars_and_not_the_guest_owned_ones():
    env = forwarded_env({"PATH": "/x", "NOTNETS_DEBUG": "1", "NOTNETS_POOL": "/dev/x",
                         "NOTNETS_HOST_ID": "9", "NOTNETS_POOL_A": "y"}, "r", "/s")
    assert env == {"NOTNETS_DEBUG": "1", "NOTNETS_RUN": "r", "NOTNETS_STATE_DIR": "/s"}
