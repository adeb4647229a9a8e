"""The hosts ownas manages over SSH: the reference network of AS201379.

    pyinfra inventory.py deploy.py --dry --diff    # look first
    pyinfra inventory.py deploy.py                 # then apply

AS-wide data (ASN, prefix, trusted sources, unmanaged sites) is in group_data/all.py, the router's
upstreams in group_data/routers.py. Every field is described in README.md.
"""

# The BGP router. Exactly one.
routers = [
    (
        "router01",
        {
            "ssh_hostname": "198.51.100.10",
            "wan": {
                "interface": "vtnet0",
                "ipv4": "198.51.100.10/24",
                "ipv4_gateway": "198.51.100.1",
                "ipv6": "2001:db8:100::96/64",
                "ipv6_gateway": "2001:db8:100::1",
                "ifconfig_options": ["-rxcsum", "-txcsum", "-rxcsum6", "-txcsum6", "-lro", "-tso"],
            },
            # Source for traffic the router originates, inside the prefix.
            "loopback": "2a06:9801:1c::1/64",
            "securelevel": 2,
            # The firewall also lets this WAN neighbor open BGP; no session is configured for it.
            "extra_bgp_peers": ["198.51.100.20"],
        },
    ),
]

# FreeBSD hosts that receive part of the prefix over a gif tunnel and are deployed by ownas.
downstreams = [
    (
        "vps01",
        {
            # The public IPv4: where SSH goes and the far end of router01's tunnel.
            # Moving the VPS is an edit of this one line (README: "Moving a VPS").
            "ssh_hostname": "203.0.113.10",
            # Tunnel number: router01's gif0, inner pair 2a06:9801:1c:ffff::1 (router) / ::2.
            "tunnel": 0,
            "description": "Tunnel-to-VPS",
            "delegate": "2a06:9801:1c:1000::/64",
            "wan_interface": "vtnet0",
            "lan": {
                # The jail bridge; Bastille creates it, ownas routes to it.
                "interface": "bastille0",
                # Private jail IPv4, NATed to the public address.
                "nat": "10.254.254.0/24",
                # The provider's routed IPv6 for jails; stays in FIB 0.
                "provider": "2001:db8:200:0:1000::/68",
            },
        },
    ),
]
