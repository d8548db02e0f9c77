"""TLS for the listeners (termination) and for upstream pools (re-encryption).

A listener's `ServerTls` holds one outer `ssl.SSLContext` that its server was created with, carrying
the default certificate, and one context per other certificate, picked by SNI (exact names first,
then one-label wildcards) from the names each certificate carries. A reload replaces the SNI table
in one reference write and loads the default certificate into the outer context again: handshakes
from then on get the new certificates, connections already open keep theirs (OpenSSL copies the
certificate into each connection at its start).

Session resumption is OpenSSL's: TLS 1.3 tickets and TLS 1.2 session tickets, with keys each process
generates at start (so a restart or an upgrade rotates them; workers do not share them).
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from proxy.config import CertificateConfig, Config, ConfigError, TlsConfig, UpstreamTlsConfig

# Mozilla's "intermediate" TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 suites are OpenSSL's).
MODERN_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    context: ssl.SSLContext
    names: tuple[str, ...]  # DNS names it is valid for, lowercased ("*.example.com" for a wildcard)
    not_after: datetime.datetime


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:  # an old certificate without SAN: its common name
        names = [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(names)


def _context(tls: TlsConfig, source: str = "") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(ctx, tls, source)
    return ctx


def _configure(ctx: ssl.SSLContext, tls: TlsConfig, source: str) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    try:
        ctx.set_ciphers(tls.ciphers or MODERN_CIPHERS)
    except ssl.SSLError:
        raise ConfigError(source, f"{tls.path}.ciphers", f"no cipher suite matches {tls.ciphers!r}") from None
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(tls.alpn))


def load_certificate(tls: TlsConfig, index: int, source: str) -> LoadedCertificate:
    """Load one certificate and key into a context of `tls`'s settings; ConfigError names the file and why."""
    cc: CertificateConfig = tls.certificates[index]
    where = f"{tls.path}.certificates[{index}]"
    try:
        with open(cc.cert, "rb") as f:
            pem = f.read()
    except FileNotFoundError:
        raise ConfigError(source, f"{where}.cert", f"{cc.cert}: file not found") from None
    except OSError as exc:
        raise ConfigError(source, f"{where}.cert", f"{cc.cert}: cannot read: {exc.strerror}") from None
    try:
        leaf = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(source, f"{where}.cert", f"{cc.cert}: not a PEM certificate") from None
    not_after = leaf.not_valid_after_utc
    now = datetime.datetime.now(datetime.UTC)
    if not_after <= now:
        raise ConfigError(source, f"{where}.cert", f"{cc.cert}: expired on {not_after:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise ConfigError(source, f"{where}.cert", f"{cc.cert}: not valid before {leaf.not_valid_before_utc} UTC")
    ctx = _context(tls, source)
    try:
        ctx.load_cert_chain(cc.cert, cc.key)
    except FileNotFoundError:
        raise ConfigError(source, f"{where}.key", f"{cc.key}: file not found") from None
    except ssl.SSLError as exc:
        reason = "the key does not match the certificate" if "mismatch" in str(exc).lower() else str(exc.reason)
        raise ConfigError(source, f"{where}.key", f"{cc.key}: {reason}") from None
    return LoadedCertificate(ctx, _names(leaf), not_after)


def load_all(tls: TlsConfig, source: str) -> list[LoadedCertificate]:
    return [load_certificate(tls, i, source) for i in range(len(tls.certificates))]


class ServerTls:
    """The TLS side of one listener: the context its server holds, and SNI selection among certificates."""

    def __init__(self, tls: TlsConfig, source: str) -> None:
        self.context = _context(tls, source)
        self.context.sni_callback = self._pick
        self.by_name: dict[str, ssl.SSLContext] = {}
        self.names: tuple[str, ...] = ()
        self.reload(tls, source)

    def reload(self, tls: TlsConfig, source: str) -> None:
        """New certificates for new handshakes (all loaded and checked first: a bad one changes nothing)."""
        loaded = load_all(tls, source)
        default = tls.certificates[0]
        _configure(self.context, tls, source)
        self.context.load_cert_chain(default.cert, default.key)
        by_name: dict[str, ssl.SSLContext] = {}
        for cert in reversed(loaded):  # the first certificate that names a host wins
            for name in cert.names:
                by_name[name] = cert.context
        self.by_name = by_name  # one reference write: the SNI callback reads it whole
        self.names = tuple(n for c in loaded for n in c.names)

    def _pick(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        if not server_name:
            return  # no SNI: the default certificate
        name = server_name.lower()
        # Kept on the connection's SSLObject: the client connection checks each Host against it (421).
        sock.sni_name = name  # type: ignore[attr-defined]
        table = self.by_name
        ctx = table.get(name)
        if ctx is None:
            dot = name.find(".")
            ctx = table.get("*" + name[dot:]) if dot > 0 else None
        if ctx is not None:
            sock.context = ctx


def client_context(tls: UpstreamTlsConfig, source: str) -> ssl.SSLContext:
    """The context for a pool's upstream connections: verified unless `verify: false`, TLS 1.2 at least."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca:
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except FileNotFoundError:
            raise ConfigError(source, f"{tls.path}.ca", f"{tls.ca}: file not found") from None
        except ssl.SSLError as exc:
            raise ConfigError(source, f"{tls.path}.ca", f"{tls.ca}: {exc.reason}") from None
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_config(config: Config) -> None:
    """Load every certificate, key and CA file the config names (at start and before a reload): ConfigError
    with the file, the key path and the reason, before anything binds or changes."""
    terminated = [lc.tls for lc in config.listeners.values()] + [config.admin.tls]
    for tls in terminated:
        if tls is not None:
            ServerTls(tls, config.source)
    for pc in config.pools:
        if pc.tls is not None:
            client_context(pc.tls, config.source)
