//! Flow events: for random policies and packets, every new-flow verdict and every drop writes one
//! ring-buffer record whose verdict, drop reason (Cilium codes 133/181), deciding rule id,
//! identities, addresses and ports agree with the reference evaluator and the packet. Programs run
//! through aya (`ciliumc_runtime::testrun`), the loader the product uses for `ciliumc trace`.

mod policygen;

use std::net::IpAddr;

use ciliumc_compiler::lower::{self, maps};
use ciliumc_ir::evaluator::Verdict;
use ciliumc_ir::policy::Direction;
use ciliumc_runtime::testrun::LoadedPolicyObject;
use ciliumc_tests::kernel_or_skip;
use policygen::*;

fn object(case: &Case) -> Vec<u8> {
    private_object(&case.policy, case.direction)
}

#[test]
fn every_verdict_on_a_new_flow_writes_a_matching_event() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let mut rng = Rng(0x0e7e_0e7e);
    let mut checked = 0;
    for case_no in 0..120 {
        let case = random_case(&mut rng);
        let ipcache: Vec<(Vec<u8>, Vec<u8>)> = case
            .ipcache
            .0
            .iter()
            .map(|(c, id)| (maps::ipcache_key(c), maps::ipcache_value(*id)))
            .collect();
        let mut obj = LoadedPolicyObject::load(&object(&case), &ipcache).expect("load through aya");
        let (program, _) = lower::program_for(case.direction);
        let peers = candidate_peers(&case);
        let ports = candidate_ports(&case.policy);
        let mut sent = 0;
        while sent < 40 {
            let Some((peer, proto, port, packet)) = random_packet(&mut rng, &case, &peers, &ports)
            else {
                continue;
            };
            sent += 1;
            let run = obj.run(program, &packet).expect("test run");
            let want = expected_verdict(&case, peer, proto, port);
            let ctx = format!(
                "case {case_no}: {} {proto} {peer} port {port}: {want:?}",
                case.direction
            );
            assert_eq!(run.events.len(), 1, "{ctx}: {} events", run.events.len());
            let ev = &run.events[0];
            match &want {
                Verdict::Allow { rules, .. } => {
                    assert_eq!(run.retval, 0, "{ctx}");
                    assert!(
                        !ev.dropped && ev.kind == 5 && ev.reason == 0,
                        "{ctx}: {ev:?}"
                    );
                    if rules.is_empty() {
                        assert_eq!(ev.rule_id, 0, "{ctx}: implicit allow names no rule");
                    } else {
                        assert!(
                            rules.iter().any(|r| r.0 == ev.rule_id),
                            "{ctx}: event rule {}",
                            ev.rule_id
                        );
                    }
                }
                Verdict::Deny { reason, rules } => {
                    assert_eq!(run.retval, 2, "{ctx}");
                    assert!(ev.dropped && ev.kind == 1, "{ctx}: {ev:?}");
                    assert_eq!(ev.reason, reason.code(), "{ctx}: {ev:?}");
                    if rules.is_empty() {
                        assert_eq!(ev.rule_id, 0, "{ctx}");
                    } else {
                        assert!(
                            rules.iter().any(|r| r.0 == ev.rule_id),
                            "{ctx}: event rule {}",
                            ev.rule_id
                        );
                    }
                }
            }
            assert_eq!(
                ev.direction,
                if case.direction == Direction::Ingress {
                    1
                } else {
                    2
                },
                "{ctx}"
            );
            assert_eq!(ev.local_identity, LOCAL_IDENTITY, "{ctx}");
            assert_eq!(ev.remote_identity, case.ipcache.lookup(peer), "{ctx}");
            assert_eq!(ev.peer_addr, Some(peer), "{ctx}");
            let endpoint: IpAddr = if peer.is_ipv4() {
                ENDPOINT_V4.into()
            } else {
                ENDPOINT_V6.into()
            };
            assert_eq!(ev.endpoint_addr, Some(endpoint), "{ctx}");
            assert_eq!(ev.policy_port, port, "{ctx}");
            checked += 1;
        }
    }
    assert!(checked >= 4000);
}
