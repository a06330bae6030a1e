//! `wisp test` over the real binary: the bundled routing passes its own
//! cases (guests/default/cases), and so does its TypeScript port
//! (guests/default-js) the same cases, a case that does not hold exits 1 with a
//! diff naming the field and both values, a request is taken from a
//! capture, and a wrong case file exits 2 saying what is wrong.

use std::path::PathBuf;
use std::process::Command;

use wisp_tests::{default_js_component, repo_root, wisp_binary};

/// `wisp test ARGS...` in a temporary folder: exit code, stdout, stderr.
fn wisp_test(args: &[&str]) -> (i32, String, String) {
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = Command::new(wisp_binary().expect("wisp is built"))
        .current_dir(cwd.path())
        .arg("test")
        .args(args)
        .env("XDG_CACHE_HOME", repo_root().join("target/e2e-cache"))
        .output()
        .expect("wisp runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}---");
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn case_files() -> Vec<PathBuf> {
    let dir = repo_root().join("guests/default/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("guests/default/cases")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Runs every case of guests/default/cases against `component`: every
/// one passes, each on a line of its own.
fn passes_the_bundled_routings_cases(component: &str) {
    let files = case_files();
    let cases: usize = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .expect("read")
                .lines()
                .filter(|l| l.trim() == "[[case]]")
                .count()
        })
        .sum();
    assert!(
        files.len() >= 9 && cases >= 40,
        "{} files, {cases} cases",
        files.len()
    );
    let args: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut argv = vec![component];
    argv.extend(args.iter().map(String::as_str));
    let (code, out, _) = wisp_test(&argv);
    let ok = out.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(code, 0, "every case passes");
    assert_eq!(ok, cases, "one ok line per case");
    assert!(
        out.contains(&format!("{cases} cases: {cases} ok, 0 failed")),
        "{out}"
    );
}

#[test]
fn the_bundled_routing_passes_its_cases() {
    passes_the_bundled_routings_cases("default");
}

/// The TypeScript port routes as the Rust one does: the same cases hold.
#[test]
fn the_typescript_routing_passes_the_same_cases() {
    let wasm = default_js_component().expect("guests/default-js builds");
    passes_the_bundled_routings_cases(&wasm.display().to_string());
}

#[test]
fn a_case_that_does_not_hold_exits_1_with_its_diff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.toml");
    std::fs::write(
        &file,
        r#"
domains = ["example.com"]

[[case]]
name = "keepalive"
message = """
OPTIONS sip:192.0.2.1:5060 SIP/2.0
Max-Forwards: 70
"""
expect = { reply = 200 }

[[case]]
name = "the author thinks the proxy is busy"
message = """
OPTIONS sip:192.0.2.1:5060 SIP/2.0
Max-Forwards: 70
"""
expect = { reply = 486 }

[[case]]
name = "and that it relays to a foreign domain for anyone"
message = """
INVITE sip:someone@elsewhere.example SIP/2.0
Max-Forwards: 70
"""
expect = { relay = ["sip:someone@elsewhere.example"], headers = { P-hint = "outbound" } }
"#,
    )
    .expect("write");
    let (code, out, _) = wisp_test(&["default", &file.display().to_string()]);
    assert_eq!(code, 1);
    assert!(out.contains("ok      wrong.toml #1 keepalive"), "{out}");
    assert!(
        out.contains("FAILED  wrong.toml #2 the author thinks the proxy is busy"),
        "{out}"
    );
    assert!(out.contains("reply: expected 486, got 200 \"OK\""), "{out}");
    assert!(
        out.contains("decision: expected relay, got reply 403 \"Not relaying\""),
        "{out}"
    );
    assert!(out.contains("3 cases: 1 ok, 2 failed"), "{out}");
}

#[test]
fn a_request_is_taken_from_a_capture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let register = "REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK-cap1;rport\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@example.com>;tag=cap1\r\n\
        To: <sip:alice@example.com>\r\n\
        Call-ID: capture-1@198.51.100.7\r\n\
        CSeq: 1 REGISTER\r\n\
        Contact: <sip:alice@198.51.100.7:5062>\r\n\
        Content-Length: 0\r\n\r\n";
    let options = "OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK-cap2\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:ping@[2001:db8::7]>;tag=cap2\r\n\
        To: <sip:192.0.2.1:5060>\r\n\
        Call-ID: capture-2@2001:db8::7\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    // Packet 1 is noise (DNS), 2 the REGISTER on Ethernet; the IPv6
    // OPTIONS in a Linux cooked capture of its own.
    let dns = ethernet(
        0x0800,
        ipv4_udp([192, 0, 2, 7], 53000, [192, 0, 2, 53], 53, b"\x12\x34"),
    );
    let reg = ethernet(
        0x0800,
        ipv4_udp(
            [198, 51, 100, 7],
            5062,
            [192, 0, 2, 1],
            5060,
            register.as_bytes(),
        ),
    );
    std::fs::write(dir.path().join("call.pcap"), pcap(1, &[dns, reg])).expect("write");
    let v6 = cooked(
        0x86dd,
        ipv6_udp("2001:db8::7", 5060, "2001:db8::1", 5060, options.as_bytes()),
    );
    std::fs::write(dir.path().join("any.pcap"), pcap(113, &[v6])).expect("write");
    let file = dir.path().join("capture.toml");
    std::fs::write(
        &file,
        r#"
domains = ["example.com"]

[[case]]
name = "the REGISTER of the capture is saved"
pcap = "call.pcap"
packet = 2
expect = { reply = 200, reply-headers = { Contact = { contains = "sip:alice@198.51.100.7:5062" } } }

[[case]]
name = "so a call reaches alice"
message = """
INVITE sip:alice@example.com SIP/2.0
Max-Forwards: 70
"""
expect = { relay = ["sip:alice@198.51.100.7:5062"] }

[[case]]
name = "an IPv6 keepalive from a Linux cooked capture"
pcap = "any.pcap"
packet = 1
expect = { reply = 200 }

[[case]]
name = "packet 1 of the first capture is no SIP"
pcap = "call.pcap"
packet = 1
expect = { reply = 200 }
"#,
    )
    .expect("write");
    let (code, out, _) = wisp_test(&["default", &file.display().to_string()]);
    assert!(out.contains("ok      capture.toml #1"), "{out}");
    assert!(out.contains("ok      capture.toml #2"), "{out}");
    assert!(out.contains("ok      capture.toml #3"), "{out}");
    // A packet that is not a SIP request is the file's mistake: exit 2.
    assert!(out.contains("ERROR   capture.toml #4"), "{out}");
    assert_eq!(code, 2);
}

#[test]
fn a_wrong_case_file_exits_2_saying_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.toml");
    std::fs::write(
        &file,
        "[[case]]\nname = \"x\"\nmessage = \"OPTIONS sip:192.0.2.1 SIP/2.0\\n\"\nexpect = { replied = 200 }\n",
    )
    .expect("write");
    let (code, out, _) = wisp_test(&["default", &file.display().to_string()]);
    assert_eq!(code, 2);
    assert!(out.contains("unknown field `replied`"), "{out}");

    // An on-reply case on a transaction whose route armed only on-failure
    // (the bundled routing's INVITE with FAILOVER URIs): the proxy would
    // never call the hook there.
    let unarmed = dir.path().join("unarmed.toml");
    std::fs::write(
        &unarmed,
        r#"
domains = ["example.com"]

[params]
FAILOVER = "sip:bob@192.0.2.60"

[[registration]]
aor = "bob"
contact = "sip:bob@192.0.2.20:5060"

[[case]]
name = "an INVITE arms on-failure"
message = """
INVITE sip:bob@example.com SIP/2.0
Max-Forwards: 70
From: <sip:alice@example.com>;tag=f1
"""
expect = { relay = true, hooks = ["on-failure"] }

[[case]]
name = "a reply hook it did not arm"
hook = "on-reply"
response = 180
expect = { keep = true }
"#,
    )
    .expect("write");
    let (code, out, _) = wisp_test(&["default", &unarmed.display().to_string()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("ok      unarmed.toml #1"), "{out}");
    assert!(
        out.contains("on-reply is not armed for this transaction"),
        "{out}"
    );

    let (code, _, err) = wisp_test(&["no-such.wasm", &file.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("no-such.wasm"), "{err}");

    let (code, _, err) = wisp_test(&["default"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("CASES"), "{err}");
}

// A capture, written here byte by byte: a pcap file of `link` (1:
// Ethernet, 113: Linux cooked) holding `packets`.
fn pcap(link: u32, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut file = Vec::new();
    file.extend(0xa1b2_c3d4u32.to_le_bytes());
    file.extend(2u16.to_le_bytes());
    file.extend(4u16.to_le_bytes());
    file.extend([0u8; 8]);
    file.extend(262_144u32.to_le_bytes());
    file.extend(link.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        file.extend((1_764_000_000u32 + i as u32).to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend((p.len() as u32).to_le_bytes());
        file.extend((p.len() as u32).to_le_bytes());
        file.extend(p);
    }
    file
}

fn ethernet(ether_type: u16, payload: Vec<u8>) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    frame.extend(ether_type.to_be_bytes());
    frame.extend(payload);
    frame
}

fn cooked(protocol: u16, payload: Vec<u8>) -> Vec<u8> {
    // Packet type 0 (to us), ARPHRD_ETHER, 6-byte address, padded to 8.
    let mut frame = vec![0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x07, 0, 0];
    frame.extend(protocol.to_be_bytes());
    frame.extend(payload);
    frame
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend(src_port.to_be_bytes());
    udp.extend(dst_port.to_be_bytes());
    udp.extend(((8 + payload.len()) as u16).to_be_bytes());
    // Checksum 0: none (allowed for IPv4; readers do not check it).
    udp.extend([0, 0]);
    udp.extend(payload);
    udp
}

fn ipv4_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp = udp(sport, dport, payload);
    let total = (20 + udp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend(src);
    ip.extend(dst);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip.extend(udp);
    ip
}

fn ipv6_udp(src: &str, sport: u16, dst: &str, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp = udp(sport, dport, payload);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((udp.len() as u16).to_be_bytes());
    ip.extend([17, 64]);
    for addr in [src, dst] {
        let addr: std::net::Ipv6Addr = addr.parse().expect("IPv6");
        ip.extend(addr.octets());
    }
    ip.extend(udp);
    ip
}
