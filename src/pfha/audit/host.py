"""Host hardening: the Linux equivalents of the tutorial's hardening steps, checked.

The tutorial hardens each firewall by hand: sshd_config (protocol 2, no root login, keys
only, AllowUsers), hosts.allow (default deny), restrictive mount options (its fstab table),
a few sysctls, crontab restricted to listed users, and an AIDE baseline checked weekly. This
module checks a host for the same, either the live one (``/``, sysctls read from
``/proc/sys`` and mount options from ``/proc/mounts``) or a tree of files (``--root DIR``:
only the files, with kernel defaults for sysctls nobody sets).

It reads files and never changes anything. The checks that need the ruleset (is sshd
listening where pf lets ssh in?) live in :mod:`pfha.audit.crosscheck`.
"""

from __future__ import annotations

import glob
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pfha.audit.findings import Finding, Place, Severity


@dataclass(frozen=True)
class HostTree:
    """The files of a host: ``root`` is ``/`` for the live host, else a folder mirroring it."""

    root: Path
    live: bool = False

    def path(self, name: str) -> Path:
        return self.root / name.lstrip("/")

    def shown(self, name: str) -> str:
        """A path as a finding shows it (the real file, so an editor can open it)."""
        return str(self.path(name))

    def read(self, name: str) -> str | None:
        try:
            return self.path(name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def exists(self, name: str) -> bool:
        return self.path(name).exists()


def check_host(tree: HostTree, managed: Mapping[str, str] | None = None, forwarding: bool | None = None) -> list[Finding]:
    """All host checks. ``managed`` are the sysctls the node's config makes pfha set at start
    (:meth:`pfha.node.config.Host.sysctls`): in a tree of files they count as set; on the live
    host only the running values count. ``forwarding`` True also requires IP forwarding on."""
    findings: list[Finding] = []
    for check in (sshd, hosts_allow, mounts, cron, aide):
        findings.extend(check(tree))
    findings.extend(sysctls(tree, managed or {}, forwarding))
    return findings


# ---------------------------------------------------------------------------------------------
# sshd


@dataclass(frozen=True)
class SshdOption:
    keyword: str  # lower case
    args: tuple[str, ...]
    place: Place


def read_sshd_config(tree: HostTree, name: str = "/etc/ssh/sshd_config", depth: int = 0) -> list[SshdOption] | None:
    """sshd_config's global options in file order, ``Include`` followed (sshd_config(5)).

    Options after the first ``Match`` apply only to some connections and are left out.
    """
    text = tree.read(name)
    if text is None:
        return None
    out: list[SshdOption] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = _sshd_words(raw)
        if not words:
            continue
        keyword = words[0].lower()
        if keyword == "match":
            break
        if keyword == "include" and depth < 8:
            for pattern in words[1:]:
                full = pattern if pattern.startswith("/") else f"/etc/ssh/{pattern}"
                for found in sorted(glob.glob(str(tree.path(full)))):
                    rel = "/" + str(Path(found).relative_to(tree.root))
                    out.extend(read_sshd_config(tree, rel, depth + 1) or [])
            continue
        out.append(SshdOption(keyword, tuple(words[1:]), Place(tree.shown(name), number)))
    return out


def _sshd_words(line: str) -> list[str]:
    """Split a line as OpenSSH does: ``Keyword value`` or ``Keyword=value``, ``#`` starting a
    comment (also after a value, as OpenSSH 8.7+ reads it)."""
    match = re.match(r"^\s*([^\s=#]+)(?:\s*=\s*|\s+|$)(.*)$", line)
    if not match:
        return []
    words = [match.group(1)]
    for word in re.findall(r'"[^"]*"|\S+', match.group(2)):
        if word.startswith("#"):
            break
        words.append(word.strip('"'))
    return words


def sshd_value(options: list[SshdOption], keyword: str) -> SshdOption | None:
    """sshd uses the first value it reads for most keywords (sshd_config(5))."""
    return next((o for o in options if o.keyword == keyword), None)


def sshd_all(options: list[SshdOption], keyword: str) -> list[SshdOption]:
    return [o for o in options if o.keyword == keyword]


def sshd(tree: HostTree) -> Iterator[Finding]:
    name = "/etc/ssh/sshd_config"
    options = read_sshd_config(tree)
    if options is None:
        yield Finding("host.sshd-config", Severity.INFO, Place(tree.shown(name)),
                      "no sshd_config: sshd is not installed, so ssh hardening was not checked",
                      "nothing to do unless you log in over ssh; then install openssh-server and rerun")
        return
    file_place = Place(tree.shown(name))

    protocol = sshd_value(options, "protocol")
    if protocol and "1" in ",".join(protocol.args).split(","):
        yield Finding("host.sshd-protocol", Severity.ERROR, protocol.place,
                      f"Protocol {' '.join(protocol.args)} allows SSH protocol 1, which is broken",
                      "use 'Protocol 2' (OpenSSH 7.4 and later only speak 2 and ignore the keyword)")

    root = sshd_value(options, "permitrootlogin")
    root_value = root.args[0].lower() if root and root.args else "prohibit-password"
    if root_value != "no":
        severity = Severity.ERROR if root_value == "yes" else Severity.WARNING
        yield Finding("host.sshd-root-login", severity, root.place if root else file_place,
                      f"PermitRootLogin is {root_value}{'' if root else ' (the default)'}; the tutorial logs in as a "
                      "user and su's to root",
                      "set 'PermitRootLogin no'")

    password = sshd_value(options, "passwordauthentication")
    if not password or password.args[:1] != ("no",):
        yield Finding("host.sshd-password", Severity.WARNING, password.place if password else file_place,
                      "PasswordAuthentication is " + (password.args[0] if password else "yes (the default)") +
                      "; passwords can be guessed, the tutorial allows keys only",
                      "set 'PasswordAuthentication no' once your key works")
    elif _kbd_interactive_on(options):
        kbd = sshd_value(options, "kbdinteractiveauthentication") or sshd_value(options, "challengeresponseauthentication")
        yield Finding("host.sshd-password", Severity.WARNING, kbd.place if kbd else file_place,
                      "passwords are still accepted through PAM keyboard-interactive authentication "
                      "(UsePAM yes with KbdInteractiveAuthentication yes)",
                      "set 'KbdInteractiveAuthentication no' (older: 'ChallengeResponseAuthentication no')")

    empty = sshd_value(options, "permitemptypasswords")
    if empty and empty.args[:1] == ("yes",):
        yield Finding("host.sshd-empty-passwords", Severity.ERROR, empty.place,
                      "PermitEmptyPasswords yes lets accounts without a password log in",
                      "set 'PermitEmptyPasswords no'")

    if not sshd_all(options, "allowusers") and not sshd_all(options, "allowgroups"):
        yield Finding("host.sshd-allowusers", Severity.WARNING, file_place,
                      "neither AllowUsers nor AllowGroups is set: every account with a key may log in",
                      "add 'AllowUsers admin' (your unprivileged user), as the tutorial does")

    for port in sshd_all(options, "port"):
        if port.args[:1] == ("21",):
            yield Finding("host.sshd-port", Severity.WARNING, port.place,
                          "sshd listens on port 21, FTP's port (ssh's usual port is 22; the tutorial's text mixes "
                          "them up): FTP scanners will hammer it, and pf rules or helpers meant for FTP catch it",
                          "pick an unused port (the tutorial uses 8081) and pass that port in pf.conf")


def _kbd_interactive_on(options: list[SshdOption]) -> bool:
    pam = sshd_value(options, "usepam")
    if not pam or pam.args[:1] != ("yes",):
        return False
    kbd = sshd_value(options, "kbdinteractiveauthentication") or sshd_value(options, "challengeresponseauthentication")
    return kbd is None or kbd.args[:1] == ("yes",)


def sshd_ports(options: list[SshdOption]) -> list[int]:
    ports = [int(o.args[0]) for o in sshd_all(options, "port") if o.args and o.args[0].isdigit()]
    return ports or [22]


def sshd_listen_addresses(options: list[SshdOption]) -> list[tuple[str, int | None, Place]]:
    """(address, port or None, place) for each ListenAddress; empty: all addresses."""
    out = []
    for option in sshd_all(options, "listenaddress"):
        if not option.args:
            continue
        value = option.args[0]
        port = None
        match = re.match(r"^\[(.+)\]:(\d+)$", value) or re.match(r"^([0-9.]+):(\d+)$", value)
        if match:
            value, port = match.group(1), int(match.group(2))
        if len(option.args) >= 3 and option.args[1] == "rdomain":
            pass
        out.append((value, port, option.place))
    return out


# ---------------------------------------------------------------------------------------------
# hosts.allow


@dataclass(frozen=True)
class AccessRule:
    daemons: tuple[str, ...]
    clients: tuple[str, ...]
    action: str  # "allow" or "deny"
    place: Place


def read_hosts_access(tree: HostTree, name: str, default_action: str) -> list[AccessRule] | None:
    """hosts_access(5) lines ``daemons : clients [: option ...]``, backslash continuations joined."""
    text = tree.read(name)
    if text is None:
        return None
    rules = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(":")]
        if len(parts) < 2:
            continue
        action = default_action
        for option in parts[2:]:
            if option.lower() in ("allow", "deny"):
                action = option.lower()
        rules.append(AccessRule(tuple(_split_list(parts[0])), tuple(_split_list(parts[1])), action,
                                Place(tree.shown(name), start)))
    return rules


def _split_list(text: str) -> list[str]:
    return [w for w in re.split(r"[,\s]+", text) if w]


def hosts_allow(tree: HostTree) -> Iterator[Finding]:
    name = "/etc/hosts.allow"
    allow = read_hosts_access(tree, name, "allow")
    deny = read_hosts_access(tree, "/etc/hosts.deny", "deny") or []
    if allow is None and not deny:
        yield Finding("host.hosts-allow", Severity.WARNING, Place(tree.shown(name)),
                      "no hosts.allow or hosts.deny: tcp-wrapped daemons (Debian's sshd uses libwrap) accept "
                      "every client pf lets through",
                      "write hosts.allow as the tutorial does: allow localhost and your LAN for sshd, then 'ALL : ALL : deny'")
        return
    allow = allow or []
    closing = [r for r in allow if r.daemons == ("ALL",) and r.clients == ("ALL",) and r.action == "deny"]
    closing += [r for r in deny if r.daemons == ("ALL",) and r.clients == ("ALL",)]
    if not closing:
        yield Finding("host.hosts-allow", Severity.WARNING, Place(tree.shown(name)),
                      "hosts.allow/hosts.deny have no default deny ('ALL : ALL : deny'): clients not listed are allowed",
                      "end hosts.allow with 'ALL : ALL : deny'")
    text = tree.read(name) or ""
    for number, line in enumerate(text.splitlines(), 1):
        if "ipf.rules" in line or "ipfilter" in line.lower():
            yield Finding("host.hosts-allow-ipf", Severity.INFO, Place(tree.shown(name), number),
                          "this comment sends you to /etc/ipf.rules (IPFilter), but this firewall runs pf: the rule that "
                          "lets ssh in from outside is in pf.conf",
                          "say pf.conf in the comment; when you allow a host here, pass it in pf.conf too")


# ---------------------------------------------------------------------------------------------
# Mount options: the tutorial's fstab table, with Linux's /home for FreeBSD's /usr/home.

MOUNT_TABLE: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = (
    (("/",), frozenset({"nosuid"})),
    (("/tmp",), frozenset({"noexec", "nosuid", "nodev"})),
    (("/usr",), frozenset({"ro"})),
    (("/home", "/usr/home"), frozenset({"noexec", "nosuid"})),
    (("/usr/local",), frozenset({"ro", "nosuid"})),
    (("/var",), frozenset({"noexec", "nosuid"})),
)


@dataclass(frozen=True)
class Mount:
    device: str
    point: str
    fstype: str
    options: frozenset[str]
    place: Place


def read_fstab(tree: HostTree) -> list[Mount] | None:
    text = tree.read("/etc/fstab")
    if text is None:
        return None
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        fields = line.split()
        if len(fields) < 4:
            continue
        out.append(Mount(fields[0], fields[1], fields[2], frozenset(fields[3].split(",")),
                         Place(tree.shown("/etc/fstab"), number)))
    return out


def _live_options(point: str) -> frozenset[str] | None:
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == point:
            found = frozenset(fields[3].split(","))  # the last mount on a point is the visible one
    return found


def mounts(tree: HostTree) -> Iterator[Finding]:
    fstab = read_fstab(tree)
    if fstab is None:
        yield Finding("host.mount-options", Severity.INFO, Place(tree.shown("/etc/fstab")),
                      "no fstab: mount options were not checked",
                      "check that /tmp, /var and /home are mounted nosuid and noexec as in the tutorial's table")
        return
    by_point = {m.point: m for m in fstab}
    usr_separate = "/usr" in by_point
    for points, required in MOUNT_TABLE:
        mount = next((by_point[p] for p in points if p in by_point), None)
        if mount is None:
            continue
        options = set(mount.options)
        if tree.live:
            live = _live_options(mount.point)
            if live is not None:
                options = set(live)
        if "ro" not in options:
            options.add("rw")
        missing = sorted(o for o in required if o not in options)
        if mount.point == "/" and not usr_separate:
            missing = [o for o in missing if o != "nosuid"]  # su and sudo live on / then
        if not missing:
            continue
        want = ",".join(sorted((set(mount.options) - {"rw", "defaults"} - ({"rw"} if "ro" in required else set()))
                               | set(required)))
        caveat = ""
        if {"ro", "noexec"} & set(missing) and mount.point in ("/usr", "/usr/local", "/var", "/tmp"):
            caveat = "; remount it read-write/exec while upgrading (apt runs scripts from /var and /tmp), as the tutorial does"
        yield Finding("host.mount-options", Severity.WARNING, mount.place,
                      f"{mount.point} is mounted without {', '.join(missing)} (the tutorial's table: "
                      f"{mount.point} {','.join(sorted(required))})",
                      f"mount {mount.point} with options {want}{caveat}")


# ---------------------------------------------------------------------------------------------
# sysctls

# (sysctl, acceptable values, value the kernel starts with, severity, why, fix value)
SYSCTL_CHECKS: tuple[tuple[str, frozenset[str], str, Severity, str, str], ...] = (
    ("net.ipv4.conf.all.accept_redirects", frozenset({"0"}), "1", Severity.WARNING,
     "ICMP redirects can rewrite this firewall's routes (the tutorial's icmp_drop_redirects)", "0"),
    ("net.ipv4.conf.default.accept_redirects", frozenset({"0"}), "1", Severity.WARNING,
     "new interfaces accept ICMP redirects (the tutorial's icmp_drop_redirects)", "0"),
    ("net.ipv4.conf.all.send_redirects", frozenset({"0"}), "1", Severity.WARNING,
     "the firewall sends ICMP redirects, telling hosts to route around it", "0"),
    ("net.ipv4.conf.all.accept_source_route", frozenset({"0"}), "0", Severity.WARNING,
     "source-routed packets choose their own path through the firewall", "0"),
    ("net.ipv4.conf.all.rp_filter", frozenset({"1", "2"}), "0", Severity.WARNING,
     "no reverse-path filter: spoofed sources are accepted unless pf's antispoof covers every interface", "2"),
    ("net.ipv4.tcp_syncookies", frozenset({"1"}), "1", Severity.WARNING,
     "without SYN cookies a SYN flood fills the listen queues of the firewall's own services", "1"),
)


def read_sysctl_files(tree: HostTree) -> dict[str, tuple[str, Place]]:
    """What systemd-sysctl would set: sysctl.d files by name (/etc overrides /usr/lib), then
    /etc/sysctl.conf."""
    chosen: dict[str, Path] = {}
    for folder in ("/usr/lib/sysctl.d", "/lib/sysctl.d", "/usr/local/lib/sysctl.d", "/run/sysctl.d", "/etc/sysctl.d"):
        base = tree.path(folder)
        if base.is_dir():
            for path in sorted(base.glob("*.conf")):
                chosen[path.name] = path
    files = [chosen[n] for n in sorted(chosen)]
    sysctl_conf = tree.path("/etc/sysctl.conf")
    if sysctl_conf.is_file() and not any(p.resolve() == sysctl_conf.resolve() for p in files):
        files.append(sysctl_conf)
    values: dict[str, tuple[str, Place]] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].split(";", 1)[0].strip()
            if "=" not in line:
                continue
            key, value = (part.strip() for part in line.split("=", 1))
            values[key.lstrip("-").replace("/", ".")] = (value, Place(str(path), number))
    return values


def _live_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def sysctls(tree: HostTree, managed: Mapping[str, str] | None = None,
            forwarding: bool | None = None) -> Iterator[Finding]:
    configured = read_sysctl_files(tree)
    managed = managed or {}
    checks = list(SYSCTL_CHECKS)
    if forwarding:
        checks.append(("net.ipv4.ip_forward", frozenset({"1"}), "0", Severity.ERROR,
                       "forwarding is off, so this firewall passes no traffic between its interfaces "
                       "(the tutorial's gateway_enable)", "1"))
    for name, good, default, severity, why, fix in checks:
        value_place = configured.get(name)
        if tree.live:
            value = _live_sysctl(name)
            origin = "running"
        elif name in managed:
            value, origin = managed[name], "set by pfha node from its [host] settings"
        else:
            value = value_place[0] if value_place else None
            origin = "set"
        if value is None:
            value, origin = default, "kernel default"
        if value in good:
            continue
        place = value_place[1] if value_place else Place(tree.shown("/etc/sysctl.d/"))
        yield Finding("host.sysctl", severity, place, f"{name} = {value} ({origin}): {why}",
                      f"set {name} = {fix} in /etc/sysctl.d/90-pfha.conf (pfha node applies its [host] settings at start)")


# ---------------------------------------------------------------------------------------------
# cron


def cron(tree: HostTree) -> Iterator[Finding]:
    allow = next((n for n in ("/etc/cron.allow", "/var/cron/allow") if tree.exists(n)), None)
    if allow is None and (tree.exists("/etc/crontab") or tree.exists("/usr/bin/crontab")):
        yield Finding("host.cron-access", Severity.WARNING, Place(tree.shown("/etc/cron.allow")),
                      "no cron.allow: every user may install cron jobs",
                      "create /etc/cron.allow listing root and your admin user, as the tutorial does with /var/cron/allow")
    crontab = tree.path("/etc/crontab")
    try:
        mode = crontab.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        yield Finding("host.crontab-mode", Severity.WARNING, Place(str(crontab)),
                      f"/etc/crontab is mode {stat.S_IMODE(mode):o}: other users can read what root runs and when",
                      "chmod 600 /etc/crontab")


# ---------------------------------------------------------------------------------------------
# AIDE

AIDE_BINARIES = ("/usr/bin/aide", "/usr/sbin/aide", "/usr/local/bin/aide")
AIDE_DATABASES = ("/var/lib/aide/aide.db", "/var/lib/aide/aide.db.gz", "/var/db/aide/databases/aide.db")
AIDE_SCHEDULES = ("/etc/cron.daily/aide", "/etc/cron.daily/dailyaidecheck",
                  "/etc/systemd/system/timers.target.wants/dailyaidecheck.timer")


def aide(tree: HostTree) -> Iterator[Finding]:
    if not any(tree.exists(b) for b in AIDE_BINARIES):
        yield Finding("host.aide", Severity.WARNING, None,
                      "AIDE is not installed: there is no file-integrity baseline to notice a changed binary",
                      "apt-get install aide, then aideinit (the tutorial's 'aide --init')")
        return
    if not any(tree.exists(d) for d in AIDE_DATABASES):
        yield Finding("host.aide", Severity.WARNING, Place(tree.shown(AIDE_DATABASES[0])),
                      "AIDE is installed but has no database: nothing to compare against",
                      "run aideinit (or aide --init and move aide.db.new to aide.db)")
    scheduled = any(tree.exists(s) for s in AIDE_SCHEDULES)
    if not scheduled:
        text = "\n".join(filter(None, [tree.read("/etc/crontab")] +
                                [tree.read("/" + str(p.relative_to(tree.root)))
                                 for p in sorted(tree.path("/etc/cron.d").glob("*"))
                                 if tree.path("/etc/cron.d").is_dir()]))
        scheduled = re.search(r"aide\b.*--check|aide\b.*-C\b", text) is not None
    if not scheduled:
        yield Finding("host.aide", Severity.WARNING, Place(tree.shown("/etc/crontab")),
                      "AIDE never runs a check: a baseline nobody compares against finds nothing",
                      "schedule it, as the tutorial does: '0 4 * * 7 root /usr/bin/aide --check' in /etc/crontab "
                      "(Debian's aide-common also ships a daily timer)")
