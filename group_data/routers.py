"""The router's upstreams (transit providers). Outbound, each announces only our prefix."""

upstreams = [
    {
        "name": "ifog",
        "description": "Transit-iFog",
        "asn": 34927,
        # iFog's end of the GRE tunnel; iFog assigns the inner pair, not our link subnet.
        "peer": "2001:db8:300::1",
        "tunnel": {
            "interface": "gre0",
            "endpoint": "198.51.100.44",
            "address": "2001:db8:300::2",
        },
        # iFog's action communities: how iFog propagates our route.
        "communities": ["34927:9501", "34927:9301"],
    },
    {
        "name": "lagrange",
        "description": "Lagrange",
        "asn": 209735,
        # Directly on the router's WAN subnet.
        "peer": "2001:db8:100::ff",
        # Lengthen the path seen through Lagrange so inbound traffic prefers iFog.
        "prepend": 2,
    },
]

# Route origin validation (RPKI): every route an upstream sends whose origin AS the ROAs
# contradict (RPKI invalid) is rejected; valid and not-found routes pass unchanged. FRR asks the
# RTR caches below, the lowest preference first; with none answering, routes pass unvalidated.
rpki = {
    # A validator ownas runs on the router itself ("routinator" or "fort"), serving RTR on
    # 127.0.0.1 only; FRR asks it first (preference 1).
    "validator": "routinator",
    # Caches elsewhere (address, port, preference): a second opinion when the local one is down.
    "caches": [
        {"address": "2001:db8:ffff:3::323", "port": 3323, "preference": 2},
    ],
}
