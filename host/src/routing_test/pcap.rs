//! Messages taken from a capture: one packet of a pcap or pcapng file (as
//! tcpdump, Wireshark or sngrep save them), SIP over UDP over IPv4 or IPv6,
//! on Ethernet, Linux cooked (v1 and v2), raw IP or BSD loopback links.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// A UDP datagram of the capture: where it came from, where it went, and
/// its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: Vec<u8>,
}

/// The `number`th packet (from 1) of the capture at `path`.
pub fn datagram(path: &Path, number: usize) -> Result<Datagram, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
    if number == 0 {
        return Err(format!("{shown}: packets are numbered from 1"));
    }
    let (link, data) = packet(&bytes, number).map_err(|e| format!("{shown}: {e}"))?;
    udp(link, &data).map_err(|e| format!("{shown}, packet {number}: {e}"))
}

/// The link type and bytes of the `number`th packet.
fn packet(bytes: &[u8], number: usize) -> Result<(DataLink, Vec<u8>), String> {
    // pcapng starts with a Section Header Block, 0x0A0D0D0A.
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut reader = PcapNgReader::new(bytes).map_err(|e| format!("not a pcapng file: {e}"))?;
        let mut seen = 0;
        while let Some(block) = reader.next_block() {
            let block = block.map_err(|e| format!("broken pcapng block: {e}"))?;
            let (interface, data) = match block {
                Block::EnhancedPacket(p) => (p.interface_id, p.data.into_owned()),
                Block::SimplePacket(p) => (0, p.data.into_owned()),
                Block::Packet(p) => (u32::from(p.interface_id), p.data.into_owned()),
                _ => continue,
            };
            seen += 1;
            if seen == number {
                let link = reader
                    .interfaces()
                    .get(interface as usize)
                    .map(|i| i.linktype)
                    .ok_or("a packet names an interface the file does not describe")?;
                return Ok((link, data));
            }
        }
        return Err(format!("no packet {number}: the capture has {seen}"));
    }
    let mut reader =
        PcapReader::new(bytes).map_err(|e| format!("not a pcap or pcapng file: {e}"))?;
    let link = reader.header().datalink;
    let mut seen = 0;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| format!("broken pcap record: {e}"))?;
        seen += 1;
        if seen == number {
            return Ok((link, packet.data.into_owned()));
        }
    }
    Err(format!("no packet {number}: the capture has {seen}"))
}

/// Linux cooked capture v2 (`-i any` with newer libpcap): the protocol
/// type first, then 18 more bytes.
const SLL2_HEADER: usize = 20;
/// BSD loopback: a 4-byte address family in the host's byte order.
const NULL_HEADER: usize = 4;

fn udp(link: DataLink, data: &[u8]) -> Result<Datagram, String> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
        DataLink::LINUX_SLL2 => {
            let (Some(head), Some(rest)) = (data.get(..2), data.get(SLL2_HEADER..)) else {
                return Err("truncated Linux cooked (v2) header".into());
            };
            SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([head[0], head[1]])), rest)
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
        DataLink::NULL | DataLink::LOOP => {
            let rest = data.get(NULL_HEADER..).ok_or("truncated loopback header")?;
            SlicedPacket::from_ip(rest)
        }
        other => {
            return Err(format!(
                "link type {other:?} is not read (Ethernet, Linux cooked, raw IP and loopback are)"
            ))
        }
    }
    .map_err(|e| format!("cannot decode the packet: {e}"))?;
    let (source, destination, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
            ip.payload().fragmented,
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
            ip.payload().fragmented,
        ),
        _ => return Err("not an IP packet".into()),
    };
    if fragmented {
        return Err("an IP fragment: reassembled messages are not read; capture with a larger MTU or take another packet".into());
    }
    match &sliced.transport {
        Some(TransportSlice::Udp(udp)) => Ok(Datagram {
            source: SocketAddr::new(source, udp.source_port()),
            destination: SocketAddr::new(destination, udp.destination_port()),
            payload: udp.payload().to_vec(),
        }),
        Some(TransportSlice::Tcp(_)) => {
            Err("a TCP segment: only SIP over UDP is read from captures".into())
        }
        _ => Err("not a UDP packet".into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A classic pcap file (little-endian, microseconds) of `link` with
    /// one record per packet.
    pub(crate) fn pcap_file(link: u32, packets: &[Vec<u8>]) -> Vec<u8> {
        let mut file = Vec::new();
        file.extend(0xa1b2_c3d4u32.to_le_bytes());
        file.extend(2u16.to_le_bytes());
        file.extend(4u16.to_le_bytes());
        file.extend(0i32.to_le_bytes());
        file.extend(0u32.to_le_bytes());
        file.extend(65535u32.to_le_bytes());
        file.extend(link.to_le_bytes());
        for (i, p) in packets.iter().enumerate() {
            file.extend((1_700_000_000u32 + i as u32).to_le_bytes());
            file.extend(0u32.to_le_bytes());
            file.extend((p.len() as u32).to_le_bytes());
            file.extend((p.len() as u32).to_le_bytes());
            file.extend(p);
        }
        file
    }

    /// IPv4 + UDP (checksum 0: none) carrying `payload`.
    pub(crate) fn ipv4_udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend(src.0);
        ip.extend(dst.0);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let udp_len = 8 + payload.len();
        ip.extend(src.1.to_be_bytes());
        ip.extend(dst.1.to_be_bytes());
        ip.extend((udp_len as u16).to_be_bytes());
        ip.extend([0, 0]);
        ip.extend(payload);
        ip
    }

    fn checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn ethernet(ip: Vec<u8>) -> Vec<u8> {
        let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        frame.extend(ip);
        frame
    }

    fn sll(ip: Vec<u8>) -> Vec<u8> {
        let mut frame = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        frame.extend(ip);
        frame
    }

    #[test]
    fn a_udp_packet_is_found_by_number_on_ethernet_and_cooked_links() {
        let dir = std::env::temp_dir().join(format!("wisp-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let one = ipv4_udp(([192, 0, 2, 7], 5062), ([192, 0, 2, 1], 5060), b"OPTIONS a");
        let two = ipv4_udp(([192, 0, 2, 8], 5064), ([192, 0, 2, 1], 5060), b"OPTIONS b");
        for (link, frame) in [
            (1u32, ethernet as fn(Vec<u8>) -> Vec<u8>),
            (113, sll),
            (101, |ip| ip),
        ] {
            let path = dir.join(format!("link{link}.pcap"));
            std::fs::write(
                &path,
                pcap_file(link, &[frame(one.clone()), frame(two.clone())]),
            )
            .expect("write");
            let got = datagram(&path, 2).expect("packet 2");
            assert_eq!(got.source, "192.0.2.8:5064".parse().expect("addr"));
            assert_eq!(got.destination, "192.0.2.1:5060".parse().expect("addr"));
            assert_eq!(got.payload, b"OPTIONS b");
            let err = datagram(&path, 3).expect_err("no third");
            assert!(err.contains("the capture has 2"), "{err}");
        }
        let path = dir.join("garbage.pcap");
        std::fs::write(&path, b"not a capture at all").expect("write");
        assert!(datagram(&path, 1).unwrap_err().contains("not a pcap"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// pcapng, as Wireshark saves: the interface's link type is the one
    /// the packet's block names.
    #[test]
    fn a_pcapng_packet_is_read_on_its_interfaces_link() {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        use pcap_file::pcapng::PcapNgWriter;

        let mut writer = PcapNgWriter::new(Vec::new()).expect("writer");
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535))
            .expect("eth");
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::LINUX_SLL, 65535))
            .expect("sll");
        let ip = ipv4_udp(([192, 0, 2, 9], 5070), ([192, 0, 2, 1], 5060), b"INVITE x");
        for (interface, data) in [(0, ethernet(ip.clone())), (1, sll(ip))] {
            writer
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: interface,
                    timestamp: std::time::Duration::from_secs(1_700_000_000),
                    original_len: data.len() as u32,
                    data: data.into(),
                    options: vec![],
                })
                .expect("packet");
        }
        let dir = std::env::temp_dir().join(format!("wisp-pcapng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("call.pcapng");
        std::fs::write(&path, writer.into_inner()).expect("write");
        for number in [1, 2] {
            let got = datagram(&path, number).expect("packet");
            assert_eq!(got.source, "192.0.2.9:5070".parse().expect("addr"));
            assert_eq!(got.payload, b"INVITE x");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
