"""The lab's pfctl stand-in is strict: it takes the rendered pf.conf files and refuses what
FreeBSD 14's pfctl refuses (sbin/pfctl/parse.y), with pfctl's messages."""

from __future__ import annotations

import pytest

from tasks.lab.pf import ORDER_ERROR, PfError, parse
from tests.inventories import ROOT

GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("host", ["router01", "vps01"])
def test_rendered_pf_conf_is_accepted(host):
    ruleset = parse((GOLDEN / host / "etc/pf.conf").read_text(), "/etc/pf.conf", fibs=2)
    assert ruleset.rules


def test_rtable_needs_the_fib():
    with pytest.raises(PfError, match=r"^/etc/pf.conf:\d+: invalid rtable id$"):
        parse((GOLDEN / "vps01/etc/pf.conf").read_text(), "/etc/pf.conf", fibs=1)


def test_routing_effects_are_read():
    ruleset = parse((GOLDEN / "vps01/etc/pf.conf").read_text(), fibs=2)
    assert ruleset.rtables == [("2a06:9801:1c:1000::/64", "bastille0", 1)]
    assert [(d, i) for d, i, _gw in ruleset.reply_to] == [
        ("2a06:9801:1c:1000::/64", "gif0"),  # ICMPv6 to the delegation
        ("2a06:9801:1c:1000::1", "gif0"),  # SSH to the host's own address there
    ]


BASE = 'ext_if = "vtnet0"\nset skip on lo0\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pass in quick all\nset block-policy drop\n", ORDER_ERROR),
        ("pass in all\nnat on vtnet0 inet from 10.0.0.0/8 to any -> (vtnet0)\n", ORDER_ERROR),
        ("pass in on $nope all\n", "macro 'nope' not defined"),
        ('pass = "x"\n', "syntax error"),
        ("table <a2345678901234567890123456789012> const { 192.0.2.1 }\n", "too long, max 31"),
        ("table <t> const { (vtnet0) }\n", "dynamic addresses are not permitted inside tables"),
        ("pass out on vtnet0 inet nat-to (vtnet0)\n", "syntax error"),
        ("pass on gif0 reply-to (gif0 2001:db8::1) inet6 all\n", "direction must be explicit"),
        ("pass in on gif0 inet6 reply-to (gif0 2001:db8::1) all\n", "syntax error"),
        ("pass in on gif0 reply-to (gif0) inet6 all\n", "syntax error"),
        ("match in on gif0 reply-to (gif0 2001:db8::1) all\n", "must not be used on match rules"),
        ("pass in on bastille0 rtable 1 from any to any\n", "syntax error"),
        ("block in all keep state\n", "only for pass rules"),
        ("pass in proto gre from any port 22\n", "port only applies to tcp/udp"),
        ("pass in proto icmp6 icmp6-type echoreq\n", "must indicate address family"),
        ("pass in inet6 proto icmp icmp6-type echoreq\n", "icmp-type mismatch"),
        ("pass in inet6 proto icmp6 icmp6-type ping\n", "unknown icmp6-type ping"),
        ("pass in proto tcp keep state (overload <bad> flush)\n", "'overload' requires"),
        ("pass in inet6 from 192.0.2.1 to any\n", "rule expands to no valid combination"),
        ("pass in proto ospf all\n", "unknown protocol ospf"),
        ("scrub on gif0 max-mss 1220\nmatch on gif0 scrub (max-mss 1220)\n", "legacy scrub"),
        (
            "pass in quick on vtnet0 proto tcp to port 22 flags S/SA keep state (max-src-conn 0)\n",
            "'max-src-conn' must be > 0",
        ),
    ],
)
def test_what_pfctl_refuses_is_refused(text, message):
    with pytest.raises(PfError) as caught:
        parse(BASE + text, "/etc/pf.conf", fibs=2)
    assert str(caught.value).startswith("/etc/pf.conf:")
    assert message in str(caught.value)


def test_the_line_of_the_error_is_named():
    with pytest.raises(PfError, match=r"^/etc/pf.conf:4: syntax error$"):
        parse(BASE + "block in log all\npass in bogus\n", "/etc/pf.conf")
