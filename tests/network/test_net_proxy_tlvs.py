"""PROXY v2 TLVs by name, the CRC32C checksum, the allowlist and its burst log (sans-IO)."""

from __future__ import annotations

import ipaddress
import logging
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netutil import bitwise_crc32c, proxy_v1, proxy_v2

from tcpkit import App, ProxyProtocolError, UntrustedProxyPeer
from tcpkit._limits import BurstLog
from tcpkit._transport import Transport
from tcpkit.proxy import (
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    ProxyHeader,
    ProxyHeaderParser,
    ProxySSL,
    ProxyTrust,
    _ProxiedTransport,
    crc32c,
)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def ssl_tlv(client: int, verify: int, *subs: tuple[int, bytes]) -> bytes:
    """The value of a PP2_TYPE_SSL TLV."""
    return struct.pack("!BI", client, verify) + b"".join(tlv(k, v) for k, v in subs)


def parse(data: bytes) -> ProxyHeader:
    header = ProxyHeaderParser().feed(data)
    assert header is not None
    return header


# -- CRC-32C -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x00000000),
        (b"123456789", 0xE3069283),  # the check value of CRC-32C
        (bytes(32), 0x8A9136AA),  # RFC 3720 (iSCSI) B.4 test vectors
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert bitwise_crc32c(data) == expected  # (the tests' own builder agrees)


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_crc32c_matches_a_bitwise_implementation_and_continues(data: bytes, cut: int) -> None:
    assert crc32c(data) == bitwise_crc32c(data)
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


# -- the checksum TLV --------------------------------------------------------------


@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    st.binary(max_size=32),
)
def test_v2_with_a_right_checksum_is_accepted_under_any_chunking(
    cuts: list[int], unique: bytes
) -> None:
    data = proxy_v2("192.0.2.1", "10.0.0.1", 1234, 443, tlvs=[(0x05, unique)], crc=True)
    parser = ProxyHeaderParser()
    header = None
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        if header is None:
            header = parser.feed(data[start:point])
        start = point
    assert header is not None and parser.leftover == b""
    assert header.source == ("192.0.2.1", 1234)
    assert header.crc32c == int.from_bytes(data[-4:], "big")
    assert header.unique_id == unique


def test_v2_with_a_wrong_checksum_is_rejected() -> None:
    good = proxy_v2("192.0.2.1", "10.0.0.1", 1234, 443, crc=True)
    right = int.from_bytes(good[-4:], "big")
    bad = proxy_v2("192.0.2.1", "10.0.0.1", 1234, 443, crc=right ^ 1)
    with pytest.raises(ProxyProtocolError, match="checksum mismatch"):
        parse(bad)
    # one flipped bit anywhere else in the header is caught too (the address here)
    spoofed = bytearray(good)
    spoofed[16] ^= 0x01
    with pytest.raises(ProxyProtocolError, match="checksum mismatch"):
        parse(bytes(spoofed))


def test_a_checksum_tlv_of_the_wrong_size_is_rejected() -> None:
    data = proxy_v2("192.0.2.1", "10.0.0.1", 1, 2, tlvs=[(0x03, b"\x00\x00\x00")])
    with pytest.raises(ProxyProtocolError, match="must be 4"):
        parse(data)


def test_header_without_a_checksum_has_none() -> None:
    assert parse(proxy_v2("192.0.2.1", "10.0.0.1", 1, 2)).crc32c is None


# -- TLVs by name ------------------------------------------------------------------


def test_tlvs_by_name() -> None:
    ssl_value = ssl_tlv(
        PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN,
        0,
        (PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3"),
        (PP2_SUBTYPE_SSL_CN, "Zoë".encode()),
        (PP2_SUBTYPE_SSL_CIPHER, b"TLS_AES_256_GCM_SHA384"),
        (PP2_SUBTYPE_SSL_SIG_ALG, b"RSA-SHA256"),
        (PP2_SUBTYPE_SSL_KEY_ALG, b"RSA2048"),
        (0x2A, b"future"),
    )
    tlvs = [
        (PP2_TYPE_ALPN, b"h2"),
        (PP2_TYPE_AUTHORITY, b"example.com"),
        (PP2_TYPE_NOOP, bytes(3)),
        (PP2_TYPE_UNIQUE_ID, b"\x01" * 128),
        (PP2_TYPE_SSL, ssl_value),
        (PP2_TYPE_NETNS, b"blue"),
        (0xE0, b"custom"),
    ]
    header = parse(proxy_v2("2001:db8::1", "2001:db8::2", 5, 6, tlvs=tlvs, crc=True))
    assert header.alpn == b"h2"
    assert header.authority == "example.com"
    assert header.unique_id == b"\x01" * 128
    assert header.netns == "blue"
    assert header.tlv(0xE0) == b"custom" and header.tlv(0xE1) is None
    assert header.tlvs[: len(tlvs)] == tuple(tlvs)
    ssl = header.ssl
    assert ssl == ProxySSL(
        PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN,
        0,
        "TLSv1.3",
        "Zoë",
        "TLS_AES_256_GCM_SHA384",
        "RSA-SHA256",
        "RSA2048",
        ssl.tlvs if ssl else (),
    )
    assert ssl is not None
    assert ssl.client_ssl and ssl.client_cert_conn and not ssl.client_cert_sess
    assert ssl.verified
    assert (0x2A, b"future") in ssl.tlvs


def test_absent_tlvs_are_none_and_ssl_without_a_certificate_is_not_verified() -> None:
    header = parse(proxy_v2("192.0.2.1", "10.0.0.1", 1, 2))
    assert (header.alpn, header.authority, header.unique_id, header.ssl, header.netns) == (
        None,
        None,
        None,
        None,
        None,
    )
    # verify 0 but no certificate presented (HAProxy sends 0 then): not "verified"
    plain = parse(proxy_v2("192.0.2.1", "10.0.0.1", 1, 2, tlvs=[(0x20, ssl_tlv(1, 0))])).ssl
    assert plain is not None and plain.client_ssl and not plain.verified
    assert plain.version is None and plain.cn is None
    failed = parse(proxy_v2("192.0.2.1", "10.0.0.1", 1, 2, tlvs=[(0x20, ssl_tlv(3, 20))])).ssl
    assert failed is not None and failed.client_cert_conn and not failed.verified


def test_v1_and_local_headers_have_no_tlvs() -> None:
    assert parse(proxy_v1("192.0.2.1", "10.0.0.1", 1, 2)).alpn is None
    assert parse(proxy_v2(local=True, tlvs=[(0x01, b"h2")])).tlvs == ()


@pytest.mark.parametrize(
    ("tlvs", "match"),
    [
        ([(PP2_TYPE_AUTHORITY, b"\xff\xfe")], "authority TLV is not UTF-8"),
        ([(PP2_TYPE_NETNS, b"\xc3")], "netns TLV is not UTF-8"),
        ([(PP2_TYPE_SSL, b"\x01\x00\x00")], "SSL TLV too short"),
        ([(PP2_TYPE_SSL, ssl_tlv(1, 0) + b"\x21\x00\x09abc")], "overruns"),
        ([(PP2_TYPE_SSL, ssl_tlv(1, 0, (PP2_SUBTYPE_SSL_CN, b"\xff")))], "SSL CN TLV"),
    ],
)
def test_malformed_known_tlvs_reject_the_header(tlvs: list[tuple[int, bytes]], match: str) -> None:
    with pytest.raises(ProxyProtocolError, match=match):
        parse(proxy_v2("192.0.2.1", "10.0.0.1", 1, 2, tlvs=tlvs))


# -- the allowlist -----------------------------------------------------------------


def test_allowlist_matches_networks_addresses_and_mapped_ipv4() -> None:
    trust = ProxyTrust(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", ipaddress.ip_network("::1")])
    assert trust.entries == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128")
    for peer in [("10.9.8.7", 1), ("192.0.2.7", 2), ("2001:db8::5", 3), ("::1", 4)]:
        assert trust.trusts(peer), peer
    assert trust.trusts(("::ffff:10.1.2.3", 5))  # an IPv4 client on a dual-stack socket
    for peer in [("11.0.0.1", 1), ("192.0.2.8", 2), ("2001:db9::1", 3), ("127.0.0.1", 4)]:
        assert not trust.trusts(peer), peer
    assert not trust.trusts("/run/app.sock") and not trust.trusts(None)
    assert not trust.trusts(("not-an-ip", 1))


def test_unix_entry_trusts_unix_socket_peers_only() -> None:
    trust = ProxyTrust(["unix"])
    assert trust.trusts("") and trust.trusts("/run/proxy.sock")
    assert not trust.trusts(("127.0.0.1", 1)) and not trust.trusts(None)
    assert ProxyTrust(["UNIX", "127.0.0.1"]).entries == ("127.0.0.1/32", "unix")


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("10.0.0.0/8", TypeError, "not a single string"),
        (["10.0.0.0/8", "10.0.0.0/33"], ValueError, "'10.0.0.0/33' is not an IP network"),
        (["localhost"], ValueError, "'localhost'"),
        ([], ValueError, "empty allowlist"),
        ([10], TypeError, "10 is not a network"),
    ],
)
def test_bad_allowlists_are_refused_naming_the_entry(
    value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        App(proxy_protocol=value)  # type: ignore[arg-type]


def test_settings_keep_the_allowlist_normalised_and_parsed_once() -> None:
    app = App(proxy_protocol=["127.0.0.1", "10.1.2.3/8"])
    settings = app.settings
    assert settings.proxy_protocol == ("127.0.0.1/32", "10.0.0.0/8")
    assert settings.proxy_trust is not None and settings.proxy_trust.trusts(("10.0.0.9", 1))
    assert settings.replace(name="other").proxy_trust == settings.proxy_trust
    assert settings.replace(proxy_protocol=True).proxy_trust is None
    assert App(proxy_protocol=True).settings.proxy_trust is None


def test_untrusted_peer_error_names_the_peer() -> None:
    assert "192.0.2.9:4000" in str(UntrustedProxyPeer(("192.0.2.9", 4000)))
    assert "[::1]:4000" in str(UntrustedProxyPeer(("::1", 4000)))
    assert "unix:/run/x.sock" in str(UntrustedProxyPeer("/run/x.sock"))
    assert isinstance(UntrustedProxyPeer(None), ProxyProtocolError)


# -- the burst log -------------------------------------------------------------------


def test_refusals_are_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = BurstLog("srv", "refusals of untrusted PROXY peers", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="tcpkit.server"):
        for i in range(50):  # a burst: one line
            log.log(str(UntrustedProxyPeer(("192.0.2.1", 1000 + i))))
            now[0] += 0.01
        assert [r.getMessage() for r in caplog.records] == [
            "srv: refused a connection from 192.0.2.1:1000: not a trusted PROXY peer "
            "(not in the proxy_protocol allowlist); more in the next 10 s are "
            "counted, not logged"
        ]
        caplog.clear()
        now[0] = 100.0 + BurstLog.WINDOW  # the next burst: the count of the last, its first
        log.log(str(UntrustedProxyPeer(("192.0.2.2", 7))))
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0] == ("srv: 49 more refusals of untrusted PROXY peers in the last 10 s")
        assert "192.0.2.2:7" in messages[1] and len(messages) == 2
        caplog.clear()
        now[0] += BurstLog.WINDOW  # a lone refusal after a quiet window: no count line
        log.log(str(UntrustedProxyPeer(("192.0.2.3", 8))))
        assert len(caplog.records) == 1 and "192.0.2.3:8" in caplog.records[0].getMessage()


# -- the pass-through transport ---------------------------------------------------------


def test_the_proxied_transport_passes_every_transport_method_on() -> None:
    """A method added to Transport must be passed on too (else a default would run silently)."""
    names = {
        name
        for klass in Transport.__mro__
        if klass is not object
        for name in vars(klass)
        if not name.startswith("_")
    }
    missing = {name for name in names if name not in vars(_ProxiedTransport)}
    assert not missing, f"_ProxiedTransport does not pass on {sorted(missing)}"
