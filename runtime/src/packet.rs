//! Packet builder for `BPF_PROG_TEST_RUN`: Ethernet, IPv4 (options, fragments), IPv6 (extension
//! headers), TCP, UDP, SCTP, ICMP, ICMPv6, with correct IPv4 header checksums, L4 checksums
//! (pseudo-header for TCP/UDP/ICMPv6) and SCTP CRC32c.
//!
//! In: a fluent description, e.g. `Packet::ipv4(src, dst).tcp(1234, 80).build()`.
//! Out: the frame bytes, starting with the Ethernet header.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// An IPv6 extension header placed between the fixed header and the upper layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options (next header 0), padded to 8 bytes.
    HopByHop,
    /// Destination options (60), padded to 8 bytes.
    DestOpts,
    /// Routing header (43) with no segments left.
    Routing,
    /// Fragment header (44): offset in 8-byte units, more-fragments flag, identification.
    Fragment { offset: u16, more: bool, id: u32 },
    /// Authentication header (51), 16 bytes with a 4-byte ICV: its length field counts 4-byte
    /// units (minus 2), unlike the others' 8-byte units.
    Auth,
}

impl ExtHeader {
    fn number(&self) -> u8 {
        match self {
            ExtHeader::HopByHop => 0,
            ExtHeader::DestOpts => 60,
            ExtHeader::Routing => 43,
            ExtHeader::Fragment { .. } => 44,
            ExtHeader::Auth => 51,
        }
    }

    fn encode(&self, next: u8) -> Vec<u8> {
        match self {
            // PadN option of 4 bytes fills the 8-byte header.
            ExtHeader::HopByHop | ExtHeader::DestOpts => vec![next, 0, 1, 4, 0, 0, 0, 0],
            ExtHeader::Routing => vec![next, 0, 0, 0, 0, 0, 0, 0],
            ExtHeader::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(*more);
                let [a, b] = field.to_be_bytes();
                let [c, d, e, f] = id.to_be_bytes();
                vec![next, 0, a, b, c, d, e, f]
            }
            // Payload length 2: (2 + 2) × 4 = 16 bytes; SPI 1, sequence 1, ICV zero.
            ExtHeader::Auth => vec![next, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        }
    }

    fn len(&self) -> usize {
        if let ExtHeader::Auth = self { 16 } else { 8 }
    }
}

#[derive(Clone, Debug)]
enum L3 {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        tos: u8,
        id: u16,
        options: Vec<u8>,
        dont_fragment: bool,
        more_fragments: bool,
        frag_offset: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        flow_label: u32,
        ext: Vec<ExtHeader>,
    },
    Other {
        ethertype: u16,
    },
}

#[derive(Clone, Debug)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
        vtag: u32,
    },
    Icmp {
        typ: u8,
        code: u8,
        rest: u32,
    },
    Icmpv6 {
        typ: u8,
        code: u8,
        rest: u32,
    },
    /// Only the protocol number; the payload is the whole L4 content.
    Raw {
        proto: u8,
    },
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Packet {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    l3: L3,
    l4: Option<L4>,
    payload: Vec<u8>,
}

impl Packet {
    fn with_l3(l3: L3) -> Packet {
        Packet {
            eth_src: [0x02, 0, 0, 0, 0, 1],
            eth_dst: [0x02, 0, 0, 0, 0, 2],
            l3,
            l4: None,
            payload: Vec::new(),
        }
    }

    pub fn ipv4(src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Packet {
        Self::with_l3(L3::V4 {
            src: src.into(),
            dst: dst.into(),
            ttl: 64,
            tos: 0,
            id: 1,
            options: Vec::new(),
            dont_fragment: false,
            more_fragments: false,
            frag_offset: 0,
        })
    }

    pub fn ipv6(src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Packet {
        Self::with_l3(L3::V6 {
            src: src.into(),
            dst: dst.into(),
            hop_limit: 64,
            flow_label: 0,
            ext: Vec::new(),
        })
    }

    /// A non-IP frame of `ethertype` (ARP, ...); the payload follows the Ethernet header.
    pub fn ethernet(ethertype: u16) -> Packet {
        Self::with_l3(L3::Other { ethertype })
    }

    pub fn eth_src(mut self, mac: [u8; 6]) -> Self {
        self.eth_src = mac;
        self
    }

    pub fn eth_dst(mut self, mac: [u8; 6]) -> Self {
        self.eth_dst = mac;
        self
    }

    /// TCP with the SYN flag (change with [`Packet::tcp_flags`]).
    pub fn tcp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = Some(L4::Tcp {
            sport,
            dport,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
            window: 65535,
        });
        self
    }

    pub fn tcp_flags(mut self, new_flags: u8) -> Self {
        if let Some(L4::Tcp { flags, .. }) = &mut self.l4 {
            *flags = new_flags;
        }
        self
    }

    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = Some(L4::Udp { sport, dport });
        self
    }

    /// SCTP; without a payload an INIT chunk is added, otherwise the payload is the chunks.
    pub fn sctp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = Some(L4::Sctp {
            sport,
            dport,
            vtag: 0,
        });
        self
    }

    /// ICMP type/code (8/0 is an echo request); `rest` is the 4-byte rest of header.
    pub fn icmp(mut self, typ: u8, code: u8) -> Self {
        self.l4 = Some(L4::Icmp {
            typ,
            code,
            rest: 0x0001_0001,
        });
        self
    }

    /// ICMPv6 type/code (128/0 is an echo request).
    pub fn icmpv6(mut self, typ: u8, code: u8) -> Self {
        self.l4 = Some(L4::Icmpv6 {
            typ,
            code,
            rest: 0x0001_0001,
        });
        self
    }

    /// An upper-layer protocol the builder does not know; the payload is its content.
    pub fn l4_proto(mut self, proto: u8) -> Self {
        self.l4 = Some(L4::Raw { proto });
        self
    }

    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    pub fn ttl(mut self, value: u8) -> Self {
        match &mut self.l3 {
            L3::V4 { ttl, .. } => *ttl = value,
            L3::V6 { hop_limit, .. } => *hop_limit = value,
            L3::Other { .. } => {}
        }
        self
    }

    /// IPv4 options (padded with End-of-options to a multiple of 4 bytes, at most 40).
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        if let L3::V4 { options, .. } = &mut self.l3 {
            *options = opts.to_vec();
            while !options.len().is_multiple_of(4) {
                options.push(0);
            }
            options.truncate(40);
        }
        self
    }

    /// IPv4 fragment fields: offset in 8-byte units and the more-fragments flag.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        if let L3::V4 {
            frag_offset,
            more_fragments,
            ..
        } = &mut self.l3
        {
            *frag_offset = offset & 0x1fff;
            *more_fragments = more;
        }
        self
    }

    /// IPv4 identification (the datagram id fragments share; 1 unless set).
    pub fn ip_id(mut self, value: u16) -> Self {
        if let L3::V4 { id, .. } = &mut self.l3 {
            *id = value;
        }
        self
    }

    /// The datagram split into fragments as a router would: the upper-layer bytes (L4 header
    /// and payload, checksums over the whole datagram) cut into pieces of `chunk` bytes (rounded
    /// down to a multiple of 8, at least 8), in order. IPv4: each piece gets a copy of the header
    /// (options included) with identification `id` (low 16 bits), its offset and MF. IPv6: the
    /// configured extension headers stay in front as the unfragmentable part, followed by a
    /// fragment header with `id`. Non-IP frames come back whole.
    pub fn fragments(&self, id: u32, chunk: usize) -> Vec<Vec<u8>> {
        let chunk = (chunk / 8).max(1) * 8;
        let frame = self.build();
        let eth = &frame[..ETH_HLEN];
        let piece =
            |i: usize, body_len: usize| ((i * chunk / 8) as u16, (i + 1) * chunk < body_len);
        match &self.l3 {
            L3::Other { .. } => vec![frame],
            L3::V4 {
                options,
                dont_fragment,
                ..
            } => {
                let ihl = 20 + options.len();
                let header = &frame[ETH_HLEN..ETH_HLEN + ihl];
                let body = &frame[ETH_HLEN + ihl..];
                body.chunks(chunk)
                    .enumerate()
                    .map(|(i, part)| {
                        let (offset, more) = piece(i, body.len());
                        let mut ip = header.to_vec();
                        ip[2..4].copy_from_slice(&((ihl + part.len()) as u16).to_be_bytes());
                        ip[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                        let flags = (u16::from(*dont_fragment) << 14)
                            | (u16::from(more) << 13)
                            | (offset & 0x1fff);
                        ip[6..8].copy_from_slice(&flags.to_be_bytes());
                        ip[10..12].fill(0);
                        let c = inet_checksum(&[&ip]);
                        ip[10..12].copy_from_slice(&c.to_be_bytes());
                        [eth, &ip, part].concat()
                    })
                    .collect()
            }
            L3::V6 { ext, .. } => {
                let unfragmentable = 40 + ext.iter().map(ExtHeader::len).sum::<usize>();
                let header = &frame[ETH_HLEN..ETH_HLEN + unfragmentable];
                let body = &frame[ETH_HLEN + unfragmentable..];
                let proto = self.l4_proto_number();
                body.chunks(chunk)
                    .enumerate()
                    .map(|(i, part)| {
                        let (offset, more) = piece(i, body.len());
                        let mut ip = header.to_vec();
                        // The last header before the fragment header now points to it.
                        let next_at = match ext.last() {
                            None => 6,
                            Some(last) => unfragmentable - last.len(),
                        };
                        ip[next_at] = 44;
                        let payload = (unfragmentable - 40 + 8 + part.len()) as u16;
                        ip[4..6].copy_from_slice(&payload.to_be_bytes());
                        let frag = ExtHeader::Fragment { offset, more, id }.encode(proto);
                        [eth, &ip, &frag, part].concat()
                    })
                    .collect()
            }
        }
    }

    pub fn dont_fragment(mut self) -> Self {
        if let L3::V4 { dont_fragment, .. } = &mut self.l3 {
            *dont_fragment = true;
        }
        self
    }

    /// Appends an IPv6 extension header (in order).
    pub fn ext_header(mut self, h: ExtHeader) -> Self {
        if let L3::V6 { ext, .. } = &mut self.l3 {
            ext.push(h);
        }
        self
    }

    fn l4_proto_number(&self) -> u8 {
        match &self.l4 {
            Some(L4::Tcp { .. }) => IPPROTO_TCP,
            Some(L4::Udp { .. }) => IPPROTO_UDP,
            Some(L4::Sctp { .. }) => IPPROTO_SCTP,
            Some(L4::Icmp { .. }) => IPPROTO_ICMP,
            Some(L4::Icmpv6 { .. }) => IPPROTO_ICMPV6,
            Some(L4::Raw { proto }) => *proto,
            // "No next header" for IPv6; IPv4 has no equivalent, 255 is reserved.
            None => 59,
        }
    }

    /// The upper-layer bytes with a zero checksum, and where that checksum goes.
    fn l4_bytes(&self) -> (Vec<u8>, Option<usize>) {
        let mut out = Vec::new();
        let csum_at = match &self.l4 {
            Some(L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
            }) => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                out.extend_from_slice(&[5 << 4, *flags]);
                out.extend_from_slice(&window.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
                Some(16)
            }
            Some(L4::Udp { sport, dport }) => {
                let len = (8 + self.payload.len()) as u16;
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                Some(6)
            }
            Some(L4::Sctp { sport, dport, vtag }) => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&vtag.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
                if self.payload.is_empty() {
                    // INIT: type 1, flags 0, length 20, initiate tag, a_rwnd, streams, TSN.
                    out.extend_from_slice(&[
                        1, 0, 0, 20, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1,
                    ]);
                }
                None
            }
            Some(L4::Icmp { typ, code, rest }) | Some(L4::Icmpv6 { typ, code, rest }) => {
                out.extend_from_slice(&[*typ, *code, 0, 0]);
                out.extend_from_slice(&rest.to_be_bytes());
                Some(2)
            }
            Some(L4::Raw { .. }) | None => None,
        };
        out.extend_from_slice(&self.payload);
        (out, csum_at)
    }

    /// The frame bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        let (mut l4, csum_at) = self.l4_bytes();
        let proto = self.l4_proto_number();
        match &self.l3 {
            L3::Other { ethertype } => {
                frame.extend_from_slice(&ethertype.to_be_bytes());
                frame.extend_from_slice(&self.payload);
                return frame;
            }
            L3::V4 {
                src,
                dst,
                ttl,
                tos,
                id,
                options,
                dont_fragment,
                more_fragments,
                frag_offset,
            } => {
                frame.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let ihl = 5 + options.len() / 4;
                let total = (ihl * 4 + l4.len()) as u16;
                let flags_frag = (u16::from(*dont_fragment) << 14)
                    | (u16::from(*more_fragments) << 13)
                    | frag_offset;
                let mut ip = vec![0x40 | ihl as u8, *tos];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&id.to_be_bytes());
                ip.extend_from_slice(&flags_frag.to_be_bytes());
                ip.extend_from_slice(&[*ttl, proto, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(options);
                let c = inet_checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&[0, proto]);
                pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                // ICMPv4 has no pseudo-header.
                let with_pseudo = !matches!(self.l4, Some(L4::Icmp { .. }));
                self.fill_l4_checksum(&mut l4, csum_at, if with_pseudo { &pseudo } else { &[] });
                frame.extend_from_slice(&ip);
            }
            L3::V6 {
                src,
                dst,
                hop_limit,
                flow_label,
                ext,
            } => {
                frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let mut headers = Vec::new();
                for (i, h) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(proto, ExtHeader::number);
                    headers.extend_from_slice(&h.encode(next));
                }
                let first = ext.first().map_or(proto, ExtHeader::number);
                let vtf = (6u32 << 28) | (flow_label & 0xf_ffff);
                let mut ip = vtf.to_be_bytes().to_vec();
                ip.extend_from_slice(&((headers.len() + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&[first, *hop_limit]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, proto]);
                self.fill_l4_checksum(&mut l4, csum_at, &pseudo);
                frame.extend_from_slice(&ip);
                frame.extend_from_slice(&headers);
            }
        }
        frame.extend_from_slice(&l4);
        frame
    }

    fn fill_l4_checksum(&self, l4: &mut [u8], csum_at: Option<usize>, pseudo: &[u8]) {
        if let Some(L4::Sctp { .. }) = self.l4 {
            let c = crc32c(l4);
            // SCTP carries the CRC32c in little-endian byte order (as Linux's sctp_compute_cksum).
            l4[8..12].copy_from_slice(&c.to_le_bytes());
            return;
        }
        if let Some(at) = csum_at {
            let mut c = inet_checksum(&[pseudo, l4]);
            if c == 0 && matches!(self.l4, Some(L4::Udp { .. })) {
                // A computed UDP checksum of zero is sent as all ones (zero means "none").
                c = 0xffff;
            }
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as SCTP uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
            .tcp(1234, 80)
            .build();
        assert_eq!(inet_checksum(&[&p[14..34]]), 0);
        assert_eq!(p.len(), 14 + 20 + 20);
    }

    #[test]
    fn tcp_and_udp_checksums_verify_with_pseudo_header() {
        for p in [
            Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
                .udp(53, 5353)
                .payload(b"abc")
                .build(),
            Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
                .tcp(53, 5353)
                .payload(b"abcd")
                .build(),
        ] {
            let l4 = &p[34..];
            let mut pseudo = p[26..34].to_vec();
            pseudo.extend_from_slice(&[0, p[23]]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            assert_eq!(inet_checksum(&[&pseudo, l4]), 0);
        }
    }

    #[test]
    fn ipv6_extension_headers_chain_to_upper_layer() {
        let p = Packet::ipv6(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
        )
        .ext_header(ExtHeader::HopByHop)
        .ext_header(ExtHeader::Fragment {
            offset: 0,
            more: true,
            id: 7,
        })
        .udp(1, 2)
        .build();
        assert_eq!(p[14 + 6], 0, "first next header is hop-by-hop");
        assert_eq!(p[54], 44, "hop-by-hop points to fragment");
        assert_eq!(p[62], IPPROTO_UDP);
        assert_eq!(u16::from_be_bytes([p[18], p[19]]), 8 + 8 + 8);
    }

    #[test]
    fn sctp_checksum_is_crc32c_of_packet_with_zero_field() {
        let p = Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
            .sctp(5000, 6000)
            .build();
        let mut l4 = p[34..].to_vec();
        let stored = u32::from_le_bytes(l4[8..12].try_into().unwrap());
        l4[8..12].fill(0);
        assert_eq!(crc32c(&l4), stored);
    }

    #[test]
    fn fragments_reassemble_to_the_datagram() {
        let payload: Vec<u8> = (0..40u8).collect();
        let v4 = Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
            .ipv4_options(&[1, 1, 1, 1])
            .udp(1000, 53)
            .payload(&payload);
        let whole = v4.build();
        let parts = v4.fragments(0x1234, 20);
        assert_eq!(parts.len(), 3, "48 bytes of UDP in 16-byte pieces");
        let mut body = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(
                inet_checksum(&[&p[14..38]]),
                0,
                "header checksum of piece {i}"
            );
            assert_eq!(u16::from_be_bytes([p[18], p[19]]), 0x1234);
            let field = u16::from_be_bytes([p[20], p[21]]);
            assert_eq!(field & 0x1fff, (i * 2) as u16, "offset in 8-byte units");
            assert_eq!(field & 0x2000 != 0, i + 1 < parts.len(), "MF");
            assert_eq!(
                usize::from(u16::from_be_bytes([p[16], p[17]])),
                p.len() - 14
            );
            body.extend_from_slice(&p[38..]);
        }
        assert_eq!(body, whole[38..]);

        let v6 = Packet::ipv6(
            "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
        )
        .ext_header(ExtHeader::HopByHop)
        .tcp(1000, 80)
        .payload(&payload);
        let whole = v6.build();
        let parts = v6.fragments(7, 16);
        assert_eq!(parts.len(), 4);
        let mut body = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p[20], 0, "hop-by-hop first");
            assert_eq!(p[54], 44, "then the fragment header");
            assert_eq!(p[62], IPPROTO_TCP, "which points to TCP");
            let field = u16::from_be_bytes([p[64], p[65]]);
            assert_eq!(usize::from(field >> 3), i * 2);
            assert_eq!(field & 1 != 0, i + 1 < parts.len());
            assert_eq!(u32::from_be_bytes([p[66], p[67], p[68], p[69]]), 7);
            assert_eq!(
                usize::from(u16::from_be_bytes([p[18], p[19]])),
                p.len() - 54
            );
            body.extend_from_slice(&p[70..]);
        }
        assert_eq!(body, whole[62..]);
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let p = Packet::ipv4([192, 0, 2, 1], [198, 51, 100, 2])
            .ipv4_options(&[1, 1, 1])
            .fragment(3, true)
            .udp(1, 2)
            .build();
        assert_eq!(p[14] & 0x0f, 6);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), (1 << 13) | 3);
        assert_eq!(inet_checksum(&[&p[14..38]]), 0);
    }
}
