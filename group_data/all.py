"""AS-wide data: every host sees it as host.data.<name>."""

asn = 201379
prefix = "2a06:9801:1c::/48"

# Tunnel inner addresses are /128 pairs from here: the router takes ::1, ::3, ...
link_subnet = "2a06:9801:1c:ffff::/64"

# Where SSH to the router and the managed downstreams may come from. Never empty: pf would
# lock everyone out.
trusted_sources = [
    "198.51.100.100",
    "198.51.100.101",
    "2001:db8:ffff:1::/64",
    "2001:db8:ffff:2::/64",
]

# Downstream sites ownas does not log in to: it renders the router's side and a settings sheet
# for the site's operator (ownas render -o DIR writes DIR/<name>/settings.txt).
unmanaged_downstreams = [
    {
        "name": "dcgw01",
        "platform": "opnsense",
        "endpoint": "192.0.2.50",
        "tunnel": 1,
        "description": "Tunnel-to-Datacenter",
        "delegate": "2a06:9801:1c:2000::/62",
    },
]

# A host that a run changed puts its previous files back by itself unless the run reaches it
# again over a new SSH connection within check_timeout (default 180) + this many seconds.
# 0 turns that off: a change that locks you out would then stay (README, "What protects you").
confirm_timeout = 120
