"""Strict parsers for inventory values.

Each parser takes the raw value from the inventory and returns a canonical Python value, or raises
``ValueError`` with a message meant for the operator (the caller prefixes host and field). Strings
are matched against a whitelist before anything else looks at them: every value that reaches an rc
fragment, pf.conf or frr.conf has passed one of these, so none can carry shell or config syntax.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources
from typing import Any

from netaddr import INET_PTON, AddrFormatError, IPAddress, IPNetwork

_ADDRESS = re.compile(r"^[0-9A-Fa-f:.]+$")
_NETWORK = re.compile(r"^[0-9A-Fa-f:.]+/[0-9]{1,3}$")
# FreeBSD interface names (IFNAMSIZ 16 with the NUL); renamed interfaces (bastille0) included.
# A VLAN suffix (vtnet0.100) is allowed; rc.conf maps the dot to "_" in variable names.
_INTERFACE = re.compile(r"^[a-z][a-z0-9_]{0,13}[0-9](\.[0-9]{1,4})?$")
# Host and upstream names become parts of rc.conf variable names, pf macros and FRR names.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Interface and BGP neighbor descriptions: no spaces, no quotes, no shell or FRR syntax.
_DESCRIPTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
# ifconfig flags such as -rxcsum, -tso, mtu and its number.
_IFCONFIG_OPTION = re.compile(r"^-?[a-z][a-z0-9]{0,15}$|^[0-9]{1,5}$")

Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class SpecialIPv4:
    """An IPv4 range the Internet does not route, and what it is (bogons.toml)."""

    network: IPNetwork
    what: str
    never: bool = False  # no unicast destination at all
    example: bool = False  # documentation: the example inventory's and the lab's


@dataclass(frozen=True)
class Bogons:
    """The bogon lists in ``tasks/data/bogons.toml`` with their provenance."""

    ipv6: tuple[IPNetwork, ...]
    ipv6_source: str
    ipv6_date: str
    global_unicast: IPNetwork
    shortest: int  # prefixes shorter than this are refused
    ipv4: tuple[SpecialIPv4, ...]
    asn_ranges: tuple[tuple[int, int, str], ...]
    asn_source: str
    asn_date: str


@cache
def bogons() -> Bogons:
    raw = tomllib.loads(resources.files("tasks").joinpath("data/bogons.toml").read_text())
    return Bogons(
        ipv6=tuple(IPNetwork(p) for p in raw["ipv6"]["prefixes"]),
        ipv6_source=raw["ipv6"]["source"],
        ipv6_date=raw["ipv6"]["date"],
        global_unicast=IPNetwork(raw["ipv6"]["global_unicast"]),
        shortest=raw["ipv6"]["shortest"],
        ipv4=tuple(
            SpecialIPv4(IPNetwork(p.pop("prefix")), **p)
            for p in (dict(entry) for entry in raw["ipv4"]["prefixes"])
        ),
        asn_ranges=tuple((r["first"], r["last"], r["what"]) for r in raw["asn"]["ranges"]),
        asn_source=raw["asn"]["source"],
        asn_date=raw["asn"]["date"],
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Parser:
    """A parser for strings that must match ``pattern`` (a whitelist)."""

    def parse(value: Any) -> str:
        text = _text(value)
        if not pattern.match(text):
            raise ValueError(f"{text!r} is not {what}")
        return text

    return parse


name = _matching(
    _NAME,
    "a valid name (a lowercase letter, then lowercase letters, digits or '-', at most 31 "
    "characters)",
)
interface = _matching(_INTERFACE, "a FreeBSD interface name (like vtnet0, gif1, bastille0)")
description = _matching(
    _DESCRIPTION, "a valid description (letters, digits and . _ : + -, no spaces, at most 64)"
)

# RFC 8203's shutdown communication (at most 128 octets of UTF-8; ASCII here), as FRR stores it:
# bgp_vty.c joins the command's words with one space (argv_concat), so only single spaces
# between words render the way `show running-config` prints them back.
shutdown_message = _matching(
    re.compile(r"^(?=.{1,128}$)[A-Za-z0-9.,:;_+/()@-]+( [A-Za-z0-9.,:;_+/()@-]+)*$"),
    "a shutdown message (at most 128 letters, digits, spaces between words and . , : ; _ + / "
    "( ) @ -)",
)


def ifconfig_options(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{value!r} is not a list of ifconfig options")
    for option in value:
        if not isinstance(option, str) or not _IFCONFIG_OPTION.match(option):
            raise ValueError(f"{option!r} is not an ifconfig option (like -tso or -rxcsum)")
    return tuple(value)


def integer(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number")
        if not low <= value <= high:
            raise ValueError(f"{value} is not between {low} and {high}")
        return value

    return parse


def one_of(choices: tuple[str, ...]) -> Parser:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value

    return parse


def ports(value: Any) -> tuple[int, ...]:
    """A port (22) or a list of ports ([80, 443]), each 1-65535."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("is empty")
    return tuple(sorted(set(integer(1, 65535)(item) for item in items)))


def port_of_proto(value: Any) -> tuple[str, int]:
    """``tcp/25`` or ``udp/123``: a listening socket's protocol and port."""
    text = _text(value)
    match = re.fullmatch(r"(tcp|udp)/([0-9]{1,5})", text)
    if not match or not 1 <= int(match[2]) <= 65535:
        raise ValueError(f"{text!r} is not PROTO/PORT (like udp/123 or tcp/25)")
    return match[1], int(match[2])


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _address(value: Any) -> IPAddress:
    text = _text(value)
    if not _ADDRESS.match(text):
        raise ValueError(f"{text!r} is not an IP address")
    try:
        address = IPAddress(text)
    except (AddrFormatError, ValueError):
        raise ValueError(f"{text!r} is not an IP address") from None
    # First: netaddr counts :: and ::1 as IPv4-compatible addresses.
    if address.value == 0 or address.is_loopback() or address.is_multicast():
        raise ValueError(f"{text!r} cannot be used here (unspecified, loopback or multicast)")
    never = special_ipv4(address)
    if never is not None and never.never:
        raise ValueError(f"{text!r} cannot be used here: it is {never.what}")
    if address.version == 6 and (address.is_ipv4_mapped() or address.is_ipv4_compat()):
        raise ValueError(f"{text!r} is an IPv4-mapped address; write the IPv4 address")
    if address.version == 6 and address in IPNetwork("fe80::/10"):
        raise ValueError(f"{text!r} is link-local; ownas needs a global address here")
    return address


def router_id(value: Any) -> IPAddress:
    """A BGP identifier: any non-zero 32-bit number, written as a dotted quad (RFC 6286; it
    need not be an address, e.g. the ASN on a router without IPv4)."""
    text = _text(value)
    try:
        identifier = IPAddress(text, 4, flags=INET_PTON)
    except (AddrFormatError, ValueError):
        raise ValueError(
            f"{text!r} is not a router-id (a dotted quad, like 198.51.100.10)"
        ) from None
    if identifier.value == 0:
        raise ValueError(f"{text!r} is not a router-id: BGP refuses 0.0.0.0 (RFC 6286)")
    return identifier


def special_ipv4(address: IPAddress) -> SpecialIPv4 | None:
    """The special-purpose range ``address`` is in, if it is IPv4 and not a public address."""
    if address.version != 4:
        return None
    return next((s for s in bogons().ipv4 if address in s.network), None)


def _of_family(parse: Parser, version: int, what: str) -> Parser:
    """``parse``, then insist on an IP ``version`` (the right family for the field)."""

    def checked(value: Any) -> Any:
        result = parse(value)
        if result.version != version:
            raise ValueError(f"{value!r} is not {what}")
        return result

    return checked


ipv4_address = _of_family(_address, 4, "an IPv4 address")
ipv6_address = _of_family(_address, 6, "an IPv6 address")


def ipv6_gateway(value: Any) -> IPAddress:
    """A next hop: global, or link-local (fe80::1, common at hosting providers) without a scope."""
    text = _text(value)
    if _ADDRESS.match(text):
        try:
            address = IPAddress(text)
        except (AddrFormatError, ValueError):
            address = None
        if address is not None and address.version == 6 and address in IPNetwork("fe80::/10"):
            return address
    return ipv6_address(value)


def any_address(value: Any) -> IPAddress:
    return _address(value)


def _network(value: Any, *, strict: bool) -> IPNetwork:
    """Parse ``addr/len``; with ``strict`` the host bits must be zero (a network)."""
    text = _text(value)
    if not _NETWORK.match(text):
        raise ValueError(
            f"{text!r} is not an address with a prefix length (like 192.0.2.1/24, 2001:db8::/48)"
        )
    try:
        network = IPNetwork(text)
    except (AddrFormatError, ValueError):
        raise ValueError(f"{text!r} is not a valid network") from None
    if strict and network.ip != network.network:
        raise ValueError(f"{text!r} has host bits set (the network is {network.cidr})")
    if not strict:
        _address(str(network.ip))  # an interface address must itself be usable (also a /32)
    return network


ipv4_network = _of_family(partial(_network, strict=True), 4, "an IPv4 network")
ipv6_network = _of_family(partial(_network, strict=True), 6, "an IPv6 network")
_ipv4_with_length = _of_family(
    partial(_network, strict=False), 4, "an IPv4 address with a prefix length"
)
_ipv6_with_length = _of_family(
    partial(_network, strict=False), 6, "an IPv6 address with a prefix length"
)


def ipv4_interface(value: Any) -> IPNetwork:
    """An interface address with its prefix length, like 198.51.100.10/24."""
    network = _ipv4_with_length(value)
    if network.ip in (network.network, network.broadcast) and network.prefixlen < 31:
        raise ValueError(f"{value!r} is the network or broadcast address of its subnet")
    return network


def ipv6_interface(value: Any) -> IPNetwork:
    """An interface address with its prefix length, like 2001:db8:100::96/64."""
    network = _ipv6_with_length(value)
    if network.ip == network.network and network.prefixlen < 127:
        raise ValueError(f"{value!r} is the subnet-router anycast address; use a host address")
    return network


def source(value: Any) -> IPNetwork:
    """A trusted source: an address (as a host network) or a network, either family."""
    if isinstance(value, str) and "/" in value:
        network = _network(value, strict=True)
        if network.prefixlen == 0:
            raise ValueError(f"{value!r} would trust every address")
        return network
    return IPNetwork(str(_address(value)))


def list_of(parser: Parser, *, empty: bool = True) -> Parser:
    def parse(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{value!r} is not a list")
        if not value and not empty:
            raise ValueError("is empty")
        return tuple(parser(item) for item in value)

    return parse


def asn_problem(asn: int) -> str | None:
    """Why ``asn`` cannot be a public AS on the Internet, or None when it can."""
    for low, high, what in bogons().asn_ranges:
        if low <= asn <= high:
            span = "" if low == high else f"in {low}-{high}, "
            return f"{asn} is {span}{what}; an AS on the Internet needs a public AS number"
    return None


def asn(value: Any) -> int:
    number = integer(0, 4294967295)(value)
    problem = asn_problem(number)
    if problem:
        raise ValueError(problem)
    return number


def community(value: Any) -> tuple[int, int]:
    """A standard community ``ASN:value`` (RFC 1997), both halves 16 bits."""
    text = _text(value)
    match = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,5})", text)
    if match and int(match[1]) > 65535 and int(match[2]) <= 65535:
        raise ValueError(
            f"{text!r} is not a community (ASN:value, each 0-65535): AS{match[1]} needs 32 "
            "bits, so its communities are large ones: put ASN:value:value in large_communities"
        )
    if not match or int(match[1]) > 65535 or int(match[2]) > 65535:
        raise ValueError(f"{text!r} is not a community (ASN:value, each 0-65535)")
    if int(match[1]) == 65535:
        # RFC 1997's well-known range; FRR prints the named ones by name (bgp_community.c,
        # community_str), so a rendered number would never match the running config.
        raise ValueError(
            f"{text!r} is a well-known community (RFC 1997): for GRACEFUL_SHUTDOWN (65535:0) set "
            "shutdown: 'graceful' on the upstream"
        )
    return int(match[1]), int(match[2])


def large_community(value: Any) -> tuple[int, int, int]:
    """A large community ``ASN:value:value`` (RFC 8092), each part 32 bits."""
    text = _text(value)
    match = re.fullmatch(r"([0-9]{1,10}):([0-9]{1,10}):([0-9]{1,10})", text)
    if not match or any(int(part) > 4294967295 for part in match.groups()):
        raise ValueError(f"{text!r} is not a large community (ASN:value:value, each 0-4294967295)")
    return int(match[1]), int(match[2]), int(match[3])
