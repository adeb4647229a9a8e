"""Bring the router and the managed downstream hosts to the rendered state, in a safe order.

    pyinfra inventory.py deploy.py --dry --diff    # every file change and reload, nothing done
    pyinfra inventory.py deploy.py                 # apply, then prove the network converged

The router is applied and verified first; then each downstream. See README.md, "Operating the
network".
"""

from pyinfra import state

from tasks import deploy

run = deploy.current(state)
name = deploy.this_host()

if name == run.plan.router.name:
    deploy.router(run)

# Every host reaches this line: the router finishes (and is verified) before any downstream
# (and its section is prepared first, so a dry run says the router's changes first).
deploy.barrier(run)

# A retired downstream is brought to "nothing of the network" the same way.
if name in run.plan.hosts and name not in run.skipped and run.plan.host(name).role != "router":
    deploy.downstream(run, name)
