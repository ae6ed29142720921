"""Opening ODBC connections: store URLs, missing drivers, Azure AD access tokens.

URLs (the part after the prefix is an ODBC connection string, passed on as is):

- ``postgresql+odbc:Driver={PostgreSQL Unicode};Server=HOST;Port=5432;Database=DB;Uid=USER;Pwd=...``
- ``mssql+odbc:Driver={ODBC Driver 18 for SQL Server};Server=tcp:HOST,1433;Database=DB;Encrypt=yes;...``
- the URL form ``mssql+odbc://USER:PASSWORD@HOST:PORT/DB?driver=...&Encrypt=yes`` (and the same for
  ``postgresql+odbc://``): turned into such a string; query keys become connection-string keys.

``Authentication=ActiveDirectoryDefault`` in an ``mssql+odbc`` string is handled
here, not by the driver: the key is removed, azure-identity's
``DefaultAzureCredential`` gets a token for ``https://database.windows.net/.default``
(managed identity, workload identity, environment, Azure CLI ...), and the
token goes to the driver as the ``SQL_COPT_SS_ACCESS_TOKEN`` (1256)
connection attribute. Other ``Authentication`` values go to the driver.
Connection strings may hold a password: they never appear in errors or logs.

psqlODBC reports every failed login as SQLSTATE 08001, whether the server is down (worth
retrying) or said the database or role does not exist (never worth it). :func:`postgres_login_state`
asks the server itself, with a startup packet, which SQLSTATE it refuses this user and database
with; where the server asks for SCRAM-SHA-256 (PostgreSQL's default since 14) it also proves the
password, so a wrong one is 28P01 (permanent). A password asked for in the clear or as MD5 is not
sent (the probe's TLS checks no certificate): there it learns only what comes before the password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sensorflow.store.base import StoreError
from sensorflow.store.dialects import POSTGRES, TSQL, Dialect

__all__ = ["OdbcTarget", "access_token_attrs", "connect", "import_pyodbc", "parse_store_url", "postgres_login_state"]

SQL_COPT_SS_ACCESS_TOKEN = 1256
AZURE_SQL_SCOPE = "https://database.windows.net/.default"
_AD_DEFAULT = "activedirectorydefault"
_SECRET_KEYS = frozenset({"pwd", "password"})

_SCHEMES: dict[str, tuple[Dialect, str]] = {
    "mssql+odbc:": (TSQL, "ODBC Driver 18 for SQL Server"),
    "postgresql+odbc:": (POSTGRES, "PostgreSQL Unicode"),
}
_INSTALL_DRIVER = {
    TSQL.name: "install Microsoft's ODBC driver (Debian/Ubuntu: package msodbcsql18 from packages.microsoft.com, "
    "see https://learn.microsoft.com/sql/connect/odbc/linux-mac/installing-the-microsoft-odbc-driver-for-sql-server)",
    POSTGRES.name: "install psqlODBC (Debian/Ubuntu: apt-get install odbc-postgresql)",
}


@dataclass(frozen=True)
class OdbcTarget:
    """Where an ODBC store lives: dialect, connection string (secret: never print it), token use."""

    dialect: Dialect
    connection_string: str = field(repr=False)
    driver: str | None
    azure_ad_token: bool = False

    def describe(self) -> str:
        """The connection string with passwords masked, for messages."""
        return _join([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in _split(self.connection_string)])


def parse_store_url(url: str) -> OdbcTarget:
    """The target of a ``mssql+odbc:`` or ``postgresql+odbc:`` URL; StoreError names what is wrong."""
    scheme = next((s for s in _SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise StoreError("not an ODBC store URL: expected mssql+odbc:... or postgresql+odbc:...")
    dialect, default_driver = _SCHEMES[scheme]
    rest = url[len(scheme):]
    pairs = _from_url_form(rest, dialect, default_driver) if rest.startswith("//") else _split(rest)
    if not pairs:
        raise StoreError(f"empty ODBC connection string after {scheme}")
    keys = {k.lower(): v for k, v in pairs}
    azure_ad = keys.get("authentication", "").lower() == _AD_DEFAULT
    if azure_ad:
        if dialect is not TSQL:
            raise StoreError("Authentication=ActiveDirectoryDefault is supported for mssql+odbc stores only")
        clashing = sorted({"uid", "pwd", "user", "password", "trusted_connection"} & set(keys))
        if clashing:
            raise StoreError(f"Authentication=ActiveDirectoryDefault takes no {'/'.join(clashing)} (the token is the credential)")
        pairs = [(k, v) for k, v in pairs if k.lower() != "authentication"]
    return OdbcTarget(dialect, _join(pairs), keys.get("driver"), azure_ad)


def import_pyodbc() -> Any:
    """The pyodbc module, or a StoreError saying what to install."""
    try:
        import pyodbc
    except ModuleNotFoundError as e:
        if e.name != "pyodbc":
            raise
        raise StoreError("ODBC stores need pyodbc: pip install 'sensorflow[odbc]'") from e
    except ImportError as e:  # the module is there but its shared library (libodbc) is not
        raise StoreError(
            "pyodbc cannot load the ODBC driver manager: install unixODBC (Debian/Ubuntu: apt-get install unixodbc)"
        ) from e
    return pyodbc


def connect(target: OdbcTarget, credential: Any = None, login_timeout: int = 30) -> Any:
    """A pyodbc connection in manual-commit mode; StoreError for a missing driver or Azure AD failure.

    ``credential`` is an azure-identity credential, used when the target asks
    for a token (a fresh token per connection: the credential caches it).
    Other pyodbc errors propagate, for the caller to classify and retry.
    """
    pyodbc = import_pyodbc()
    if target.driver and "/" not in target.driver and target.driver not in pyodbc.drivers():
        raise StoreError(_missing_driver(target, pyodbc.drivers()))
    attrs: dict[int, bytes] = {}
    if target.azure_ad_token:
        attrs = access_token_attrs(_azure_sql_token(credential))
    try:
        return pyodbc.connect(target.connection_string, autocommit=False, timeout=login_timeout, attrs_before=attrs or None)
    except pyodbc.Error as e:
        if e.args and e.args[0] in ("IM002", "IM003"):  # data source / driver not found, driver not loadable
            raise StoreError(_missing_driver(target, pyodbc.drivers())) from e
        raise


_PG_PROTOCOL = 196608  # 3.0
_PG_SSL_REQUEST = 80877103


def postgres_login_state(target: OdbcTarget, timeout: float = 5.0) -> str | None:
    """The SQLSTATE a PostgreSQL server refuses ``target``'s login with (3D000 no such database, 28000
    no such role or no pg_hba.conf entry, 28P01 a wrong password proved by SCRAM-SHA-256, 57P03
    starting up, ...); None when it cannot be reached, asks for a password in the clear or as MD5, or
    lets the login in.
    """
    keys = {k.lower(): v for k, v in _split(target.connection_string)}
    host = keys.get("server") or keys.get("servername") or keys.get("host")
    user = keys.get("uid") or keys.get("user") or keys.get("username")
    if target.dialect is not POSTGRES or not host or not user:
        return None
    database = keys.get("database") or user
    password = keys.get("pwd") or keys.get("password")
    scram: _Scram | None = None
    try:
        port = int(keys.get("port") or 5432)
        with socket.create_connection((host, port), timeout) as raw:
            raw.settimeout(timeout)
            raw.sendall(struct.pack("!ii", 8, _PG_SSL_REQUEST))
            answer = raw.recv(1)
            stream: socket.socket = raw
            if answer == b"S":  # a probe: it sends only the user and database names, so it checks no certificate
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                stream = context.wrap_socket(raw, server_hostname=host)
            elif answer != b"N":
                return None
            body = struct.pack("!i", _PG_PROTOCOL) + b"".join(
                name + b"\0" + value.encode() + b"\0" for name, value in ((b"user", user), (b"database", database))
            ) + b"\0"
            stream.sendall(struct.pack("!i", len(body) + 4) + body)
            while True:
                kind = _exactly(stream, 1)
                (length,) = struct.unpack("!i", _exactly(stream, 4))
                payload = _exactly(stream, length - 4)
                if kind == b"E":
                    fields = dict((item[:1], item[1:]) for item in payload.split(b"\0") if item)
                    return fields.get(b"C", b"").decode("ascii", "replace") or None
                if kind != b"R":
                    return None
                (code,) = struct.unpack("!i", payload[:4])
                if code == _SASL and password is not None and _SCRAM in payload[4:].split(b"\0"):
                    scram = _Scram(password)
                    first = scram.first()
                    stream.sendall(_message(b"p", _SCRAM + b"\0" + struct.pack("!i", len(first)) + first))
                elif code == _SASL_CONTINUE and scram is not None:
                    stream.sendall(_message(b"p", scram.final(payload[4:])))
                elif code not in (_AUTH_OK, _SASL_FINAL):  # after OK the server may still refuse the database
                    # A password asked for in the clear or as MD5 is not sent by a probe whose TLS
                    # checks no certificate (SCRAM reveals nothing a listener could reuse).
                    return None
    except (OSError, ValueError, KeyError, struct.error):
        return None


_AUTH_OK, _SASL, _SASL_CONTINUE, _SASL_FINAL = 0, 10, 11, 12
_SCRAM = b"SCRAM-SHA-256"


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class _Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it: the probe's proof of the
    password, so that a wrong one is refused with its own SQLSTATE (28P01) instead of psqlODBC's 08001."""

    def __init__(self, password: str) -> None:
        self.password = password.encode("utf-8")
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self.first_bare = f"n=,r={self.nonce}"

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode("ascii")

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("ascii")
        fields = dict(item.split("=", 1) for item in text.split(","))
        if not fields["r"].startswith(self.nonce):
            raise ValueError("SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        without_proof = f"c=biws,r={fields['r']}"
        auth = f"{self.first_bare},{text},{without_proof}".encode("ascii")
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")


def _exactly(stream: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def access_token_attrs(token: str) -> dict[int, bytes]:
    """``attrs_before`` for pyodbc: the token as the driver wants it (length-prefixed UTF-16-LE)."""
    encoded = token.encode("utf-16-le")
    return {SQL_COPT_SS_ACCESS_TOKEN: struct.pack("<I", len(encoded)) + encoded}


def default_credential() -> Any:
    """azure-identity's DefaultAzureCredential, or a StoreError naming the extra to install."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as e:
        raise StoreError("Authentication=ActiveDirectoryDefault needs azure-identity: pip install 'sensorflow[azure]'") from e
    return DefaultAzureCredential()


def _azure_sql_token(credential: Any) -> str:
    from azure.core.exceptions import ClientAuthenticationError

    try:
        return credential.get_token(AZURE_SQL_SCOPE).token
    except ClientAuthenticationError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreError(f"Azure AD sign-in for Azure SQL failed: {first_line}") from e


def _missing_driver(target: OdbcTarget, installed: list[str]) -> str:
    name = target.driver or "(from a DSN)"
    return (
        f"ODBC driver {name!r} is not installed (installed: {', '.join(installed) or 'none'}): "
        f"{_INSTALL_DRIVER[target.dialect.name]}"
    )


def _from_url_form(rest: str, dialect: Dialect, default_driver: str) -> list[tuple[str, str]]:
    """``//user:password@host:port/database?key=value`` as connection-string pairs."""
    parts = urlsplit("odbc:" + rest)
    try:
        port = parts.port
    except ValueError as e:
        raise StoreError("bad port in the store URL") from e
    if not parts.hostname:
        raise StoreError("the store URL names no host: expected //USER:PASSWORD@HOST[:PORT]/DATABASE")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    pairs = [("Driver", query.pop("driver", default_driver))]
    if dialect is TSQL:
        pairs.append(("Server", f"tcp:{parts.hostname}" + (f",{port}" if port else "")))
    else:
        pairs += [("Server", parts.hostname)] + ([("Port", str(port))] if port else [])
    database = unquote(parts.path.lstrip("/"))
    if database:
        pairs.append(("Database", database))
    if parts.username:
        pairs.append(("UID", unquote(parts.username)))
    if parts.password:
        pairs.append(("PWD", unquote(parts.password)))
    return pairs + list(query.items())


def _split(connection_string: str) -> list[tuple[str, str]]:
    """``key=value;...`` pairs; a value in braces may hold ``;`` and ``}}`` (an escaped brace)."""
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(connection_string)
    while i < n:
        end = connection_string.find("=", i)
        if end < 0:
            if connection_string[i:].strip(" ;"):
                raise StoreError("malformed ODBC connection string: a part has no '='")
            break
        key = connection_string[i:end].strip(" ;")
        i = end + 1
        if connection_string[i:i + 1] == "{":
            value, i = _braced(connection_string, i)
        else:
            end = connection_string.find(";", i)
            end = n if end < 0 else end
            value, i = connection_string[i:end].strip(), end
        if not key:
            raise StoreError("malformed ODBC connection string: a part has no key")
        pairs.append((key, value))
        i = connection_string.find(";", i) + 1 if ";" in connection_string[i:] else n
    return pairs


def _braced(text: str, start: int) -> tuple[str, int]:
    """The value of ``{...}`` at ``start`` (``}}`` is a literal ``}``) and the index after it."""
    out, i = [], start + 1
    while i < len(text):
        if text[i] == "}":
            if text[i + 1:i + 2] == "}":
                out.append("}")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise StoreError("malformed ODBC connection string: unclosed '{'")


def _join(pairs: list[tuple[str, str]]) -> str:
    def quoted(value: str) -> str:
        needs = any(ch in value for ch in ";{} ")
        return "{" + value.replace("}", "}}") + "}" if needs else value

    return "".join(f"{key}={quoted(value)};" for key, value in pairs)
