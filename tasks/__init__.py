"""ownas: render and deploy a small FreeBSD Autonomous System from one pyinfra inventory.

The pipeline, one module per stage:

    inventory.py/group_data  ->  tasks.inventory   (pyinfra's own loader)
                             ->  tasks.model       (typed, validated dataclasses)
                             ->  tasks.plan        (address plan: tunnels, routes, FIBs)
                             ->  tasks.render      (jinja2 templates -> files per host)
                             ->  tasks.operations  (stage, validate, ordered reload)
                             ->  tasks.checks      (convergence)
"""
