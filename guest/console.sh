# $ENV of the guest's console shell (notnets-emu console HOST): the same environment
# the agent gives commands (written by the agent once the pools are ready), and a
# prompt that names the host.
if [ -r /run/notnets/env.sh ]; then
    . /run/notnets/env.sh
else
    echo "(the agent has not written /run/notnets/env.sh yet; source it later)"
fi
PS1="$(hostname):\$PWD# "
