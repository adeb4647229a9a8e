"""A strict stand-in for ``pfctl -nf``: the subset of FreeBSD 14 pf.conf(5) that ownas writes.

Test infrastructure for the lab (no FreeBSD kernel runs here). It accepts the statements ownas
renders, written as pf.conf(5) and FreeBSD 14's sbin/pfctl/parse.y define them, and rejects
anything else the way pfctl does: ``FILE:LINE: syntax error`` or pfctl's own message, exit 1.
What it checks, from parse.y: statement order (options, normalization, translation,
filtering); macros defined before use, named like pf's; table names and contents; the order of
a rule's parts (action, direction, log/quick, on, route option, af, proto, from/to, options);
route options need a direction and an ``(if addr)`` target; ``rtable`` below net.fibs; ports
only with tcp/udp; ICMP types with their af and proto; state options only on pass rules;
``overload`` only with a connection limit; address families that leave no valid rule; legacy
``scrub`` mixed with ``match ... scrub``; OpenBSD-only syntax (nat-to, rdr-to, af-to).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netaddr import AddrFormatError, IPNetwork

# parse.y keywords that cannot be macro or table names (the ones a generator could hit).
KEYWORDS = frozenset(
    (
        "all",
        "any",
        "antispoof",
        "block",
        "drop",
        "for",
        "from",
        "in",
        "inet",
        "inet6",
        "keep",
        "label",
        "log",
        "match",
        "nat",
        "no",
        "on",
        "out",
        "pass",
        "port",
        "proto",
        "quick",
        "reply-to",
        "return",
        "route",
        "route-to",
        "rtable",
        "rule",
        "scrub",
        "self",
        "set",
        "skip",
        "state",
        "table",
        "tag",
        "to",
        "flags",
        "icmp-type",
        "icmp6-type",
        "max",
        "max-src-conn",
        "max-src-conn-rate",
        "overload",
        "flush",
        "global",
        "const",
        "persist",
    )
)
ICMP6_TYPES = frozenset(
    (
        "unreach",
        "toobig",
        "timex",
        "paramprob",
        "echoreq",
        "echorep",
        "groupqry",
        "listqry",
        "grouprep",
        "listenrep",
        "groupterm",
        "listendone",
        "routersol",
        "routeradv",
        "neighbrsol",
        "neighbradv",
        "redir",
        "routrrenum",
        "wrureq",
        "wrurep",
        "fqdnreq",
        "fqdnrep",
        "niqry",
        "nirep",
        "mtraceresp",
        "mtrace",
    )
)
ICMP_TYPES = frozenset(
    (
        "echoreq",
        "echorep",
        "unreach",
        "squench",
        "redir",
        "althost",
        "routeradv",
        "routersol",
        "timex",
        "paramprob",
        "timereq",
        "timerep",
        "inforeq",
        "inforep",
        "maskreq",
        "maskrep",
        "trace",
        "dataconv",
        "mobredir",
    )
)
# FreeBSD's /etc/protocols names pfctl resolves (getprotobyname), and numbers.
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "ipv6-icmp": 58, "gre": 47, "ipv6": 41}
SERVICES = {"ssh": 22, "bgp": 179, "domain": 53, "http": 80, "https": 443}
SECTIONS = {"option": 1, "scrub": 2, "nat": 4, "filter": 5}
ORDER_ERROR = (
    "Rules must be in order: options, ethernet, normalization, queueing, translation, filtering"
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")
_INTERFACE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_TOKEN = re.compile(r'"[^"]*"|<[^>]*>|[{}(),!]|[^\s{}(),!]+')


class PfError(Exception):
    """A pf.conf pfctl would refuse; the message is pfctl's ``FILE:LINE: ...`` line."""


@dataclass
class Ruleset:
    """What a pf.conf loads: its rules (one normalized line each) and what they route."""

    rules: list[str] = field(default_factory=list)
    macros: dict[str, str] = field(default_factory=dict)
    tables: dict[str, list[str]] = field(default_factory=dict)
    # What the rules route (the lab applies these with Linux policy rules):
    # rtable N on ``pass in on IF from SRC``: (SRC, IF, N);
    # reply-to (IF GW) on a rule ``to DST``: replies come from DST and leave by IF: (DST, IF, GW).
    rtables: list[tuple[str, str, int]] = field(default_factory=list)
    reply_to: list[tuple[str, str, str]] = field(default_factory=list)


def parse(text: str, filename: str = "pf.conf", fibs: int = 1) -> Ruleset:
    """Parse ``text`` as pfctl -nf would on a host with ``fibs`` FIBs; PfError on refusal."""
    ruleset = Ruleset()
    state = {"section": 0, "scrub": None}
    for number, line in _statements(text):
        where = f"{filename}:{number}"
        try:
            _statement(ruleset, state, _expand(line, ruleset.macros, where), fibs)
        except PfError as error:
            message = str(error)
            located = message if message.startswith(filename) else f"{where}: {message}"
            raise PfError(located) from None
    return ruleset


def _statements(text: str) -> list[tuple[int, str]]:
    """(line number, statement): comments dropped, backslash-newline continued."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append((start, line))
    return out


def _strip_comment(line: str) -> str:
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index].rstrip()
    return line.rstrip()


def _expand(line: str, macros: dict[str, str], where: str) -> str:
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line):
        return line  # a macro definition: expanded when used

    def value(match: re.Match[str]) -> str:
        if match[1] not in macros:
            raise PfError(f"{where}: macro '{match[1]}' not defined")
        return macros[match[1]]

    return re.sub(r"\$([A-Za-z0-9_]+)", value, line)


def _statement(ruleset: Ruleset, state: dict, line: str, fibs: int) -> None:
    macro = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\"([^\"]*)\"$", line)
    if macro:
        if not _NAME.match(macro[1]) or macro[1] in KEYWORDS:
            raise PfError("syntax error")
        ruleset.macros[macro[1]] = macro[2]
        return
    tokens = _TOKEN.findall(line)
    head = tokens[0]
    if head == "table":
        _table(ruleset, tokens)
    elif head == "set":
        _option(state, tokens)
    elif head == "scrub":
        _section(state, "scrub")
        if state["scrub"] == "match":
            raise PfError("legacy scrub rules mixed with match scrub rules")
        state["scrub"] = "legacy"
        ruleset.rules.append(" ".join(tokens))
    elif head == "nat":
        _section(state, "nat")
        _nat(tokens)
        ruleset.rules.append(" ".join(tokens))
    elif head == "antispoof":
        _section(state, "filter")
        _antispoof(tokens)
        ruleset.rules.append(" ".join(tokens))
    elif head in ("pass", "block", "match"):
        _section(state, "filter")
        _rule(ruleset, state, tokens, fibs)
        ruleset.rules.append(" ".join(tokens))
    else:
        raise PfError("syntax error")


def _section(state: dict, kind: str) -> None:
    if SECTIONS[kind] < state["section"]:
        raise PfError(ORDER_ERROR)
    state["section"] = SECTIONS[kind]


def _table(ruleset: Ruleset, tokens: list[str]) -> None:
    if len(tokens) < 2 or not (tokens[1].startswith("<") and tokens[1].endswith(">")):
        raise PfError("syntax error")
    name = tokens[1][1:-1]
    if len(name) > 31:
        raise PfError("table name too long, max 31 chars")
    if not _TABLE.match(name) or name in KEYWORDS:
        raise PfError("syntax error")
    rest = tokens[2:]
    while rest and rest[0] in ("const", "persist", "counters"):
        rest = rest[1:]
    entries: list[str] = []
    if rest:
        if rest[0] != "{" or rest[-1] != "}":
            raise PfError("syntax error")
        for item in (t for t in rest[1:-1] if t != ","):
            if item.startswith("("):
                raise PfError("dynamic addresses are not permitted inside tables")
            _address(item.lstrip("!"))
            entries.append(item)
    ruleset.tables[name] = entries


def _option(state: dict, tokens: list[str]) -> None:
    words = tokens[1:]
    if words[:2] == ["skip", "on"] and len(words) >= 3:
        return  # allowed anywhere
    _section(state, "option")
    allowed = {
        "block-policy": {"drop", "return"},
        "state-policy": {"if-bound", "floating"},
        "reassemble": {"yes", "no"},
    }
    if len(words) != 2 or words[0] not in allowed or words[1] not in allowed[words[0]]:
        raise PfError("syntax error")


def _nat(tokens: list[str]) -> None:
    # nat [pass] on IF [af] from SRC to DST -> ADDR|(IF[:0])
    words = tokens[1:]
    if words and words[0] == "pass":
        words = words[1:]
    if "->" not in words:
        raise PfError("translation rule requires '-> address'")
    arrow = words.index("->")
    head, target = words[:arrow], words[arrow + 1 :]
    if len(head) < 2 or head[0] != "on" or not _INTERFACE.match(head[1]):
        raise PfError("syntax error")
    rest = head[2:]
    af = rest.pop(0) if rest and rest[0] in ("inet", "inet6") else None
    _fromto(rest, af, proto=None)
    if target[:1] == ["("]:
        dynamic = re.fullmatch(r"[A-Za-z][\w.]*(:0)?", target[1]) if len(target) == 3 else None
        if not dynamic or target[2] != ")":
            raise PfError("syntax error")
    elif len(target) == 1:
        wanted = {"inet": 4, "inet6": 6}.get(af or "", _address(target[0]).version)
        if _address(target[0]).version != wanted:
            raise PfError("no translation address with matching address family found.")
    else:
        raise PfError("syntax error")


def _antispoof(tokens: list[str]) -> None:
    words = tokens[1:]
    while words and words[0] in ("log", "quick"):
        words = words[1:]
    if not words or words[0] != "for":
        raise PfError("syntax error")
    words = words[1:]
    if words[:1] == ["("]:
        if len(words) < 3 or words[2] != ")":
            raise PfError("syntax error")
        interface, words = words[1], words[3:]
    else:
        interface, words = words[0], words[1:]
    if not _INTERFACE.match(interface):
        raise PfError("syntax error")
    if words and words[0] in ("inet", "inet6"):
        words = words[1:]
    if words:
        raise PfError("syntax error")


def _rule(ruleset: Ruleset, state: dict, tokens: list[str], fibs: int) -> None:
    words = list(tokens)
    action = words.pop(0)
    if action == "block" and words and words[0] in ("drop", "return"):
        words.pop(0)
    direction = words.pop(0) if words and words[0] in ("in", "out") else None
    while words and words[0] in ("log", "quick"):
        words.pop(0)
    interface = None
    if words and words[0] == "on":
        words.pop(0)
        interface = _interface_spec(words)
    route = None
    if words and words[0] in ("reply-to", "route-to"):
        kind = words.pop(0)
        if action == "match":
            raise PfError(
                "route-to, reply-to, dup-to and fastroute must not be used on match rules"
            )
        if direction is None:
            raise PfError("direction must be explicit with rules that specify routing")
        if words[:1] != ["("] or len(words) < 4 or words[3] != ")":
            raise PfError("syntax error")
        route = (kind, words[1], str(_address(words[2])))
        del words[:4]
    af = words.pop(0) if words and words[0] in ("inet", "inet6") else None
    protos: list[str] = []
    if words and words[0] == "proto":
        words.pop(0)
        protos = _list(words)
        for proto in protos:
            if proto not in PROTOCOLS and not (proto.isdigit() and 0 < int(proto) < 256):
                raise PfError(f"unknown protocol {proto}")
    if words and words[0] == "all":
        words.pop(0)
        sources, destinations = ["any"], ["any"]
    else:
        sources, destinations = _fromto(words, af, proto=protos)
    _options(action, words, af, protos, fibs, interface, sources, ruleset)
    if route is not None and route[0] == "reply-to":
        ruleset.reply_to += [(d, route[1], route[2]) for d in destinations]
    if action == "match" and "scrub" in tokens:
        if state["scrub"] == "legacy":
            raise PfError("legacy scrub rules mixed with match scrub rules")
        state["scrub"] = "match"


def _interface_spec(words: list[str]) -> list[str]:
    names = _list(words)
    for name in names:
        if not _INTERFACE.match(name.lstrip("!")):
            raise PfError("syntax error")
    return names


def _list(words: list[str]) -> list[str]:
    """One item, or ``{ a, b }``; consumed from ``words``."""
    if not words:
        raise PfError("syntax error")
    if words[0] != "{":
        return [words.pop(0)]
    close = words.index("}") if "}" in words else -1
    if close < 0:
        raise PfError("syntax error")
    items = [w for w in words[1:close] if w != ","]
    del words[: close + 1]
    if not items:
        raise PfError("syntax error")
    return items


def _fromto(
    words: list[str], af: str | None, proto: list[str] | None
) -> tuple[list[str], list[str]]:
    """``[from HOST [port P]] [to HOST [port P]]`` (parse.y: both parts may be empty, as in
    ``match on gif0 scrub (...)``): (sources, destinations)."""
    hosts = {"from": ["any"], "to": ["any"]}
    for keyword in ("from", "to"):
        if words and words[0] == keyword:
            words.pop(0)
            if words[:1] != ["port"]:  # "to port 22": any host
                hosts[keyword] = _hosts(words, af)
            if words and words[0] == "port":
                words.pop(0)
                _ports(words, proto)
    return hosts["from"], hosts["to"]


def _ports(words: list[str], proto: list[str] | None) -> None:
    if not proto or any(p not in ("tcp", "udp", "6", "17") for p in proto):
        raise PfError("port only applies to tcp/udp")
    if words[:1] == ["="]:
        words.pop(0)
    for port in _list(words):
        if not (port.isdigit() or port in SERVICES):
            raise PfError(f"unknown port {port}")


def _hosts(words: list[str], af: str | None) -> list[str]:
    negate = False
    if words and words[0] == "!":
        negate = True
        words.pop(0)
    if words and words[0] == "(":
        name = words[1] if len(words) >= 3 and words[2] == ")" else ""
        if not re.fullmatch(r"[A-Za-z][\w.]*(:network|:0)?", name):
            raise PfError("syntax error")
        host = f"({words[1]})"
        del words[:3]
        return [("! " if negate else "") + host]
    items = _list(words)
    families = set()
    for item in items:
        bare = item.lstrip("!")
        if bare in ("any", "self") or (bare.startswith("<") and bare.endswith(">")):
            continue
        families.add(_address(bare).version)
    if af and families and families == {6 if af == "inet" else 4}:
        raise PfError("rule expands to no valid combination")
    return [("! " if negate else "") + item for item in items]


def _address(text: str) -> IPNetwork:
    try:
        if not re.fullmatch(r"[0-9A-Fa-f:.]+(/\d{1,3})?", text):
            raise AddrFormatError(text)
        return IPNetwork(text)
    except (AddrFormatError, ValueError):
        raise PfError(f"no IP address found for {text}") from None


def _options(
    action: str,
    words: list[str],
    af: str | None,
    protos: list[str],
    fibs: int,
    interface: list[str] | None,
    sources: list[str],
    ruleset: Ruleset,
) -> None:
    while words:
        word = words.pop(0)
        if word == "flags":
            if not words or not re.fullmatch(r"[FSRPAUEW]*/[FSRPAUEW]+|any", words[0]):
                raise PfError("syntax error")
            if protos and protos != ["tcp"]:
                raise PfError("flags only apply to tcp")
            words.pop(0)
        elif word in ("keep", "no"):
            if not words or words.pop(0) != "state":
                raise PfError("syntax error")
            if word == "keep" and action != "pass":
                raise PfError("keep state is great, but only for pass rules")
            if word == "keep" and words[:1] == ["("]:
                close = words.index(")")
                _state_options([w for w in words[1:close] if w != ","])
                del words[: close + 1]
        elif word in ("icmp-type", "icmp6-type"):
            if af is None:
                raise PfError("must indicate address family with icmp-type/code")
            wanted = ("icmp6", "ipv6-icmp") if word == "icmp6-type" else ("icmp",)
            if not protos or any(p not in wanted for p in protos):
                raise PfError("icmp-type mismatch")
            if (word == "icmp6-type") != (af == "inet6"):
                raise PfError("icmp-type mismatch")
            names = ICMP6_TYPES if word == "icmp6-type" else ICMP_TYPES
            for name in _list(words):
                if name not in names:
                    raise PfError(f"unknown {word} {name}")
        elif word == "rtable":
            if not words or not words[0].isdigit():
                raise PfError("syntax error")
            table = int(words.pop(0))
            if table >= fibs:
                raise PfError("invalid rtable id")
            for source in sources:
                ruleset.rtables.append((source, (interface or ["any"])[0], table))
        elif word == "label":
            if not words or not words[0].startswith('"'):
                raise PfError("syntax error")
            words.pop(0)
        elif word == "scrub" and action == "match":
            if words[:1] != ["("] or ")" not in words:
                raise PfError("syntax error")
            close = words.index(")")
            options = words[1:close]
            if options[:1] != ["max-mss"] or len(options) != 2 or not options[1].isdigit():
                raise PfError("syntax error")
            del words[: close + 1]
        else:
            raise PfError("syntax error")


def _state_options(options: list[str]) -> None:
    limited = False
    index = 0
    while index < len(options):
        word = options[index]
        value = options[index + 1] if index + 1 < len(options) else ""
        if word == "max-src-conn" and value.isdigit():
            if int(value) == 0:
                raise PfError("'max-src-conn' must be > 0")
            limited, index = True, index + 2
        elif word == "max-src-conn-rate" and re.fullmatch(r"\d+/\d+", value):
            if "0" in value.split("/"):
                raise PfError("'max-src-conn-rate' values must be > 0")
            limited, index = True, index + 2
        elif word == "max" and options[index + 1].isdigit():
            index += 2
        elif word == "overload":
            if not limited:
                raise PfError("'overload' requires 'max-src-conn' or 'max-src-conn-rate'")
            index += 2
            if index < len(options) and options[index] == "flush":
                index += 1
        else:
            raise PfError("syntax error")
