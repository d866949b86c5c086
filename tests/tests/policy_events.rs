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

/// The reader (`ciliumc_runtime::event_ring`) and the writer (the compiler's `lower::events`) agree
/// on the rings' layout, and the declared map is whole rings of such slots, mmap-able.
#[test]
fn event_ring_layout_is_the_same_for_writer_and_reader() {
    use ciliumc_runtime::event_ring;
    assert_eq!(maps::EVENTS, event_ring::EVENTS);
    assert_eq!(
        u64::from(maps::EVENT_RING_RECORDS),
        event_ring::RING_RECORDS
    );
    assert_eq!(u64::from(maps::EVENT_RING_STRIDE), event_ring::RING_STRIDE);
    assert_eq!(maps::EVENT_SLOT_BYTES as usize, event_ring::SLOT_BYTES);
    let defs = maps::shared_map_defs();
    let events = defs
        .iter()
        .find(|m| m.name == maps::EVENTS)
        .expect("the events map is declared");
    assert_eq!(events.value_size() as usize, event_ring::SLOT_BYTES);
    assert_eq!(u64::from(events.max_entries) % event_ring::RING_STRIDE, 0);
    assert_eq!(
        events.map_flags & ciliumc_targets::elf::BPF_F_MMAPABLE,
        ciliumc_targets::elf::BPF_F_MMAPABLE
    );
}

fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Events carry CLOCK_MONOTONIC_COARSE although each CPU reads that clock only once per tick
/// (cached in its ring header): a record's time lies between the clock before and after its run,
/// give or take the tick in which the kernel updates jiffies and the clock one after the other,
/// and the cached time moves on with the ticks.
#[test]
fn event_timestamps_follow_the_coarse_clock_across_ticks() {
    let Some(_kernel) = kernel_or_skip!() else {
        return;
    };
    let policy = ciliumc_ir::policy::DirectionPolicy::enforced(Direction::Ingress, vec![]);
    let mut obj =
        LoadedPolicyObject::load(&private_object(&policy, Direction::Ingress), &[]).expect("load");
    let (program, _) = lower::program_for(Direction::Ingress);
    let packet = ciliumc_tests::Packet::ipv4([198, 51, 100, 7], [192, 0, 2, 10])
        .udp(40000, 53)
        .build();
    // One tick is at most 10 ms (HZ >= 100).
    const TICK_NS: u64 = 10_000_000;
    let mut stamps = Vec::new();
    for _ in 0..4 {
        let before = monotonic_coarse_ns();
        let run = obj.run(program, &packet).expect("test run");
        let after = monotonic_coarse_ns();
        assert_eq!(run.retval, 2, "default deny drops");
        assert_eq!(run.events.len(), 1, "{:?}", run.events);
        let at = run.events[0].timestamp_ns;
        assert!(
            at + TICK_NS >= before && at <= after,
            "event at {at}, clock {before}..{after}"
        );
        stamps.push(at);
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert!(
        stamps.windows(2).all(|w| w[1] > w[0]),
        "the cached clock must move with the ticks: {stamps:?}"
    );
}
