"""The proxy's configuration: YAML in, immutable validated objects out.

Declaring and materialising are split (uvicorn's Config/load idea): this module only parses and
validates; nothing here binds a socket. Every refusal names the file, the key path and the reason,
as a `ConfigError` that the CLI prints on one line without a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from proxy.duration import parse_duration

__all__ = [
    "DEFAULT_APP",
    "AccessLogConfig",
    "AdminConfig",
    "AppConfig",
    "Config",
    "ConfigError",
    "HealthCheckConfig",
    "LimitsConfig",
    "ListenerConfig",
    "OutlierConfig",
    "PoolConfig",
    "StateConfig",
    "TimeoutsConfig",
    "load_config",
    "parse_address",
    "parse_config",
    "pool_key",
    "split_pool_key",
]

T = TypeVar("T")

BALANCERS = ("round_robin", "least_in_flight")
# A pool's `labels` become labels of its metrics: Prometheus label names, none of the proxy's own.
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
RESERVED_LABELS = frozenset({"pool", "listener", "status_class", "endpoint", "state", "le", "app", "quantile"})


def label_problem(name: object, value: object) -> str | None:
    """Why `name: value` cannot be a pool label, or None."""
    if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
        return f"label name {name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
    if name in RESERVED_LABELS:
        return f"label name {name!r} is the proxy's own"
    if not isinstance(value, str):
        return f'label {name!r}: the value must be a string (quote numbers: "3")'
    if len(value) > 256:
        return f"label {name!r}: the value is longer than 256 characters"
    return None


LISTENER_ROLES = ("active", "preview")
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # also an application's name
# A host name an application answers for: exact (`shop.example.com`) or one-label wildcard (`*.example.com`).
_APP_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")
DEFAULT_APP = "default"  # the top-level pools and routes: it serves every Host no other application names


def pool_key(app: str, name: str) -> str:
    """A pool's key in the proxy's one pool namespace: the default application's pools keep their names,
    another application's are `app/name` (neither name may hold a '/')."""
    return name if app == DEFAULT_APP else f"{app}/{name}"


def split_pool_key(key: str) -> tuple[str, str]:
    """(application, pool name) of a pool key."""
    app, sep, name = key.partition("/")
    return (app, name) if sep else (DEFAULT_APP, key)


_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PLACEHOLDER = re.compile(r"__bgvar(\d+)__")


class ConfigError(Exception):
    """A configuration that cannot be used; `str()` is the one-line message for the operator."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        self.source, self.path, self.reason = source, path, reason
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class CertificateConfig:
    cert: str  # PEM certificate chain, leaf first (a path, relative ones from the config file's folder)
    key: str  # PEM private key


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS termination on a listener: the first certificate is the default; SNI picks among the others by
    the names they carry (exact and wildcard). TLS 1.2 and 1.3 only."""

    certificates: tuple[CertificateConfig, ...]
    alpn: tuple[str, ...] = ("http/1.1",)
    min_version: str = "1.2"  # or "1.3"
    ciphers: str | None = None  # TLS 1.2 suites (OpenSSL syntax); None: the modern default
    path: str = ""  # where it sits in the config, for errors found when certificates are loaded


@dataclass(frozen=True, slots=True)
class UpstreamTlsConfig:
    """Re-encryption to a pool's endpoints: verified against `ca` (or the system's) unless `verify: false`."""

    ca: str | None = None
    verify: bool = True
    server_name: str | None = None  # SNI and the name verified; None: each endpoint's host
    path: str = ""


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    host: str
    port: int
    tls: TlsConfig | None = None

    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    token: str | None = None
    tls: TlsConfig | None = None
    socket: str | None = None  # the runtime socket's path (`proxy.controlplane.runtime`), off unless set


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """Active probes; `path=None` turns them off (passive ejection still applies)."""

    path: str | None = None
    interval: float = 2.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Passive ejection: an endpoint that fails `consecutive_failures` connects is out for `ejection_time`."""

    consecutive_failures: int = 3
    ejection_time: float = 10.0


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str  # its key (`pool_key`): `app/name` for a pool of an application other than the default
    endpoints: tuple[tuple[str, int], ...]
    balancer: str = "round_robin"
    health_check: HealthCheckConfig = HealthCheckConfig()
    labels: tuple[tuple[str, str], ...] = ()
    tls: UpstreamTlsConfig | None = None


@dataclass(frozen=True, slots=True)
class AppConfig:
    """An application: the Host names it answers for, and its routes (pool keys). Its pools are in
    `Config.pools` under keys `app/name` (`pool_key`)."""

    name: str
    hosts: tuple[str, ...]  # lowercased; `*.example.com` matches one label; empty for the default application
    active: str
    preview: str | None


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    connect: float = 5.0  # upstream TCP connect
    client_header: float = 10.0  # a client's whole request head (slowloris bound)
    upstream_header: float = 60.0  # request sent -> response head received (504 after)
    idle: float = 60.0  # no byte either way on a busy exchange or tunnel
    keepalive: float = 60.0  # an idle client keep-alive connection
    upstream_keepalive: float = 4.0  # an idle pooled upstream connection; below common upstream idle timeouts


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_connections: int = 20000
    max_header_bytes: int = 65536
    max_body_bytes: int = 0  # 0: unlimited (bodies stream, never buffered whole)
    max_in_flight_per_endpoint: int = 0  # 0: unlimited; else 503 when shedding
    max_idle_per_endpoint: int = 256


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Where routes and pools live: in the process (`memory`) or in etcd, shared by a fleet."""

    backend: str = "memory"
    endpoints: tuple[str, ...] = ()
    prefix: str = "/bluegreen/"
    lease_ttl: float = 5.0
    on_partition: str = "fence"  # lease not renewed in time: `fence` (answer 503) or `serve` (stale routes)
    ack_timeout: float = 0.0  # how long a flip waits for every live proxy; 0: twice the lease TTL
    name: str = ""  # this proxy's id in the fleet; default host-pid


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    """One line per finished request (`access_log:`): to a file (opened with O_APPEND) or to stdout."""

    path: str  # a file, or "stdout"
    format: str = "json"  # json | combined


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    listeners: Mapping[str, ListenerConfig]
    admin: AdminConfig
    pools: tuple[PoolConfig, ...]  # every application's, by key (`pool_key`)
    apps: tuple[AppConfig, ...]  # the default application first when the config has top-level pools and routes
    timeouts: TimeoutsConfig = TimeoutsConfig()
    limits: LimitsConfig = LimitsConfig()
    outlier: OutlierConfig = OutlierConfig()
    drain_timeout: float = 30.0
    shutdown_timeout: float = 30.0
    retries: int = 2
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    workers: int = 1
    state: StateConfig = field(default_factory=StateConfig)
    health_check: HealthCheckConfig = HealthCheckConfig()  # the default of pools created at run time
    access_log: AccessLogConfig | None = None  # off unless configured

    def pool(self, name: str) -> PoolConfig | None:
        for p in self.pools:
            if p.name == name:
                return p
        return None

    def app(self, name: str) -> AppConfig | None:
        for a in self.apps:
            if a.name == name:
                return a
        return None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, substitute `${VAR}` / `${VAR:-default}`, validate. Raises ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read: {exc}") from None
    # `${VAR}` is not valid YAML in flow mappings (`{token: ${T:-}}` from the contract), so each one
    # becomes a plain placeholder scalar before parsing and is resolved per key path afterwards.
    refs: list[tuple[str, str | None]] = []

    def hold(match: re.Match[str]) -> str:
        refs.append((match.group(1), match.group(2)))
        return f"__bgvar{len(refs) - 1}__"

    text = _SUBST.sub(hold, text)
    try:
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except ConfigError as exc:
        raise ConfigError(source, exc.path, exc.reason) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(source, "", f"invalid YAML: {where}{problem}") from None
    if refs:
        data = _restore(data, refs)
    return parse_config(data, source)


def _refuse_duplicate_keys(node: yaml.Node | None, path: str = "") -> None:
    """PyYAML keeps the last of two equal keys without a word; a config that says a thing twice is refused,
    naming the key's path and line."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key in seen:
                raise ConfigError("", where, f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
            _refuse_duplicate_keys(value_node, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{i}]")


def _restore(value: Any, refs: list[tuple[str, str | None]]) -> Any:
    if isinstance(value, dict):
        return {k: _restore(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, refs) for v in value]
    if isinstance(value, str) and "__bgvar" in value:
        return _PLACEHOLDER.sub(lambda m: _ref_text(refs[int(m.group(1))]), value)
    return value


def _ref_text(ref: tuple[str, str | None]) -> str:
    name, default = ref
    return f"${{{name}:-{default}}}" if default is not None else f"${{{name}}}"


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate an already-parsed document (a dict shaped like the YAML contract)."""
    if data is None:
        data = {}
    root = _Node(source, "", _substitute(data, source, ""))
    m = root.mapping(
        required=("listeners",),
        optional=(
            "pools",
            "routes",
            "apps",
            "admin",
            "timeouts",
            "limits",
            "health_check",
            "outlier",
            "drain",
            "shutdown_timeout",
            "retries",
            "trusted_proxies",
            "workers",
            "state",
            "access_log",
        ),
    )

    listeners_node = m["listeners"]
    lm = listeners_node.mapping(required=("active",), optional=("preview",))
    base = _base_dir(source)
    listeners = {role: _listener(node, base) for role, node in lm.items()}

    admin = AdminConfig()
    if "admin" in m:
        am = m["admin"].mapping(optional=("host", "port", "token", "tls", "socket"))
        token = am["token"].optional_str() if "token" in am else None
        admin = AdminConfig(
            host=am["host"].host() if "host" in am else admin.host,
            port=am["port"].port() if "port" in am else admin.port,
            token=token or None,
            tls=_tls(am["tls"], base) if "tls" in am else None,
            socket=_socket_path(am["socket"], base) if "socket" in am else None,
        )
        if admin.token is None and not _is_loopback(admin.host):
            raise ConfigError(source, "admin.token", f"an admin listener on {admin.host} (not loopback) needs a token")
    _refuse_shared_addresses(source, {**{f"listeners.{r}": lc for r, lc in listeners.items()}, "admin": admin})

    default_hc = _health_check(m["health_check"], HealthCheckConfig()) if "health_check" in m else HealthCheckConfig()

    pools: list[PoolConfig] = []
    apps: list[AppConfig] = []
    if "pools" in m or "routes" in m or "apps" not in m:
        # The top-level pools and routes: the default application (required unless `apps` names others).
        for key in ("pools", "routes"):
            if key not in m:
                raise ConfigError(source, key, "required key is missing")
        apps.append(_app(DEFAULT_APP, m["pools"], m["routes"], None, default_hc, base, pools))
    if "apps" in m:
        apps_m = m["apps"].mapping(any_keys=True)
        if not apps_m:
            raise m["apps"].fail("name at least one application (or leave `apps` out)")
        claimed: dict[str, str] = {}  # host name -> the application that claimed it first
        for name, node in apps_m.items():
            if not _POOL_NAME.match(name):
                raise ConfigError(source, node.path, "an application name is 1-63 letters, digits, '-', '_' or '.'")
            if name == DEFAULT_APP:
                raise ConfigError(source, node.path, "'default' is the top-level pools and routes; choose another name")
            app_m = node.mapping(required=("hosts", "pools", "routes"))
            hosts = []
            for item in app_m["hosts"].sequence():
                host = item.string().lower().rstrip(".")
                if not _APP_HOST.match(host):
                    raise item.fail(f"not a host name (exact, or *.domain for one label): {item.value!r}")
                if host in claimed:
                    raise item.fail(f"{host} is already a host of application {claimed[host]!r}")
                claimed[host] = name
                hosts.append(host)
            if not hosts:
                raise app_m["hosts"].fail("name at least one host (exact or *.domain)")
            apps.append(_app(name, app_m["pools"], app_m["routes"], tuple(hosts), default_hc, base, pools))

    timeouts = TimeoutsConfig()
    if "timeouts" in m:
        tm = m["timeouts"].mapping(optional=tuple(TimeoutsConfig.__dataclass_fields__))
        timeouts = TimeoutsConfig(**{k: n.duration(positive=True) for k, n in tm.items()})

    limits = LimitsConfig()
    if "limits" in m:
        lim = m["limits"].mapping(optional=tuple(LimitsConfig.__dataclass_fields__))
        limits = LimitsConfig(**{k: n.integer(minimum=0) for k, n in lim.items()})
        if limits.max_header_bytes < 1024:
            raise ConfigError(source, "limits.max_header_bytes", "must be at least 1024")

    outlier = OutlierConfig()
    if "outlier" in m:
        om = m["outlier"].mapping(optional=("consecutive_failures", "ejection_time"))
        outlier = OutlierConfig(
            consecutive_failures=om["consecutive_failures"].integer(minimum=1)
            if "consecutive_failures" in om
            else outlier.consecutive_failures,
            ejection_time=om["ejection_time"].duration(positive=True)
            if "ejection_time" in om
            else outlier.ejection_time,
        )

    drain_timeout = 30.0
    if "drain" in m:
        dm = m["drain"].mapping(optional=("timeout",))
        if "timeout" in dm:
            drain_timeout = dm["timeout"].duration()

    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if "trusted_proxies" in m:
        for item in m["trusted_proxies"].sequence():
            try:
                trusted.append(ipaddress.ip_network(item.string(), strict=False))
            except ValueError as exc:
                raise ConfigError(source, item.path, f"not a CIDR: {exc}") from None
    else:
        trusted = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]

    state = StateConfig()
    if "state" in m:
        sm = m["state"].mapping(
            required=("backend",), optional=("endpoints", "prefix", "lease_ttl", "on_partition", "ack_timeout", "name")
        )
        backend = sm["backend"].choice(("memory", "etcd"))
        endpoints: tuple[str, ...] = ()
        if "endpoints" in sm:
            endpoints = tuple(
                f"{h}:{p}" for h, p in (n.convert(parse_address, n.string()) for n in sm["endpoints"].sequence())
            )
        if backend == "etcd" and not endpoints:
            raise ConfigError(source, "state.endpoints", "etcd needs at least one endpoint (host:port)")
        prefix = sm["prefix"].string() if "prefix" in sm else "/bluegreen/"
        if not prefix.endswith("/"):
            raise sm["prefix"].fail("must end with '/'")
        ttl = sm["lease_ttl"].duration(positive=True) if "lease_ttl" in sm else 5.0
        if ttl < 1 or ttl != int(ttl):
            raise sm["lease_ttl"].fail("etcd leases are whole seconds, at least 1s")
        state = StateConfig(
            backend=backend,
            endpoints=endpoints,
            prefix=prefix,
            lease_ttl=ttl,
            on_partition=sm["on_partition"].choice(("fence", "serve")) if "on_partition" in sm else "fence",
            ack_timeout=sm["ack_timeout"].duration() if "ack_timeout" in sm else 0.0,
            name=sm["name"].string() if "name" in sm else "",
        )

    access_log = None
    if "access_log" in m:
        alm = m["access_log"].mapping(required=("path",), optional=("format",))
        path = alm["path"].string()
        access_log = AccessLogConfig(
            path=path if path == "stdout" else _file(alm["path"], _base_dir(source)),
            format=alm["format"].choice(("json", "combined")) if "format" in alm else "json",
        )

    return Config(
        source=source,
        listeners=listeners,
        admin=admin,
        pools=tuple(pools),
        apps=tuple(apps),
        timeouts=timeouts,
        limits=limits,
        outlier=outlier,
        drain_timeout=drain_timeout,
        shutdown_timeout=m["shutdown_timeout"].duration() if "shutdown_timeout" in m else 30.0,
        retries=m["retries"].integer(minimum=0, maximum=10) if "retries" in m else 2,
        trusted_proxies=tuple(trusted),
        workers=m["workers"].integer(minimum=1, maximum=64) if "workers" in m else 1,
        state=state,
        health_check=default_hc,
        access_log=access_log,
    )


def parse_address(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    if value.startswith("["):
        host, sep, port_s = value[1:].partition("]:")
    else:
        host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"bad port in {value!r}")
    _check_host(host)
    return host, int(port_s)


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if host == "localhost" or re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*", host):
        return
    raise ValueError(f"bad host {host!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _substitute(value: Any, source: str, path: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, source, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        env = os.environ.get(name)
        if env is None or (env == "" and default is not None):
            if default is None:
                raise ConfigError(source, path, f"environment variable {name} is not set (use ${{{name}:-default}})")
            return default
        return env

    result = _SUBST.sub(repl, value)
    if _SUBST.fullmatch(value) and result != "":
        # A value that is one substitution takes the type its text has (`port: ${PORT:-8080}` is an int).
        try:
            typed = yaml.safe_load(result)
        except yaml.YAMLError:
            return result
        if isinstance(typed, int | float | bool):
            return typed
    return result


class _Node:
    """One value of the document, with the key path that leads to it for error messages."""

    __slots__ = ("path", "source", "value")

    def __init__(self, source: str, path: str, value: Any) -> None:
        self.source, self.path, self.value = source, path, value

    def fail(self, reason: str) -> ConfigError:
        return ConfigError(self.source, self.path or "<root>", reason)

    def _child(self, key: str | int) -> _Node:
        if isinstance(key, int):
            return _Node(self.source, f"{self.path}[{key}]", self.value[key])
        return _Node(self.source, f"{self.path}.{key}" if self.path else key, self.value[key])

    def mapping(
        self, required: tuple[str, ...] = (), optional: tuple[str, ...] = (), any_keys: bool = False
    ) -> dict[str, _Node]:
        if not isinstance(self.value, dict):
            raise self.fail(f"expected a mapping, got {_kind(self.value)}")
        for key in self.value:
            if not isinstance(key, str):
                raise self.fail(f"keys must be strings, got {key!r}")
            if not any_keys and key not in required and key not in optional:
                known = ", ".join(required + optional)
                raise self._child(key).fail(f"unknown key (known: {known})")
        for key in required:
            if key not in self.value:
                where = f"{self.path}.{key}" if self.path else key
                raise ConfigError(self.source, where, "required key is missing")
        return {key: self._child(key) for key in self.value}

    def sequence(self) -> list[_Node]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected a list, got {_kind(self.value)}")
        return [self._child(i) for i in range(len(self.value))]

    def string(self) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.fail(f"expected a non-empty string, got {_kind(self.value)}")
        return self.value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(f"expected true or false, got {_kind(self.value)}")
        return self.value

    def optional_str(self) -> str | None:
        if self.value is None or self.value == "":
            return None
        return self.string()

    def choice(self, options: tuple[str, ...]) -> str:
        value = self.string()
        if value not in options:
            raise self.fail(f"expected one of {', '.join(options)}, got {value!r}")
        return value

    def integer(self, minimum: int | None = None, maximum: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"expected an integer, got {_kind(self.value)}")
        if minimum is not None and self.value < minimum:
            raise self.fail(f"must be at least {minimum}, got {self.value}")
        if maximum is not None and self.value > maximum:
            raise self.fail(f"must be at most {maximum}, got {self.value}")
        return self.value

    def port(self) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int) or not 0 <= self.value <= 65535:
            raise self.fail(f"expected a port number 0-65535, got {self.value!r}")
        return self.value

    def host(self) -> str:
        host = self.string()
        self.convert(_check_host, host)
        return host

    def duration(self, positive: bool = False) -> float:
        seconds = self.convert(parse_duration, self.value)
        if positive and seconds <= 0:
            raise self.fail("must be greater than zero")
        return seconds

    def convert(self, fn: Callable[[Any], T], value: Any) -> T:
        try:
            return fn(value)
        except ValueError as exc:
            raise self.fail(str(exc)) from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def _refuse_shared_addresses(source: str, bound: Mapping[str, ListenerConfig | AdminConfig]) -> None:
    """Two listeners (or a listener and the admin API) on one address: the second would take the first's
    traffic, so refuse it. A wildcard host overlaps every address of its port; port 0 is any free port."""
    seen: list[tuple[str, str, int]] = []
    for key, lc in bound.items():
        for other, host, port in seen:
            if lc.port and lc.port == port and (lc.host == host or {lc.host, host} & _WILDCARD_HOSTS):
                raise ConfigError(source, f"{key}.port", f"{lc.host}:{lc.port} is already the address of {other}")
        seen.append((key, lc.host, lc.port))


def _listener(node: _Node, base: Path | None) -> ListenerConfig:
    lm = node.mapping(required=("port",), optional=("host", "tls"))
    return ListenerConfig(
        host=lm["host"].host() if "host" in lm else "127.0.0.1",
        port=lm["port"].port(),
        tls=_tls(lm["tls"], base) if "tls" in lm else None,
    )


def _socket_path(node: _Node, base: Path | None) -> str:
    """A Unix socket's path, relative to the config file: in a directory that exists, short enough to bind."""
    path = _file(node, base)
    if not os.path.isdir(os.path.dirname(path) or "."):
        raise node.fail(f"directory {os.path.dirname(path)} does not exist")
    if len(os.fsencode(path)) > 100:  # sun_path holds 108 bytes, and binding goes through PATH.PID.tmp
        raise node.fail(f"path too long for a Unix socket ({len(os.fsencode(path))} bytes; at most 100)")
    return path


def _base_dir(source: str) -> Path | None:
    """Relative certificate paths are read from the config file's folder (not the working directory)."""
    return None if source.startswith("<") else Path(source).resolve().parent


def _file(node: _Node, base: Path | None) -> str:
    path = Path(node.string())
    return str(base / path) if base is not None and not path.is_absolute() else str(path)


def _tls(node: _Node, base: Path | None) -> TlsConfig:
    tm = node.mapping(required=("certificates",), optional=("alpn", "min_version", "ciphers"))
    certificates = []
    items = tm["certificates"].sequence()
    if not items:
        raise tm["certificates"].fail("at least one certificate is required")
    for item in items:
        cm = item.mapping(required=("cert", "key"))
        certificates.append(CertificateConfig(cert=_file(cm["cert"], base), key=_file(cm["key"], base)))
    alpn: tuple[str, ...] = ("http/1.1",)
    if "alpn" in tm:
        alpn = tuple(i.choice(("http/1.1",)) for i in tm["alpn"].sequence())  # h2 comes with an HTTP/2 data plane
        if not alpn:
            raise tm["alpn"].fail("name at least one protocol (http/1.1)")
    return TlsConfig(
        certificates=tuple(certificates),
        alpn=alpn,
        min_version=tm["min_version"].choice(("1.2", "1.3")) if "min_version" in tm else "1.2",
        ciphers=tm["ciphers"].string() if "ciphers" in tm else None,
        path=node.path,
    )


def _upstream_tls(node: _Node, base: Path | None) -> UpstreamTlsConfig:
    if node.value is True:
        return UpstreamTlsConfig(path=node.path)
    um = node.mapping(optional=("ca", "verify", "server_name"))
    verify = um["verify"].boolean() if "verify" in um else True
    return UpstreamTlsConfig(
        ca=_file(um["ca"], base) if "ca" in um else None,
        verify=verify,
        server_name=um["server_name"].string() if "server_name" in um else None,
        path=node.path,
    )


def _health_check(node: _Node, base: HealthCheckConfig) -> HealthCheckConfig:
    hm = node.mapping(optional=("path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold"))
    path = hm["path"].optional_str() if "path" in hm else base.path
    if path is not None and not path.startswith("/"):
        raise hm["path"].fail("must start with '/'")
    hc = HealthCheckConfig(
        path=path,
        interval=hm["interval"].duration(positive=True) if "interval" in hm else base.interval,
        timeout=hm["timeout"].duration(positive=True) if "timeout" in hm else base.timeout,
        healthy_threshold=hm["healthy_threshold"].integer(minimum=1)
        if "healthy_threshold" in hm
        else base.healthy_threshold,
        unhealthy_threshold=hm["unhealthy_threshold"].integer(minimum=1)
        if "unhealthy_threshold" in hm
        else base.unhealthy_threshold,
    )
    if hc.timeout > hc.interval:
        raise node.fail("timeout must not exceed interval")
    return hc


def _app(
    name: str,
    pools_node: _Node,
    routes_node: _Node,
    hosts: tuple[str, ...] | None,
    default_hc: HealthCheckConfig,
    base: Path | None,
    pools: list[PoolConfig],
) -> AppConfig:
    """One application's pools (appended to `pools`, by key) and routes."""
    pm = pools_node.mapping(any_keys=True)
    if not pm:
        raise pools_node.fail("at least one pool is required")
    for pool_name, node in pm.items():
        if not _POOL_NAME.match(pool_name):
            raise node.fail("a pool name is 1-63 letters, digits, '-', '_' or '.'")
        pools.append(_pool(pool_key(name, pool_name), node, default_hc, base))
    rm = routes_node.mapping(required=("active",), optional=("preview",))
    active = rm["active"].string()
    preview = rm["preview"].optional_str() if "preview" in rm else None
    for key, value in (("active", active), ("preview", preview)):
        if value is not None and value not in pm:
            raise rm[key].fail(f"unknown pool {value!r} (pools: {', '.join(pm)})")
    return AppConfig(
        name=name,
        hosts=hosts or (),
        active=pool_key(name, active),
        preview=pool_key(name, preview) if preview is not None else None,
    )


def _pool(name: str, node: _Node, default_hc: HealthCheckConfig, base: Path | None) -> PoolConfig:
    pm = node.mapping(required=("endpoints",), optional=("balancer", "health_check", "labels", "tls"))
    endpoints = []
    for item in pm["endpoints"].sequence():
        address = item.convert(parse_address, item.string())
        if address in endpoints:
            raise item.fail(f"duplicate endpoint {item.value!r}")
        endpoints.append(address)
    return PoolConfig(
        name=name,
        endpoints=tuple(endpoints),
        balancer=pm["balancer"].choice(BALANCERS) if "balancer" in pm else "round_robin",
        health_check=_health_check(pm["health_check"], default_hc) if "health_check" in pm else default_hc,
        labels=_labels(pm["labels"]) if "labels" in pm else (),
        tls=_upstream_tls(pm["tls"], base) if "tls" in pm else None,
    )


def _labels(node: _Node) -> tuple[tuple[str, str], ...]:
    labels = []
    for key, child in node.mapping(any_keys=True).items():
        problem = label_problem(key, child.value)
        if problem:
            raise child.fail(problem)
        labels.append((key, child.value))
    return tuple(sorted(labels))
