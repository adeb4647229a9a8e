"""FRR's inbound policy on every upstream: the bogon prefix list (PL-BOGONS) and the bogon
AS-number list (ASPATH-BOGONS), generated from the bogon data file (tasks/data) and the
network's own prefix. FRR matches AS paths by regular expression only: ``asn_regex`` turns a
range of AS numbers into one."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from netaddr import IPNetwork

from tasks import fields
from tasks.model import Network


@dataclass(frozen=True)
class PrefixListEntry:
    seq: int
    action: str  # permit | deny
    prefix: IPNetwork
    length: str = ""  # " le 128", " ge 49", ...


def bogon_filter(network: Network) -> tuple[PrefixListEntry, ...]:
    """PL-BOGONS, applied inbound on every upstream.

    Order as in the reference: shorter than /8, the bogon list (from the data file), everything
    outside global unicast, anything shorter than the data file's ``shortest`` (a local choice
    the reference's ``le 7`` is a special case of), our own prefix (and, with the next entry,
    anything inside it), longer than /48; then permit the rest up to /48. The last three keep
    the reference's sequence numbers (100, 105, 110) while the list leaves room for them.
    """
    data = fields.bogons()
    entries = [("deny", IPNetwork("::/0"), " le 7")]
    entries += [("deny", bogon, " le 128") for bogon in data.ipv6]
    entries += [("deny", outside, " le 128") for outside in _complement(data.global_unicast)]
    if data.shortest > 8:  # else the first entry covers it
        entries += [("deny", IPNetwork("::/0"), f" le {data.shortest - 1}")]
    head = [PrefixListEntry(5 * (i + 1), *entry) for i, entry in enumerate(entries)]
    tail = [
        ("deny", network.prefix, ""),
        ("deny", IPNetwork("::/0"), " ge 49"),
        ("permit", IPNetwork("::/0"), " le 48"),
    ]
    start = max(100, head[-1].seq + 5)
    return (*head, *(PrefixListEntry(start + 5 * i, *entry) for i, entry in enumerate(tail)))


def _complement(inside: IPNetwork) -> list[IPNetwork]:
    """The IPv6 networks that, together with ``inside``, cover the whole space (fewest first)."""
    result = []
    network = inside
    while network.prefixlen > 0:
        parent = network.supernet(network.prefixlen - 1)[-1]
        halves = list(parent.subnet(network.prefixlen))
        result.append(halves[1] if halves[0] == network else halves[0])
        network = parent
    return sorted(result, key=lambda n: n.value)


@dataclass(frozen=True)
class AsPathEntry:
    seq: int
    action: str  # permit | deny
    regex: str  # FRR's as-path regex: POSIX ERE where ``_`` is a delimiter or either end
    what: str  # the range and why it is refused, for a comment beside the entry


def bogon_asn_filter() -> tuple[AsPathEntry, ...]:
    """ASPATH-BOGONS, applied inbound on every upstream: refuse a route whose AS path contains
    an AS number that must never appear on the Internet anywhere (data file), permit the rest.

    FRR matches AS paths by regular expression only, so each range becomes one alternation of
    digit patterns (``asn_regex``). An as-path access-list denies what it does not permit,
    hence the final ``.*``.
    """
    data = fields.bogons()
    entries = [
        AsPathEntry(
            5 * (i + 1),
            "deny",
            f"_{asn_regex(first, last)}_",
            f"{first}-{last} {what}" if first != last else f"{first} {what}",
        )
        for i, (first, last, what) in enumerate(data.asn_ranges)
    ]
    return (*entries, AsPathEntry(5 * (len(entries) + 1), "permit", ".*", "everything else"))


def asn_regex(first: int, last: int) -> str:
    """A regular expression matching exactly the decimal numbers ``first``..``last``."""
    patterns: list[str] = []
    low = first
    while low <= last:  # split where the number of digits changes
        high = min(last, 10 ** len(str(low)) - 1)
        patterns += _digit_span(str(low), str(high))
        low = high + 1
    return patterns[0] if len(patterns) == 1 else f"({'|'.join(patterns)})"


def _digit_span(low: str, high: str) -> list[str]:
    """Patterns for the numbers ``low``..``high`` of one width: a shared head, then the low
    end's tail, the full middle digits, the high end's tail."""
    if low == high:
        return [low]
    if low[0] == high[0]:
        return [low[0] + tail for tail in _digit_span(low[1:], high[1:])]
    width = len(low) - 1
    first, last = int(low[0]), int(high[0])
    head: list[str] = []
    tail: list[str] = []
    if low[1:] != "0" * width:
        head = [low[0] + p for p in _digit_span(low[1:], "9" * width)]
        first += 1
    if high[1:] != "9" * width:
        tail = [high[0] + p for p in _digit_span("0" * width, high[1:])]
        last -= 1
    middle = [] if first > last else [_digits(first, last) + _any_digits(width)]
    return head + middle + tail


def _digits(first: int, last: int) -> str:
    return str(first) if first == last else f"[{first}-{last}]"


def _any_digits(count: int) -> str:
    return "" if count == 0 else "[0-9]" if count == 1 else f"[0-9]{{{count}}}"


# --- why a route was refused ----------------------------------------------------------------

# The reasons ``rejection`` gives, in the order FRR applies the inbound policy (bgpd/bgp_route.c:
# bgp_input_filter, prefix-list then filter-list; then bgp_input_modifier, the route-map).
REASONS = (
    "default",
    "too short",
    "bogon",
    "own",
    "too long",
    "bogon ASN",
    "RPKI invalid (origin)",
    "RPKI invalid (maxLength)",
    "other",
)


def _matches(entry: PrefixListEntry, prefix: IPNetwork) -> bool:
    """Whether a prefix-list entry matches ``prefix`` (exact, or within it with le/ge)."""
    if prefix not in entry.prefix and prefix != entry.prefix:
        return False
    if not entry.length:
        return prefix == entry.prefix
    word, length = entry.length.split()
    if word == "le":
        return entry.prefix.prefixlen <= prefix.prefixlen <= int(length)
    return prefix.prefixlen >= int(length)


def rejection(network: Network, prefix: str, path: str, roas: list[dict[str, Any]]) -> str:
    """Why the inbound policy refuses ``prefix`` (with AS ``path``), one of ``REASONS``: PL-BOGONS
    and ASPATH-BOGONS judged as FRR does, then route origin validation against ``roas``. FRR
    itself says only that a route was filtered, not by what."""
    route = IPNetwork(prefix)
    if route.prefixlen == 0:
        return "default"
    entry = next((e for e in bogon_filter(network) if _matches(e, route)), None)
    if entry is not None and entry.action == "deny":
        if entry.prefix == network.prefix and not entry.length:
            return "own"
        if entry.length.startswith(" ge"):
            return "too long"
        if entry.prefix.prefixlen == 0:
            return "too short"
        return "bogon"
    data = fields.bogons()
    # Every AS number in the path, those in sets ({...}) and confederation segments too, as
    # FRR's as-path regex sees them.
    asns = [int(asn) for asn in re.findall(r"\d+", path)]
    if any(first <= asn <= last for asn in asns for first, last, _ in data.asn_ranges):
        return "bogon ASN"
    validity = origin_validation(prefix, path, roas)
    return validity if validity.startswith("RPKI invalid") else "other"


def origin_validation(prefix: str, path: str, roas: list[dict[str, Any]]) -> str:
    """RFC 6811 route origin validation of ``prefix`` (its origin: the last AS of ``path``)
    against ``roas`` as FRR holds them (show rpki prefix-table: prefix, prefixLenMin,
    prefixLenMax, asn): "valid", "not found", or why it is invalid."""
    network = ipaddress.ip_network(prefix)
    words = path.split()
    if words and not words[-1].isdigit():
        # An AS_SET last: FRR answers NOT FOUND without asking the ROAs (bgpd/bgp_rpki.c,
        # rpki_validate_prefix: "Take distinguished value NONE as asn").
        return "not found"
    origin = int(words[-1]) if words else None
    covering = [
        roa
        for roa in roas
        if network.version == ipaddress.ip_address(roa["prefix"]).version
        and network.subnet_of(ipaddress.ip_network(f"{roa['prefix']}/{roa['prefixLenMin']}"))
    ]
    if not covering:
        return "not found"
    if any(roa["asn"] != 0 and roa["asn"] == origin for roa in covering):
        if any(
            roa["asn"] == origin and network.prefixlen <= roa["prefixLenMax"] for roa in covering
        ):
            return "valid"
        return "RPKI invalid (maxLength)"
    return "RPKI invalid (origin)"
