//! Name tables: Cilium entities → peer identities, ICMP type names → numbers.
//!
//! In: an [`Entity`] or an ICMP `type` as written. Out: the reserved identities (and world
//! prefixes) the entity stands for (`pkg/policy/api/entity.go`), or the ICMP type number
//! (`pkg/policy/api/icmp.go`).

use ciliumc_ir::{Cidr, CidrRule, NumericIdentity};

use super::policies::PeerSpec;
use crate::frontend::model::{Entity, IntOrString};

pub fn entity_peers(entity: Entity, peers: &mut PeerSpec) {
    use NumericIdentity as N;
    let v4 = || CidrRule::new(Cidr::new([0, 0, 0, 0].into(), 0).expect("/0 is valid"));
    let v6 = || {
        CidrRule::new(Cidr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0).expect("/0 is valid"))
    };
    match entity {
        Entity::All => peers.all = true,
        Entity::World => {
            peers
                .reserved
                .extend([N::WORLD, N::WORLD_IPV4, N::WORLD_IPV6]);
            peers.cidrs.extend([v4(), v6()]);
        }
        Entity::WorldIpv4 => {
            peers.reserved.insert(N::WORLD_IPV4);
            peers.cidrs.push(v4());
        }
        Entity::WorldIpv6 => {
            peers.reserved.insert(N::WORLD_IPV6);
            peers.cidrs.push(v6());
        }
        Entity::Cluster => {
            peers.cluster = true;
            peers.reserved.extend([
                N::HOST,
                N::UNMANAGED,
                N::HEALTH,
                N::INIT,
                N::REMOTE_NODE,
                N::KUBE_APISERVER,
                N::INGRESS,
            ]);
        }
        Entity::Host => {
            peers.reserved.insert(N::HOST);
        }
        Entity::RemoteNode => {
            peers.reserved.extend([N::REMOTE_NODE, N::KUBE_APISERVER]);
        }
        Entity::KubeApiserver => {
            peers.reserved.insert(N::KUBE_APISERVER);
        }
        Entity::Init => {
            peers.reserved.insert(N::INIT);
        }
        Entity::Health => {
            peers.reserved.insert(N::HEALTH);
        }
        Entity::Unmanaged => {
            peers.reserved.insert(N::UNMANAGED);
        }
        Entity::Ingress => {
            peers.reserved.insert(N::INGRESS);
        }
        Entity::None => {}
    }
}

/// ICMP type names Cilium accepts (`pkg/policy/api/icmp.go`), per family.
pub fn icmp_type(family_v6: bool, t: &IntOrString) -> Option<u8> {
    match t {
        IntOrString::Int(n) => u8::try_from(*n).ok(),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u8>() {
                return Some(n);
            }
            let v4: &[(&str, u8)] = &[
                ("EchoReply", 0),
                ("DestinationUnreachable", 3),
                ("Redirect", 5),
                ("Echo", 8),
                ("EchoRequest", 8),
                ("RouterAdvertisement", 9),
                ("RouterSelection", 10),
                ("TimeExceeded", 11),
                ("ParameterProblem", 12),
                ("Timestamp", 13),
                ("TimestampReply", 14),
                ("Photuris", 40),
                ("ExtendedEchoRequest", 42),
                ("ExtendedEchoReply", 43),
            ];
            let v6: &[(&str, u8)] = &[
                ("DestinationUnreachable", 1),
                ("PacketTooBig", 2),
                ("TimeExceeded", 3),
                ("ParameterProblem", 4),
                ("EchoRequest", 128),
                ("EchoReply", 129),
                ("MulticastListenerQuery", 130),
                ("MulticastListenerReport", 131),
                ("MulticastListenerDone", 132),
                ("RouterSolicitation", 133),
                ("RouterAdvertisement", 134),
                ("NeighborSolicitation", 135),
                ("NeighborAdvertisement", 136),
                ("RedirectMessage", 137),
                ("RouterRenumbering", 138),
                ("ICMPNodeInformationQuery", 139),
                ("ICMPNodeInformationResponse", 140),
                ("InverseNeighborDiscoverySolicitation", 141),
                ("InverseNeighborDiscoveryAdvertisement", 142),
                ("HomeAgentAddressDiscoveryRequest", 144),
                ("HomeAgentAddressDiscoveryReply", 145),
                ("MobilePrefixSolicitation", 146),
                ("MobilePrefixAdvertisement", 147),
                ("DuplicateAddressRequestCodeSuffix", 157),
                ("DuplicateAddressConfirmationCodeSuffix", 158),
                ("ExtendedEchoRequest", 160),
                ("ExtendedEchoReply", 161),
            ];
            let table = if family_v6 { v6 } else { v4 };
            table.iter().find(|(n, _)| n == s).map(|(_, v)| *v)
        }
    }
}
