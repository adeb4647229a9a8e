"""The ``ownas`` command: check the inventory, render every file, report the network's state,
run the lab.

Exit status: 0 fine, 1 the inventory has problems (one line each on stderr), 2 usage; for
``status``, 0 converged, 1 not, 2 a host could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

from tasks.inventory import load_inventory
from tasks.model import Downstream, InventoryError
from tasks.plan import Plan, load
from tasks.render import render_all


def _load(path: str) -> Plan:
    """The plan, its warnings said on stderr (they never change the exit status)."""
    plan = load(load_inventory(path))
    for line in plan.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return plan


def _host(network: object) -> str:
    """A source as a person writes it: a host without /32 or /128."""
    full = 32 if network.version == 4 else 128
    return str(network.ip) if network.prefixlen == full else str(network.cidr)


def summary(plan: Plan) -> str:
    """One screen: the AS, the upstreams, every tunnel and delegation."""
    network, router = plan.network, plan.router
    wan = router.wan
    lines = [
        f"AS{network.asn}  prefix {network.prefix}  link subnet {network.link_subnet}",
        f"{router.name}  router-id {router.router_id}  loopback {router.loopback}  "
        f"WAN {wan.interface} {wan.ipv4}" + (f" {wan.ipv6}" if wan.ipv6 else ""),
        "trusted  " + ", ".join(_host(s) for s in network.trusted_sources),
        "",
        "upstreams",
    ]
    tunnels = {t.far_end: t for t in plan.host(router.name).tunnels}
    for upstream in router.upstreams:
        if upstream.tunnel:
            t = tunnels[upstream.name]
            via = f"{t.interface} to {t.destination} (mtu {t.mtu}, mss {t.mss})"
        else:
            via = f"on {wan.interface}"
        lines.append(f"  {upstream.name:<10} AS{upstream.asn:<7} peer {upstream.peer}  {via}")
        policy = [
            f"prefix-list PL-BOGONS and filter-list ASPATH-BOGONS in, "
            f"route-map {upstream.route_map} out"
        ]
        values = sorted(upstream.communities) + sorted(upstream.large_communities)
        if values:
            policy.append("communities " + " ".join(":".join(map(str, c)) for c in values))
        if upstream.prepend:
            policy.append(f"prepend {network.asn} x{upstream.prepend}")
        if upstream.max_prefixes:
            policy.append(f"at most {upstream.max_prefixes} prefixes")
        lines.append(f"  {'':<10} {'; '.join(policy)}")
    lines += ["", "downstreams"]
    for downstream in sorted(network.downstreams, key=lambda d: d.tunnel):
        t = tunnels[downstream.name]
        kind = "managed" if downstream.managed else f"unmanaged, {downstream.platform}"
        lines.append(
            f"  {t.interface:<5} {downstream.name:<10} {downstream.delegate!s:<24} "
            f"to {t.destination} ({kind})"
        )
        lines.append(
            f"  {'':<5} {'':<10} inner {t.address} <-> {t.peer}  (mtu {t.mtu}, mss {t.mss})"
        )
        if downstream.managed:
            lines.append(f"  {'':<5} {'':<10} {_managed(plan, downstream)}")
    used = sum(d.delegate.size for d in network.downstreams) // 2**64
    lines += ["", f"delegated {used} of {network.prefix.size // 2**64} /64s"]
    return "\n".join(lines)


def _managed(plan: Plan, downstream: Downstream) -> str:
    """What pf opens on a managed downstream, its jails, and the kernel modules it needs (at a
    raised securelevel they must be in kld_list: nothing loads after boot)."""
    opened = ["ssh from trusted"] + [
        f"{s.label} to {_host(s.to) if s.to is not None else 'host'}" for s in downstream.services
    ]
    parts = ["inbound: " + ", ".join(opened)]
    if downstream.lan is not None:
        parts.append(f"jails {downstream.lan.jails}")
    hp = plan.host(downstream.name)
    when = f" (securelevel {hp.securelevel}: at boot only)" if hp.securelevel else ""
    parts.append(f"modules {' '.join(hp.modules)}{when}")
    return "; ".join(parts)


def cmd_check(args: argparse.Namespace) -> int:
    print(summary(_load(args.inventory)))
    return 0


# The list of files a render wrote into its folder: the next render into the same folder
# removes those it no longer writes (a host taken out), and never anything else.
RENDERED = ".ownas-rendered"


def cmd_render(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        print(
            f"ownas render: {out} is a file; -o needs a folder (new, or one ownas rendered into)",
            file=sys.stderr,
        )
        return 2
    plan = _load(args.inventory)
    record = out / RENDERED
    before = set(record.read_text(encoding="utf-8").split()) if record.is_file() else set()
    written = []
    for host, files in render_all(plan).items():
        for path, content in files.items():
            relative = f"{host}/{path.lstrip('/')}"
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            written.append(relative)
    stale = sorted(before - set(written))
    for relative in stale:
        (out / relative).unlink(missing_ok=True)
        for parent in (out / relative).parents:
            if parent == out or any(parent.iterdir()):
                break
            parent.rmdir()
    record.write_text("".join(f"{path}\n" for path in sorted(written)), encoding="utf-8")
    gone = sorted({path.split("/", 1)[0] for path in stale})
    print(
        f"wrote {len(written)} files for {len(plan.hosts)} managed "
        f"host{'s' * (len(plan.hosts) != 1)} to {out}/"
        + (
            f"; removed {len(stale)} it had rendered there before ({', '.join(gone)})"
            if stale
            else ""
        )
    )
    return 0


def _print_report(args: argparse.Namespace, found: dict, text) -> int:
    from tasks import status

    if args.json:
        print(json.dumps(found, indent=2, sort_keys=True))
    elif getattr(args, "markdown", False):
        sys.stdout.write(status.markdown(found))
    else:
        sys.stdout.write(text(found))
    return status.exit_status(found)


def cmd_status(args: argparse.Namespace) -> int:
    # Imported here: it connects (pyinfra, SSH); check and render never do.
    from tasks import status

    inventory = load_inventory(args.inventory)
    plan = load(inventory)
    found = status.build(plan, status.read_hosts(inventory, plan, args.verbose), args.verbose)
    return _print_report(args, found, status.text)


def cmd_lab(args: argparse.Namespace) -> int:
    # Imported here: the lab is Linux-only and needs root; check and render need neither.
    from tasks.lab import status
    from tasks.lab.lab import Lab, LabError

    lab = Lab(Path(args.dir), prefix=args.prefix)
    try:
        if args.action == "up":
            inventory = lab.up(Path(args.inventory))
            print(
                f"lab up in {lab.dir}; look first:  pyinfra {inventory} deploy.py --dry --diff\n"
                f"then deploy:  pyinfra {inventory} deploy.py -y"
            )
        elif args.action == "status":
            return _print_report(args, status.gather(lab, args.verbose), status.text)
        elif not lab.state_path.exists():
            print(f"lab down: no lab in {lab.dir} (no lab.json); nothing removed")
        else:
            removed = lab.down()
            print(
                f"lab down: removed {len(removed)} namespaces"
                + (f" ({', '.join(removed)})" if removed else "")
            )
    except LabError as error:
        print(f"ownas lab {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


def _version() -> str:
    try:
        return metadata.version("ownas")
    except metadata.PackageNotFoundError:  # run from the project folder, not installed
        return "(not installed)"


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="ownas",
        description="Run your own AS on FreeBSD: check and render the inventory, try it in a lab.",
    )
    main.add_argument("--version", action="version", version=f"ownas {_version()}")
    commands = main.add_subparsers(dest="command", required=True)

    def with_inventory(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--inventory",
            "-i",
            default="inventory.py",
            help="pyinfra inventory file (default: ./inventory.py)",
        )
        return sub

    check = with_inventory(
        commands.add_parser(
            "check",
            help="validate the inventory and summarise the plan",
            description="Validate the inventory (every problem at once, one line each, naming "
            "host and field; nothing is contacted) and print a one-screen summary of the plan: "
            "the AS, the upstreams and their policy, every tunnel and delegation. Exit status: "
            "0 valid, 1 problems.",
        )
    )
    check.set_defaults(func=cmd_check)
    render = with_inventory(
        commands.add_parser(
            "render",
            help="write every file each host needs to a directory",
            description="Write every file each managed host needs to DIR/<host>/<path>, and an "
            "unmanaged site's settings sheet to DIR/<name>/settings.txt. Rendering into the same "
            "folder again removes what it wrote there before and no longer writes.",
        )
    )
    render.add_argument(
        "-o", "--output", required=True, help="directory; files go to DIR/<host>/<path>"
    )
    render.set_defaults(func=cmd_render)

    def as_report(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        layout = sub.add_mutually_exclusive_group()
        layout.add_argument("--json", action="store_true", help="the report as JSON (README)")
        layout.add_argument("--markdown", action="store_true", help="the report as Markdown")
        sub.add_argument(
            "--verbose", "-v", action="store_true", help="list the prefixes, not only counts"
        )
        return sub

    report = as_report(
        with_inventory(
            commands.add_parser(
                "status",
                help="read the hosts over SSH (nothing is changed) and report what the network "
                "does",
                description="Read every managed host over SSH, as the inventory connects to it, "
                "and report BGP sessions, what each upstream receives and what it sent that was "
                "refused, RPKI, tunnels, pf and the planned routes, judged by the checks a "
                "deploy ends with. Nothing is changed. Exit status: 0 converged, 1 not "
                "converged, 2 a host could not be reached or read.",
            )
        )
    )
    report.set_defaults(func=cmd_status)
    lab = commands.add_parser(
        "lab",
        help="run the deploy end to end on this Linux machine (root): namespaces, real SSH, "
        "FRR, BIRD upstreams",
        description="A lab of the inventory's network on this Linux machine (root): up, "
        "status, down. `ownas lab ACTION --help` for each.",
    )
    actions = lab.add_subparsers(dest="action", required=True)

    def in_lab(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--dir", default=".lab", help="where the lab keeps its state (.lab)")
        sub.add_argument("--prefix", default="ownas", help="its namespaces' prefix (ownas)")
        sub.set_defaults(func=cmd_lab)
        return sub

    in_lab(
        with_inventory(
            actions.add_parser(
                "up",
                help="build the lab, or bring a running one in line with the inventory",
                description="Build the lab for the inventory (namespaces, FRR, BIRD upstreams, "
                "RTR caches, SSH) and write DIR/inventory.py for pyinfra; on a running lab, "
                "add or remove downstreams, move a VPS, restart a stopped sshd.",
            )
        )
    )
    in_lab(
        as_report(
            actions.add_parser(
                "status",
                help="ownas status through the lab's inventory, and BIRD's side",
                description="`ownas status` read through the lab's inventory, with what only "
                "the lab sees: each upstream's side of its session and what it receives, what "
                "stands in for each RTR cache, each tunnel's link. Exit status as ownas status.",
            )
        )
    )
    in_lab(
        actions.add_parser(
            "down",
            help="remove everything the lab made",
            description="Remove every namespace, link, process and file the lab in DIR made, "
            "and nothing of another lab.",
        )
    )
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("status", "lab"):
        # pyinfra's SSH runs in greenlets, which wait for the network in parallel only once
        # the standard library is patched, as pyinfra's own command does first.
        from gevent import monkey

        monkey.patch_all()
    try:
        return args.func(args)
    except InventoryError as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        count = len(error.problems)
        print(f"{count} problem{'s' if count > 1 else ''} in the inventory", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
