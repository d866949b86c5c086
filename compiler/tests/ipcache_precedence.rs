//! A prefix has one identity in the datapath's ipcache: when a rule's CIDR is an endpoint's own
//! address (or a node's), the endpoint's (node's) identity wins, as in Cilium's ipcache, and every
//! ipcache map the manifest fills (trie, exact-match maps, bucket arrays) agrees with
//! `compile::ipcache_identity`, which `ciliumc trace` and `connlist` use.

use std::net::IpAddr;

use ciliumc_compiler::compile;
use ciliumc_compiler::frontend::{self, LoadOptions};
use ciliumc_compiler::lower::ipcache::bucket_index;
use ciliumc_compiler::lower::maps;
use ciliumc_compiler::resolve::{self, ResolveOptions};
use ciliumc_ir::cidr::Cidr;

const CLUSTER: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: default
---
apiVersion: v1
kind: Node
metadata:
  name: node-1
status:
  addresses:
  - type: InternalIP
    address: 198.51.100.1
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels:
    app: web
spec:
  nodeName: node-1
  containers:
  - name: web
    image: web
status:
  podIP: 192.0.2.21
  podIPs:
  - ip: 192.0.2.21
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: cidrs
  namespace: default
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromCIDR:
    - 192.0.2.21/32
    - 198.51.100.1/32
    - 203.0.113.0/24
"#;

#[test]
fn an_endpoints_or_nodes_identity_wins_over_a_cidr_identity_of_its_address() {
    let dir =
        std::env::temp_dir().join(format!("ciliumc-ipcache-precedence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, CLUSTER).expect("write");
    let loaded = frontend::load_with(std::slice::from_ref(&file), &LoadOptions::default());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    let cluster = resolve::resolve(&loaded.objects, &ResolveOptions::default()).expect("resolve");
    let prefixes = compile::ipcache_prefixes(&cluster);
    for addr in ["192.0.2.21", "198.51.100.1"] {
        let ip: IpAddr = addr.parse().expect("ip");
        let host = Cidr::host(ip);
        let ids: Vec<u32> = prefixes
            .iter()
            .filter(|(c, _)| *c == host)
            .map(|(_, id)| *id)
            .collect();
        let want = compile::ipcache_identity(&cluster, ip).0;
        assert_eq!(ids, vec![want], "{addr}: one identity, the cluster's");
        assert!(want < 1 << 24, "{addr}: not a CIDR identity ({want})");
        // The exact-match map and the bucket hold that identity, and nothing else for it.
        let entries = maps::ipcache_map_entries(&prefixes);
        let of = |name: &str| {
            entries
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
                .unwrap_or_default()
        };
        let IpAddr::V4(v4) = ip else { continue };
        let exact: Vec<_> = of(maps::IPCACHE4)
            .into_iter()
            .filter(|(k, _)| k[..] == v4.octets())
            .collect();
        assert_eq!(
            exact,
            vec![(v4.octets().to_vec(), maps::ipcache_value(want))]
        );
        let index = bucket_index(&v4.octets(), maps::IPC4_BUCKET_BITS);
        let bucket = of(maps::IPCACHE4_BUCKETS)
            .into_iter()
            .find(|(k, _)| k[..] == index.to_le_bytes())
            .map(|(_, v)| v)
            .expect("its bucket");
        let way = maps::BUCKET_HEADER_BYTES as usize;
        assert_eq!(&bucket[way..way + 4], &v4.octets());
        assert_eq!(&bucket[way + 4..way + 8], &want.to_le_bytes());
    }
    // The /24 keeps its CIDR identity, in the trie.
    let range: Cidr = "203.0.113.0/24".parse().expect("cidr");
    assert!(prefixes.iter().any(|(c, id)| *c == range && *id >= 1 << 24));
}
