"""Which URLs and addresses downloads may use (secstorage.allowed.internal.sites)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secstor.domain.urlsafety import UnsafeUrl, check_address, check_url, parse_allowed_cidrs

pytestmark = pytest.mark.nodb

REFUSAL = "downloads from internal addresses are refused unless secstorage.allowed.internal.sites allows them"


@pytest.mark.parametrize(
    "ip, kind",
    [
        ("127.0.0.1", "a loopback"),
        ("127.255.0.9", "a loopback"),
        ("::1", "a loopback"),
        ("10.1.2.3", "a private"),
        ("172.16.0.1", "a private"),
        ("192.168.1.1", "a private"),
        ("fd00::1", "a private"),
        ("169.254.169.254", "a link-local (cloud metadata)"),
        ("169.254.1.1", "a link-local"),
        ("fe80::1", "a link-local"),
        ("0.0.0.0", "an unspecified"),
        ("::", "an unspecified"),
        ("224.0.0.1", "a multicast"),
        ("ff02::1", "a multicast"),
        ("100.64.0.1", "a carrier-grade NAT (100.64.0.0/10)"),
        ("240.0.0.1", "a reserved"),
    ],
)
def test_internal_addresses_are_refused_with_the_reason(ip, kind):
    with pytest.raises(UnsafeUrl) as err:
        check_address(ip, [])
    assert str(err.value) == f"URL host {ip} is {kind} address; {REFUSAL}"


@pytest.mark.parametrize(
    "ip, stands_for, kind",
    [
        ("::ffff:127.0.0.1", "127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "169.254.169.254", "link-local (cloud metadata)"),
        ("64:ff9b::a00:1", "10.0.0.1", "private"),
        ("2002:a00:1::", "10.0.0.1", "private"),
    ],
)
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(ip, stands_for, kind):
    with pytest.raises(UnsafeUrl, match=f"is an? {kind.replace('(', '.').replace(')', '.')} address") as err:
        check_address(ip, [])
    assert f"(which stands for {stands_for})" in str(err.value)


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(ip):
    check_address(ip, [])


def test_message_names_the_host_the_address_came_from():
    with pytest.raises(UnsafeUrl) as err:
        check_address("10.0.0.1", [], host="files.example")
    assert str(err.value) == f"URL host files.example resolves to 10.0.0.1, a private address; {REFUSAL}"


def test_allowance_accepts_the_setting_text_and_lists():
    check_address("10.2.3.4", "192.168.0.0/16, 10.0.0.0/8")
    check_address("::ffff:127.0.0.1", ["127.0.0.0/8"])  # the IPv4 it stands for is allowed
    check_address("fd00::5", [ipaddress.ip_network("fd00::/8")])
    with pytest.raises(UnsafeUrl):
        check_address("10.2.3.4", "192.168.0.0/16")
    with pytest.raises(UnsafeUrl, match="secstorage.allowed.internal.sites holds 'nonsense', which is not a CIDR"):
        parse_allowed_cidrs("10.0.0.0/8,nonsense")


internal_v4 = st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10"])


@given(st.ip_addresses(v=4, network=ipaddress.ip_network("10.0.0.0/8")), st.integers(8, 32))
def test_an_allowed_cidr_admits_exactly_its_own_addresses(ip, prefix):
    allowed = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    check_address(ip, [str(allowed)])
    outside = allowed.broadcast_address + 1
    if outside in ipaddress.ip_network("10.0.0.0/8"):
        with pytest.raises(UnsafeUrl):
            check_address(outside, [str(allowed)])


@given(internal_v4.flatmap(lambda net: st.ip_addresses(network=ipaddress.ip_network(net))))
def test_internal_addresses_are_refused_without_allowance_and_admitted_with_it(ip):
    with pytest.raises(UnsafeUrl):
        check_address(ip, [])
    with pytest.raises(UnsafeUrl):
        check_address(ip, ["203.0.113.0/24", "2001:db8::/32"])  # unrelated allowances change nothing
    check_address(ip, [f"{ip}/32"])


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_form_gets_the_same_verdict_as_the_ipv4_address(ip):
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")

    def verdict(address):
        try:
            check_address(address, [])
            return True
        except UnsafeUrl:
            return False

    assert verdict(mapped) == verdict(ip)


@pytest.mark.parametrize(
    "url, scheme, host, port, target",
    [
        ("http://Files.Example.COM/t/x.qcow2", "http", "files.example.com", 80, "/t/x.qcow2"),
        ("HTTPS://files.example.com:8443/x?sig=1", "https", "files.example.com", 8443, "/x?sig=1"),
        ("http://files.example.com.", "http", "files.example.com", 80, "/"),
        ("http://[2001:db8::1]:8080/x", "http", "2001:db8::1", 8080, "/x"),
        ("ftp://mirror.example.org/pub/x.iso", "ftp", "mirror.example.org", 21, "/pub/x.iso"),
        ("http://bücher.example/x", "http", "xn--bcher-kva.example", 80, "/x"),
    ],
)
def test_urls_are_parsed_to_what_will_be_fetched(url, scheme, host, port, target):
    parsed = check_url(url)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.target) == (scheme, host, port, target)


def test_host_header_carries_the_port_only_when_it_is_not_the_default():
    assert check_url("http://[2001:db8::1]:8080/x").host_header == "[2001:db8::1]:8080"
    assert check_url("https://files.example.com/x").host_header == "files.example.com"


def test_ftp_urls_may_carry_a_login():
    parsed = check_url("ftp://user:p%40ss@mirror.example.org/x.iso")
    assert (parsed.username, parsed.password, parsed.host) == ("user", "p@ss", "mirror.example.org")


@pytest.mark.parametrize(
    "url, reason",
    [
        ("", "URL is empty"),
        ("file:///etc/passwd", "URL scheme 'file' is not supported; use http, https or ftp"),
        ("gopher://example.com/", "URL scheme 'gopher' is not supported; use http, https or ftp"),
        ("example.com/x.qcow2", "URL scheme '(none)' is not supported; use http, https or ftp"),
        ("http:///x", "URL 'http:///x' has no host"),
        ("http://@/x", "URL 'http://@/x' has no host"),
        ("http://files.example.com@10.0.0.1/x", "contains credentials before the host; only ftp URLs may carry a login"),
        ("http://files.example.com:99999/x", "has an invalid port"),
        ("http://files.example.com:0/x", "has an invalid port: 0"),
        ("http://files.example.com\\@10.0.0.1/", "contains whitespace, control characters or backslashes"),
        ("http://files.example.com /x", "contains whitespace, control characters or backslashes"),
        ("http://files.example.com/x\r\nHost: evil", "contains whitespace, control characters or backslashes"),
    ],
)
def test_malformed_or_unsupported_urls_are_refused(url, reason):
    with pytest.raises(UnsafeUrl) as err:
        check_url(url)
    assert reason in str(err.value)
